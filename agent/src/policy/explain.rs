//! `interlock policy explain`: the decision for a described request, and
//! each rule's part in it.

use std::io::Write;

use super::{Action, PolicyError, Subject, load};
use crate::{cli::ExplainArgs, gate::Request, identity::ExeTrust};

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
pub fn explain_command(args: &ExplainArgs, out: &mut impl Write) -> Result<bool, ExplainError> {
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
        let (found, opaque) = crate::classify_sql(sql);
        classes.extend(found);
        classes.sort();
        classes.dedup();
        // Rules see the text as sessions give it to them: secrets redacted.
        Request::Statement {
            text: crate::postgres::classify::redact(sql).into_owned(),
            classes,
            opaque,
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
