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

use std::{collections::BTreeMap, sync::Arc};

use serde::Serialize;

use super::{
    Policy, Target,
    rule::{ActionKind, ApprovalSpec, Conditions, RecordLevel, Rule, UserRef},
};
use crate::{
    gate::{MaskRule, Request},
    identity::{CiSource, ProcessIdentity},
    oidc::JobIdentity,
};

/// The requester, as rules see it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Subject {
    pub uid: u32,
    pub user: Option<String>,
    pub exe: Option<String>,
    pub argv: Vec<String>,
    pub ancestor_exes: Vec<String>,
    pub cgroup: Option<String>,
    /// The runner-rooted CI context (empty without a trusted runner).
    pub ci: BTreeMap<String, String>,
    /// Why there is no CI context, when there is none.
    pub ci_unavailable: Option<String>,
    /// The verified job token's identity, if the session has one.
    #[serde(skip)]
    pub job: Option<Arc<JobIdentity>>,
}

impl From<&ProcessIdentity> for Subject {
    fn from(p: &ProcessIdentity) -> Subject {
        Subject {
            uid: p.uid,
            user: p.user.clone(),
            exe: p.exe.clone(),
            argv: p.argv.clone(),
            ancestor_exes: p.ancestry.iter().filter_map(|a| a.exe.clone()).collect(),
            cgroup: p.cgroup.clone(),
            ci: p.ci.clone(),
            ci_unavailable: match &p.ci_source {
                CiSource::None { reason } => Some(reason.clone()),
                CiSource::JobRoot { .. } => None,
            },
            job: None,
        }
    }
}

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
    pub record: RecordLevel,
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
            .filter(|r| check(&r.conditions, target, subject, &Request::Session, false).is_ok())
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
            if let Err(why) = check(&rule.conditions, target, subject, request, blind.is_some()) {
                steps.push(step(false, why));
                continue;
            }
            let blind_note = match &blind {
                Some(why) if !rule.conditions.statement.is_empty() => format!(" ({why})"),
                _ => String::new(),
            };
            if record.is_none() {
                record = rule.record;
            }
            match rule.action {
                ActionKind::Mask => {
                    if let Some(m) = &rule.mask {
                        mask.push(MaskRule {
                            rule: rule.name.clone(),
                            spec: Arc::clone(m),
                        });
                    }
                    steps.push(step(true, "matches: adds masking".into()));
                }
                ActionKind::Record => {
                    steps.push(step(true, "matches: sets the recording level".into()))
                }
                a => {
                    let wins = deciding.is_none_or(|d| a > d.action);
                    let why = if wins {
                        format!("matches{blind_note}: {} (deciding so far)", action_name(a))
                    } else {
                        format!(
                            "matches{blind_note}: {}, but rule `{}` is as or more restrictive and comes first",
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
                record: record.unwrap_or_default(),
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
                    && check(&r.conditions, target, subject, request, false).is_ok()
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

/// `Ok` when every condition holds; otherwise the first one that does not.
/// `blind`: the statement cannot be read, so any `statement` list holds.
fn check(
    c: &Conditions,
    target: &Target,
    s: &Subject,
    req: &Request,
    blind: bool,
) -> Result<(), String> {
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
    if !c.exe.is_empty() {
        let exe = s.exe.as_deref().unwrap_or_default();
        if !c.exe.iter().any(|p| p.is_match(exe)) {
            return Err(format!("exe `{exe}` matches no `exe` glob"));
        }
    }
    if let Some(re) = &c.argv {
        let line = s.argv.join(" ");
        if !re.0.is_match(&line) {
            return Err(format!("argv does not match /{}/", re.0.as_str()));
        }
    }
    if !c.ancestor_exe.is_empty()
        && !s
            .ancestor_exes
            .iter()
            .any(|a| c.ancestor_exe.iter().any(|p| p.is_match(a)))
    {
        return Err("no ancestor's exe matches `ancestor_exe`".into());
    }
    if !c.cgroup.is_empty() {
        let cg = s.cgroup.as_deref().unwrap_or_default();
        if !c.cgroup.iter().any(|p| p.is_match(cg)) {
            return Err(format!("cgroup `{cg}` matches no `cgroup` glob"));
        }
    }
    if !c.ci.is_empty()
        && let Some(why) = &s.ci_unavailable
    {
        return Err(format!("no CI context: {why}"));
    }
    for (var, p) in &c.ci {
        match s.ci.get(var) {
            Some(v) if p.is_match(v) => {}
            Some(v) => return Err(format!("{var}=`{v}` does not match `{}`", p.as_str())),
            None => return Err(format!("{var} is not set in the job root's environment")),
        }
    }
    if let Some(o) = &c.oidc {
        let Some(job) = &s.job else {
            return Err("the session has no verified job token".into());
        };
        o.check(job)?;
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
    Ok(())
}
