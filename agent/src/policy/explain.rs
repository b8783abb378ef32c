//! `interlock policy explain`: the decision for a described request, and
//! each rule's part in it.

use std::io::Write;

use std::path::PathBuf;

use super::{Action, PolicyError, Request, StatementClass, Subject, load};
use crate::identity::ExeTrust;

/// A statement as the PostgreSQL proxy would see it: its text with secrets
/// redacted, its classes and why it is opaque, if it is. `policy explain`
/// gets it from a classifier function, so policy does not depend on the
/// protocol that classifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifiedSql {
    /// The statement text as rules see it (password literals redacted).
    pub text: String,
    /// The classes of every statement of it.
    pub classes: Vec<StatementClass>,
    /// Why it is `opaque`, when it is.
    pub opaque: Option<String>,
}

/// Classifies one SQL text for `policy explain` (given by the caller: the
/// PostgreSQL proxy's classifier in the CLI).
pub type Classifier = fn(&str) -> ClassifiedSql;

/// A described request for `interlock policy explain`.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// Policy file.
    #[arg(long, default_value = "/etc/interlock/policy.yaml")]
    pub policy: PathBuf,
    /// Target name.
    #[arg(long)]
    pub target: String,
    /// Requester's uid.
    #[arg(long, default_value_t = 0)]
    pub uid: u32,
    /// Requester's user name.
    #[arg(long)]
    pub user: Option<String>,
    /// Requester's executable path.
    #[arg(long)]
    pub exe: Option<String>,
    /// Requester's command line (one string, split on spaces).
    #[arg(long)]
    pub argv: Option<String>,
    /// An ancestor's executable path (repeatable).
    #[arg(long = "ancestor-exe")]
    pub ancestor_exes: Vec<String>,
    /// Requester's cgroup-v2 path.
    #[arg(long)]
    pub cgroup: Option<String>,
    /// A CI variable of the job root's environment, NAME=VALUE (repeatable).
    #[arg(long = "ci", value_parser = key_value)]
    pub ci: Vec<(String, String)>,
    /// The requester has no CI context (no trusted runner), for this reason:
    /// `ci:` conditions are unknown.
    #[arg(long, conflicts_with = "ci")]
    pub no_ci_context: Option<String>,
    /// Explain as a flow whose identity fact this is could not be established
    /// (repeatable; e.g. `cgroup` for a process that exited before the daemon
    /// looked it up).
    #[arg(long, value_enum)]
    pub unknown: Vec<super::Fact>,
    /// A JSON file with a job token's claims (its payload): explain as if the
    /// session presented a verified token carrying them. The issuer is the
    /// one whose URL its `iss` names.
    #[arg(long, value_name = "FILE")]
    pub oidc_claims: Option<PathBuf>,
    /// SSH: the user the client asks for (`ssh NAME@host`); interlock logs
    /// in upstream as the target's `upstream.user`, or as this user when
    /// `upstream.users` lists it (otherwise the login is refused).
    #[arg(long, value_name = "NAME")]
    pub ssh_user: Option<String>,
    /// A SQL statement (classified as the PostgreSQL proxy would).
    #[arg(long, conflicts_with = "command")]
    pub sql: Option<String>,
    /// Statement classes, instead of or besides classifying --sql (repeatable).
    #[arg(long = "class", value_enum)]
    pub classes: Vec<super::StatementClass>,
    /// An SSH command (or sftp path).
    #[arg(long)]
    pub command: Option<String>,
    /// The SSH request kind for --command.
    #[arg(long, value_enum, default_value = "exec")]
    pub kind: super::CommandKind,
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE"))
}

/// The pseudo-rule named when a login is refused because the target's
/// `upstream.user`/`upstream.users` does not allow the user asked for.
pub const LOGIN_RULE: &str = "upstream.users";

/// Errors of `policy explain` besides an invalid policy.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("target `{0}` is not in the policy (its targets: {1})")]
    NoTarget(String, String),
    #[error("cannot write the explanation: {0}")]
    Write(#[from] std::io::Error),
    #[error("--oidc-claims {path}: {reason}")]
    Claims { path: String, reason: String },
}

/// The identity a verified token with the claims in `path` would give.
fn claims_identity(
    policy: &super::Policy,
    path: &std::path::Path,
) -> Result<crate::oidc::JobIdentity, ExplainError> {
    let err = |reason: String| ExplainError::Claims {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let claims: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| err(format!("not a JSON object: {e}")))?;
    policy
        .verifier()
        .explain_identity(claims)
        .map_err(|e| err(e.to_string()))
}

/// Prints the explanation; true when the request would be allowed.
///
/// # Errors
/// An invalid policy, an unknown target, or a failed write.
pub fn explain_command(
    args: &ExplainArgs,
    classify: Classifier,
    out: &mut impl Write,
) -> Result<bool, ExplainError> {
    let policy = load(&args.policy)?;
    let target = policy.target_named(&args.target).ok_or_else(|| {
        ExplainError::NoTarget(
            args.target.clone(),
            policy
                .targets()
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        )
    })?;
    let subject = Subject {
        uid: args.uid,
        user: args.user.clone(),
        exe: args.exe.clone(),
        // Explaining names executables by path only: they are taken to be
        // the trusted files at those paths.
        exe_trust: ExeTrust::Trusted,
        argv: args
            .argv
            .as_deref()
            .map(|a| a.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
        ancestor_exes: args.ancestor_exes.clone(),
        ancestor_trust: vec![ExeTrust::Trusted; args.ancestor_exes.len()],
        cgroup: args.cgroup.clone(),
        ci: args.ci.iter().cloned().collect(),
        ci_unavailable: args.no_ci_context.clone(),
        unknown: args
            .unknown
            .iter()
            .map(|f| (*f, "as asked (--unknown)".to_string()))
            .collect(),
        job: match &args.oidc_claims {
            Some(path) => Some(std::sync::Arc::new(claims_identity(&policy, path)?)),
            None => None,
        },
        ssh_login: args.ssh_user.as_ref().map(|requested| super::SshLogin {
            requested: requested.clone(),
            upstream: target.ssh_login_user(requested).ok(),
        }),
    };
    let request = if let Some(sql) = &args.sql {
        let mut classes = args.classes.clone();
        // Rules see the text as sessions give it to them: secrets redacted.
        let found = classify(sql);
        classes.extend(found.classes);
        classes.sort();
        classes.dedup();
        Request::Statement {
            text: found.text,
            classes,
            opaque: found.opaque,
        }
    } else if !args.classes.is_empty() {
        Request::Statement {
            text: String::new(),
            classes: args.classes.clone(),
            opaque: None,
        }
    } else if let Some(cmd) = &args.command {
        Request::Command {
            kind: args.kind,
            text: cmd.clone(),
        }
    } else {
        Request::Session
    };
    // The daemon refuses a login the target does not allow before any rule.
    if let Some(login) = &subject.ssh_login
        && let Err(why) = target.ssh_login_user(&login.requested)
    {
        if args.json {
            let refused = serde_json::json!({
                "decision": {"action": "block", "rule": LOGIN_RULE, "message": why},
                "steps": [],
            });
            writeln!(out, "{refused:#}")?;
        } else {
            writeln!(out, "target {} ({}): {why}", target.name, target.protocol)?;
            writeln!(out, "decision: block (\"{why}\"), by {LOGIN_RULE}")?;
        }
        return Ok(false);
    }
    let ex = policy.explain(target, &subject, &request);
    let allowed = matches!(ex.decision.action, Action::Allow);
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&ex).unwrap_or_default()
        )?;
        return Ok(allowed);
    }
    let what = match &request {
        Request::Session => "a new session".to_string(),
        Request::Statement {
            text,
            classes,
            opaque,
        } => match opaque {
            Some(why) => format!("statement `{text}` {classes:?} (classified opaque: {why})"),
            None => format!("statement `{text}` {classes:?}"),
        },
        Request::Command { kind, text } => format!("{kind:?} `{text}`"),
    };
    writeln!(
        out,
        "target {} ({}), {} by uid {}:",
        target.name, target.protocol, what, subject.uid
    )?;
    if let Some(login) = &subject.ssh_login {
        writeln!(
            out,
            "  SSH login asked as `{}`, logs in upstream as `{}`",
            login.requested,
            login.upstream.as_deref().unwrap_or_default()
        )?;
    }
    if let Some(job) = &subject.job {
        writeln!(
            out,
            "  job token from issuer {} ({}), subject `{}`, groups {:?}",
            job.issuer, job.iss, job.sub, job.groups
        )?;
    }
    for s in &ex.steps {
        writeln!(
            out,
            "  {:<8} rule {:<24} {}",
            if s.applies { "applies" } else { "skipped" },
            s.rule,
            s.why
        )?;
    }
    let by = match (&ex.decision.rule, &request) {
        (Some(r), _) => format!("rule `{r}`"),
        (None, Request::Session) => "the target's default".into(),
        (None, Request::Command { kind, .. }) if kind.is_forwarding() => {
            "the default for forwarding (denied unless a rule allows it)".into()
        }
        (None, _) => "the default (allowed: its session was)".into(),
    };
    let verdict = match &ex.decision.action {
        Action::Allow => "allow".to_string(),
        Action::Block { message } => format!("block (\"{message}\")"),
        Action::RequireApproval(a) => {
            let mut by = format!("{:?} {:?}", a.approvers.users, a.approvers.groups);
            if a.approvers.names_web() {
                by.push_str(&format!(
                    " (on the approvals page: groups {:?}, e-mails {:?}, subjects {:?})",
                    a.approvers.oidc_groups, a.approvers.oidc_emails, a.approvers.oidc_subjects
                ));
            }
            format!(
                "require approval by {by}, timeout {}",
                humantime::format_duration(a.timeout)
            )
        }
    };
    writeln!(out, "decision: {verdict}, by {by}")?;
    if !ex.decision.mask.is_empty() {
        let rules: Vec<&str> = ex.decision.mask.iter().map(|m| m.rule.as_str()).collect();
        writeln!(out, "masking by: {}", rules.join(", "))?;
    }
    let recording = match (ex.decision.record, &request) {
        (Some(super::RecordLevel::Full), _) | (None, Request::Session) => "full",
        (Some(super::RecordLevel::Metadata), _) => "metadata",
        (None, _) => "the session's level",
    };
    writeln!(out, "recording: {recording}")?;
    Ok(allowed)
}
