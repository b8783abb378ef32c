//! Evaluation: which rule decides a request, and why (policies/README.md,
//! "How rules are evaluated", is the contract this file implements).
//!
//! Every rule has a scope: `statement` if it has statement conditions
//! (`statement`, `sql`) or is a `mask` rule, `command` if it has SSH
//! conditions (`kind`, `command`), `session` otherwise. A request is judged
//! by the rules of its scope whose conditions all hold. Among deciding rules
//! the most restrictive action wins (block > require_approval > allow); ties
//! go to the rule written first. No deciding rule: a session gets the
//! target's `default`, a forwarding request is blocked (forwarding is
//! denied unless a rule allows it), any other statement or command is
//! allowed (its session was).
//!
//! A statement interlock cannot read (`opaque`, `unparseable`) is judged as
//! if it had every class the rules name: a rule's `statement` list matches
//! it whatever it lists, so the strictest applying rule decides. That
//! stops once a rule that applies to the request names the class itself
//! (`statement: [opaque]`): the policy has said what it wants for such
//! statements, and they are judged by their own classes.
//!
//! An identity fact interlock could not establish (`Subject::unknown`, no
//! CI context) is neither a match nor a miss: a rule whose other
//! conditions hold applies when it restricts (block, require_approval,
//! mask, `record: full`) and does not when it allows (allow, `record:
//! metadata`). So a process that exits before the daemon looks it up
//! cannot slip past a block rule on its cgroup.
//!
//! The recording level can only be raised by what the job writes: a rule
//! keyed on the request itself (`statement`, `sql`, `kind`, `command`,
//! `program`, `options`) may set `full`, never `metadata` (a comment in a
//! statement would otherwise choose to leave its text out of the record).

use std::sync::Arc;

use serde::Serialize;

use super::subject::{Fact, Subject};
use super::{MaskRule, Request};
use super::{
    Policy, Target,
    rule::{ActionKind, ApprovalSpec, Conditions, RecordLevel, Rule, UserRef},
};
use crate::identity::ExeTrust;

/// What the policy says about a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Allow,
    Block { message: String },
    RequireApproval(ApprovalSpec),
}

/// A decision with the rule that made it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    #[serde(flatten)]
    pub action: Action,
    /// The deciding rule; `None` when the target's default decided.
    pub rule: Option<String>,
    /// Masking that applies to the request's results.
    pub mask: Vec<MaskRule>,
    /// The recording level the rules set; `None`: the session's level
    /// (for a session itself, `full`).
    pub record: Option<RecordLevel>,
}

/// One rule's verdict on one request, for `interlock policy explain`.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub rule: String,
    pub applies: bool,
    pub why: String,
}

/// A decision and how it was reached.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    pub decision: Decision,
    pub steps: Vec<Step>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Session,
    Statement,
    Command,
}

fn scope_of_rule(r: &Rule) -> Scope {
    if r.conditions.about_statements() || r.action == ActionKind::Mask {
        Scope::Statement
    } else if r.conditions.about_commands() {
        Scope::Command
    } else {
        Scope::Session
    }
}

fn scope_of_request(r: &Request) -> Scope {
    match r {
        Request::Session => Scope::Session,
        Request::Statement { .. } => Scope::Statement,
        Request::Command { .. } => Scope::Command,
    }
}

impl Policy {
    /// Whether some session rule names the SSH login (`ssh_user`,
    /// `ssh_requested_user`): SSH sessions are then decided once the client
    /// said whom it logs in as, instead of before authentication.
    pub fn session_rules_name_login(&self) -> bool {
        self.rules()
            .iter()
            .any(|r| scope_of_rule(r) == Scope::Session && r.conditions.about_login())
    }

    /// Decides `request` by `subject` on `target`.
    pub fn decide(&self, target: &Target, subject: &Subject, request: &Request) -> Decision {
        self.explain(target, subject, request).decision
    }

    /// Every mask rule that could apply to some statement of `subject` on
    /// `target`: its statement conditions (`statement`, `sql`) are taken to
    /// hold. For results interlock cannot tie to a statement it decided
    /// (a cursor or prepared statement made in SQL), so masking fails closed.
    pub fn possible_masks(&self, target: &Target, subject: &Subject) -> Vec<MaskRule> {
        self.rules()
            .iter()
            .filter(|r| r.action == ActionKind::Mask)
            .filter(|r| {
                check(
                    &r.conditions,
                    target,
                    subject,
                    &Request::Session,
                    false,
                    false,
                )
                .is_ok()
            })
            .filter_map(|r| {
                r.mask.as_ref().map(|m| MaskRule {
                    rule: r.name.clone(),
                    spec: Arc::clone(m),
                })
            })
            .collect()
    }

    /// Decides and says, rule by rule, why.
    pub fn explain(&self, target: &Target, subject: &Subject, request: &Request) -> Explanation {
        let scope = scope_of_request(request);
        let blind = self.blind(target, subject, request);
        let mut steps = Vec::new();
        let mut deciding: Option<&Rule> = None;
        let mut mask = Vec::new();
        let mut record: Option<RecordLevel> = None;
        let mut raised = false;
        for rule in self.rules() {
            let step = |applies, why: String| Step {
                rule: rule.name.clone(),
                applies,
                why,
            };
            if scope_of_rule(rule) != scope {
                steps.push(step(false, "is about another kind of request".into()));
                continue;
            }
            let unknown = match check(
                &rule.conditions,
                target,
                subject,
                request,
                blind.is_some(),
                needs_trusted_exe(rule),
            ) {
                Ok(unknown) => unknown,
                Err(why) => {
                    steps.push(step(false, why));
                    continue;
                }
            };
            // Fail closed: what cannot be established never lets a request
            // past a restriction, and never grants anything.
            let fail_closed = !unknown.is_empty();
            if fail_closed && !restricts(rule) {
                steps.push(step(
                    false,
                    format!(
                        "{}; an {} rule does not apply to what cannot be established",
                        unknown.join("; "),
                        action_name(rule.action)
                    ),
                ));
                continue;
            }
            let mut note = match &blind {
                Some(why) if !rule.conditions.statement.is_empty() => format!(" ({why})"),
                _ => String::new(),
            };
            if fail_closed {
                note.push_str(&format!(" ({}; applies: fail closed)", unknown.join("; ")));
            }
            // What the job writes (the request itself) can only raise the level.
            let keyed_on_request =
                rule.conditions.about_statements() || rule.conditions.about_commands();
            let level_note = match rule.record {
                Some(RecordLevel::Full) if keyed_on_request => {
                    raised = true;
                    ""
                }
                Some(RecordLevel::Metadata) if keyed_on_request || fail_closed => {
                    ", but its `record: metadata` is ignored: only rules on target and identity may lower the recording level"
                }
                Some(level) => {
                    record.get_or_insert(level);
                    ""
                }
                None => "",
            };
            match rule.action {
                ActionKind::Mask => {
                    if let Some(m) = &rule.mask {
                        mask.push(MaskRule {
                            rule: rule.name.clone(),
                            spec: Arc::clone(m),
                        });
                    }
                    steps.push(step(
                        true,
                        format!("matches{note}: adds masking{level_note}"),
                    ));
                }
                ActionKind::Record => steps.push(step(
                    true,
                    format!("matches{note}: sets the recording level{level_note}"),
                )),
                a => {
                    let wins = deciding.is_none_or(|d| a > d.action);
                    let why = if wins {
                        format!(
                            "matches{note}: {} (deciding so far){level_note}",
                            action_name(a)
                        )
                    } else {
                        format!(
                            "matches{note}: {}, but rule `{}` is as or more restrictive and comes first{level_note}",
                            action_name(a),
                            deciding.map(|d| d.name.as_str()).unwrap_or_default()
                        )
                    };
                    if wins {
                        deciding = Some(rule);
                    }
                    steps.push(step(true, why));
                }
            }
        }
        if raised {
            record = Some(RecordLevel::Full);
        }
        let (action, rule) = match deciding {
            Some(r) => (action_of(r), Some(r.name.clone())),
            None if scope == Scope::Session => (target.default_action.clone(), None),
            None => (default_for(request), None),
        };
        Explanation {
            decision: Decision {
                action,
                rule,
                mask,
                record,
            },
            steps,
        }
    }
}

impl Policy {
    /// For a statement interlock cannot read that no applying rule names
    /// by that class: why, for explanations. Such a statement is judged as
    /// if it had every class the rules name.
    fn blind(&self, target: &Target, subject: &Subject, request: &Request) -> Option<String> {
        use super::StatementClass as C;
        let Request::Statement {
            classes, opaque, ..
        } = request
        else {
            return None;
        };
        let unreadable: Vec<C> = [C::Opaque, C::Unparseable]
            .into_iter()
            .filter(|c| classes.contains(c))
            .collect();
        let named = |c: &C| {
            self.rules().iter().any(|r| {
                scope_of_rule(r) == Scope::Statement
                    && r.conditions.statement.contains(c)
                    && check(
                        &r.conditions,
                        target,
                        subject,
                        request,
                        false,
                        needs_trusted_exe(r),
                    )
                    .is_ok_and(|unknown| unknown.is_empty() || restricts(r))
            })
        };
        let c = unreadable.into_iter().find(|c| !named(c))?;
        let what = match (c, opaque) {
            (C::Opaque, Some(why)) => format!("classified opaque: {why}"),
            (C::Opaque, None) => "classified opaque".to_string(),
            _ => "unparseable".to_string(),
        };
        Some(format!(
            "{what}; judged as if it had every class rules name"
        ))
    }
}

/// `Ok` when some command of an exec runs a program the rule names with
/// one of its options; also when the command cannot be read (fail closed).
fn programs_match(
    c: &Conditions,
    kind: crate::policy::CommandKind,
    text: &str,
) -> Result<(), String> {
    if kind != crate::policy::CommandKind::Exec {
        return Err("program and options are conditions on exec commands".into());
    }
    let script = super::shell::split(text);
    if script.unreadable.is_some() {
        return Ok(());
    }
    let hit = script.commands.iter().any(|cmd| {
        let program = match cmd.words.first() {
            Some(p) if !cmd.dynamic.first().copied().unwrap_or(false) => p,
            // A program only known when it runs may be any of them.
            _ => return c.options.is_empty() || c.options.iter().any(|o| cmd.has_option(o)),
        };
        let base = program.rsplit('/').next().unwrap_or(program);
        let named = c.program.is_empty()
            || c.program.iter().any(|g| {
                if g.as_str().contains('/') {
                    g.is_match(program)
                } else {
                    g.is_match(base)
                }
            });
        named && (c.options.is_empty() || c.options.iter().any(|o| cmd.has_option(o)))
    });
    if hit {
        Ok(())
    } else {
        Err("no command of it runs a listed program with a listed option".into())
    }
}

/// The action for a statement or command no rule decides.
fn default_for(request: &Request) -> Action {
    match request {
        Request::Command { kind, .. } if kind.is_forwarding() => Action::Block {
            message: forwarding_denied(*kind),
        },
        _ => Action::Allow,
    }
}

/// The refusal of a forwarding request no rule decides.
fn forwarding_denied(kind: crate::policy::CommandKind) -> String {
    format!(
        "no rule allows {}: forwarding is denied unless a rule allows it",
        kind.name()
    )
}

/// Whether `r` restricts what it matches (so it applies, failing closed,
/// when a fact it needs is unknown): block, require_approval, mask, and a
/// `record` rule that sets `full`.
fn restricts(r: &Rule) -> bool {
    match r.action {
        ActionKind::Allow => false,
        ActionKind::Block | ActionKind::RequireApproval | ActionKind::Mask => true,
        ActionKind::Record => r.record == Some(RecordLevel::Full),
    }
}

/// Whether `r`'s `exe`/`ancestor_exe` conditions count only executables whose
/// path is trusted to name the file they run: rules that let requests
/// through, unless they say `trusted_exe: false`. A rule that restricts
/// matches the path whatever the file (a copy under the name is caught too).
fn needs_trusted_exe(r: &Rule) -> bool {
    !restricts(r) && r.conditions.trusted_exe != Some(false)
}

fn action_name(a: ActionKind) -> &'static str {
    match a {
        ActionKind::Allow => "allow",
        ActionKind::RequireApproval => "require_approval",
        ActionKind::Block => "block",
        ActionKind::Mask => "mask",
        ActionKind::Record => "record",
    }
}

fn action_of(r: &Rule) -> Action {
    match (r.action, &r.approval) {
        (ActionKind::Block, _) => Action::Block {
            message: r
                .message
                .clone()
                .unwrap_or_else(|| format!("forbidden by rule `{}`", r.name)),
        },
        (ActionKind::RequireApproval, Some(a)) => Action::RequireApproval(a.clone()),
        _ => Action::Allow,
    }
}

/// `Ok` when every condition holds, with the identity facts it needed that
/// are unknown (each with why; empty when all were established); otherwise
/// the first condition that does not hold.
/// `blind`: the statement cannot be read, so any `statement` list holds.
/// `trusted_only`: an executable matches `exe`/`ancestor_exe` only when its
/// path is trusted (`needs_trusted_exe`).
fn check(
    c: &Conditions,
    target: &Target,
    s: &Subject,
    req: &Request,
    blind: bool,
    trusted_only: bool,
) -> Result<Vec<String>, String> {
    let mut unknown = Vec::new();
    // Unknown file checks; kept apart while `not_known` borrows `unknown`.
    let mut unchecked_exes = Vec::new();
    let mut not_known = |fact: Fact| match s.unknown(fact) {
        Some(why) => {
            unknown.push(format!("{} unknown: {why}", fact.condition()));
            true
        }
        None => false,
    };
    if !c.targets.is_empty() && !c.targets.contains(&target.name) {
        return Err(format!(
            "target `{}` is not in {:?}",
            target.name, c.targets
        ));
    }
    if !c.users.is_empty() {
        let hit = c.users.iter().any(|u| match u {
            UserRef::Uid(uid) => *uid == s.uid,
            UserRef::Name(n) => s.user.as_deref() == Some(n.as_str()),
        });
        if !hit {
            return Err(format!(
                "user {} (uid {}) is not listed",
                s.user.as_deref().unwrap_or("?"),
                s.uid
            ));
        }
    }
    if !c.exe.is_empty() && !not_known(Fact::Exe) {
        let exe = s.exe.as_deref().unwrap_or_default();
        if !c.exe.iter().any(|p| p.is_match(exe)) {
            return Err(format!("exe `{exe}` matches no `exe` glob"));
        }
        if trusted_only {
            match &s.exe_trust {
                ExeTrust::Trusted => {}
                ExeTrust::Untrusted { reason } => {
                    return Err(format!("exe `{exe}` matches, but is not trusted: {reason}"));
                }
                ExeTrust::Unknown { reason } => {
                    unchecked_exes.push(format!(
                        "whether exe `{exe}` is trusted is unknown: {reason}"
                    ));
                }
            }
        }
    }
    if let Some(re) = &c.argv
        && !not_known(Fact::Argv)
    {
        let line = s.argv.join(" ");
        if !re.0.is_match(&line) {
            return Err(format!("argv does not match /{}/", re.0.as_str()));
        }
    }
    // Any ancestor matching is enough, so a known one decides even when
    // the chain has a gap; otherwise the gap might have held one.
    if !c.ancestor_exe.is_empty() {
        let named: Vec<(&str, Option<&ExeTrust>)> = s
            .ancestors()
            .filter(|(a, _)| c.ancestor_exe.iter().any(|p| p.is_match(a)))
            .collect();
        let counts = |t: Option<&ExeTrust>| !trusted_only || t.is_some_and(ExeTrust::is_trusted);
        if !named.iter().any(|(_, t)| counts(*t)) {
            // A match whose file could not be checked might be the real one.
            let unchecked = named.iter().find_map(|(a, t)| match t {
                None => Some(format!("ancestor `{a}` was not checked")),
                Some(ExeTrust::Unknown { reason }) => Some(reason.clone()),
                Some(_) => None,
            });
            if let Some(why) = unchecked {
                unchecked_exes.push(format!("whether an ancestor is trusted is unknown: {why}"));
            } else if !not_known(Fact::Ancestry) {
                return Err(
                    match named
                        .iter()
                        .find_map(|(_, t)| t.and_then(ExeTrust::why_not))
                    {
                        Some(why) => {
                            format!("an ancestor matches `ancestor_exe`, but is not trusted: {why}")
                        }
                        None => "no ancestor's exe matches `ancestor_exe`".into(),
                    },
                );
            }
        }
    }
    if !c.cgroup.is_empty() && !not_known(Fact::Cgroup) {
        let cg = s.cgroup.as_deref().unwrap_or_default();
        if !c.cgroup.iter().any(|p| p.is_match(cg)) {
            return Err(format!("cgroup `{cg}` matches no `cgroup` glob"));
        }
    }
    match &s.ci_unavailable {
        Some(why) if !c.ci.is_empty() => unknown.push(format!("no CI context: {why}")),
        _ => {
            for (var, p) in &c.ci {
                match s.ci.get(var) {
                    Some(v) if p.is_match(v) => {}
                    Some(v) => {
                        return Err(format!("{var}=`{v}` does not match `{}`", p.as_str()));
                    }
                    None => {
                        return Err(format!("{var} is not set in the job root's environment"));
                    }
                }
            }
        }
    }
    if let Some(o) = &c.oidc {
        let Some(job) = &s.job else {
            return Err("the session has no verified job token".into());
        };
        o.check(job)?;
    }
    if c.about_login() {
        match (&s.ssh_login, target.protocol) {
            (None, super::Protocol::Ssh) => {
                unknown.push("ssh_user unknown: the client has not logged in yet".into());
            }
            (None, _) => {
                return Err("not an SSH login (ssh_user, ssh_requested_user)".into());
            }
            (Some(_), _) => {}
        }
    }
    if let Some(login) = s.ssh_login.as_ref().filter(|_| c.about_login()) {
        if !c.ssh_requested_user.is_empty()
            && !c
                .ssh_requested_user
                .iter()
                .any(|p| p.is_match(&login.requested))
        {
            return Err(format!(
                "requested SSH user `{}` matches no `ssh_requested_user` glob",
                login.requested
            ));
        }
        if !c.ssh_user.is_empty() {
            let up = login.upstream.as_deref().unwrap_or_default();
            if !c.ssh_user.iter().any(|p| p.is_match(up)) {
                return Err(format!("SSH user `{up}` matches no `ssh_user` glob"));
            }
        }
    }
    match req {
        Request::Statement { text, classes, .. } => {
            if !blind && !c.statement.is_empty() && !classes.iter().any(|k| c.statement.contains(k))
            {
                return Err(format!(
                    "statement classes {classes:?} are not in {:?}",
                    c.statement
                ));
            }
            if let Some(re) = &c.sql
                && !re.0.is_match(text)
            {
                return Err(format!("statement does not match /{}/", re.0.as_str()));
            }
        }
        Request::Command { kind, text } => {
            if !c.kind.is_empty() && !c.kind.contains(kind) {
                return Err(format!("request kind {kind:?} is not in {:?}", c.kind));
            }
            if !c.program.is_empty() || !c.options.is_empty() {
                programs_match(c, *kind, text)?;
            }
            if let Some(re) = &c.command
                && !re.0.is_match(text)
            {
                return Err(format!("command does not match /{}/", re.0.as_str()));
            }
        }
        Request::Session => {}
    }
    unknown.extend(unchecked_exes);
    Ok(unknown)
}
