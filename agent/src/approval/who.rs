//! Who decides a held request, and whether they may: local users over the control socket
//! (identified by the kernel), and people signed in on the approvals page with the
//! organisation's identity provider (or bots with its bearer tokens). The requester never
//! may: locally by uid and cgroup; on the page by four eyes, comparing the job token's claims
//! that name the human who started the job with the approver's own claims.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ApprovalError, types::Pending};
use crate::{identity::LocalPeer, oidc::claim_strings, policy::FourEyesPair};

/// Where a decision was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// `interlock approvals approve|deny` over the control socket.
    Cli,
    /// The approvals page, in a browser.
    Web,
    /// The page's JSON API with a bearer token (a chat bot).
    Api,
}

/// Someone signed in with the identity provider, as its verified token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedIn {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// `email`, only when the provider vouches for it (or the policy does not ask it to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `preferred_username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The groups claim's values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The claims four-eyes pairs compare (string values; an unverified e-mail left out).
    #[serde(skip)]
    pub claims: BTreeMap<String, Vec<String>>,
}

impl SignedIn {
    /// How clients and pages name this person: e-mail, else user name, else subject.
    pub fn display(&self) -> String {
        self.email
            .clone()
            .or_else(|| self.username.clone())
            .unwrap_or_else(|| self.subject.clone())
    }
}

/// Who asks to decide, see or list held requests.
#[derive(Clone, Debug)]
pub enum Approver {
    /// A local process on the control socket.
    Local(LocalPeer),
    /// Someone signed in on the page (`Web`) or a bot (`Api`).
    SignedIn(SignedIn, Channel),
}

impl Approver {
    /// The channel the approver uses.
    pub fn channel(&self) -> Channel {
        match self {
            Approver::Local(_) => Channel::Cli,
            Approver::SignedIn(_, c) => *c,
        }
    }

    /// How the requester's client is told who decided.
    pub fn display(&self) -> String {
        match self {
            Approver::Local(p) => caller_name(p),
            Approver::SignedIn(s, c) => format!(
                "{} ({})",
                s.display(),
                match c {
                    Channel::Web => "web",
                    _ => "api",
                }
            ),
        }
    }

    /// What the audit record says about the approver.
    pub(super) fn record(&self) -> DecidedBy {
        match self {
            Approver::Local(p) => DecidedBy::Local(p.clone()),
            Approver::SignedIn(s, _) => DecidedBy::SignedIn(s.clone()),
        }
    }
}

/// The approver as decisions record them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DecidedBy {
    Local(LocalPeer),
    SignedIn(SignedIn),
}

/// The caller's user name, or its uid when it has none.
pub(crate) fn caller_name(caller: &LocalPeer) -> String {
    caller
        .user
        .clone()
        .unwrap_or_else(|| format!("uid {}", caller.uid))
}

/// Whether `who` is among the approvers captured with the hold (the policy in force when it
/// was held, whatever reloads happened since).
pub(super) fn admits(p: &Pending, who: &Approver) -> bool {
    match who {
        Approver::Local(c) => p.approvers.admits(c.user.as_deref(), &c.groups),
        Approver::SignedIn(s, _) => {
            p.approvers
                .admits_signed_in(&s.subject, s.email.as_deref(), &s.groups)
        }
    }
}

/// Root (locally) and the hold's own approvers may see a held request: it contains the
/// statement and the requester's identity.
pub(super) fn may_see(p: &Pending, who: &Approver) -> bool {
    matches!(who, Approver::Local(c) if c.uid == 0) || admits(p, who)
}

/// May `who` decide `p`? Never the requester, even when listed as an approver.
pub(super) fn authorize(
    p: &Pending,
    who: &Approver,
    four_eyes: &[FourEyesPair],
) -> Result<(), ApprovalError> {
    match who {
        Approver::Local(c) => not_the_local_requester(p, c)?,
        Approver::SignedIn(s, _) => not_the_job_starter(p, s, four_eyes)?,
    }
    if admits(p, who) {
        Ok(())
    } else {
        Err(ApprovalError::NotApprover {
            who: match who {
                Approver::Local(c) => caller_name(c),
                Approver::SignedIn(s, _) => s.display(),
            },
            rule: p.rule.clone(),
        })
    }
}

/// The requester (same uid, or a process in the same cgroup, such as another step of the
/// same CI job) never decides. When either cgroup is unknown (the caller's cannot be read,
/// or the requesting process had exited before the daemon looked it up) the two cannot be
/// told apart: refused (fail closed); the approvals page's sign-in still works.
fn not_the_local_requester(p: &Pending, caller: &LocalPeer) -> Result<(), ApprovalError> {
    if caller.uid == p.requester.uid {
        return Err(ApprovalError::SelfApproval(format!(
            "uid {} made this request and cannot decide it",
            caller.uid
        )));
    }
    match (&caller.cgroup, &p.requester.cgroup) {
        (Some(a), Some(b)) if a == b => Err(ApprovalError::SelfApproval(format!(
            "the caller runs in the requester's cgroup {a}"
        ))),
        (None, _) => Err(ApprovalError::SelfApproval(format!(
            "the cgroup of the caller (pid {}) cannot be read, so it cannot be told apart from the requester's",
            caller.pid
        ))),
        (_, None) => Err(ApprovalError::SelfApproval(format!(
            "the requester's cgroup is unknown (pid {} had exited when interlock looked it up), so no local caller can be told apart from it; decide on the approvals page",
            p.requester.tgid
        ))),
        _ => Ok(()),
    }
}

/// Four eyes: when the job's verified token names the human who started it (a pair's job
/// claim is set), that human may not decide. Each pair whose approver claim the sign-in has
/// is compared (without regard to case); when the token names someone and the sign-in has
/// none of the claims to compare, interlock cannot tell the two apart: refused (fail closed).
fn not_the_job_starter(
    p: &Pending,
    who: &SignedIn,
    pairs: &[FourEyesPair],
) -> Result<(), ApprovalError> {
    let Some(job) = &p.requester.job else {
        return Ok(());
    };
    let mut named = Vec::new();
    let mut compared = false;
    for pair in pairs {
        let starters = job
            .claims
            .get(&pair.job)
            .map(claim_strings)
            .unwrap_or_default();
        if starters.is_empty() {
            continue;
        }
        named.push(format!("{}={}", pair.job, starters.join(",")));
        let mine = who.claims.get(&pair.approver).cloned().unwrap_or_default();
        if mine.is_empty() {
            continue;
        }
        compared = true;
        if let Some(same) = starters
            .iter()
            .find(|s| mine.iter().any(|m| m.eq_ignore_ascii_case(s)))
        {
            return Err(ApprovalError::SelfApproval(format!(
                "four eyes: this job was started by {}={same} (its job token), and your sign-in's {} is {same}; someone else must decide",
                pair.job, pair.approver
            )));
        }
    }
    if !named.is_empty() && !compared {
        let wanted: Vec<&str> = pairs.iter().map(|p| p.approver.as_str()).collect();
        return Err(ApprovalError::SelfApproval(format!(
            "four eyes: this job was started by {} (its job token), and your sign-in carries none of {} to tell you apart",
            named.join(", "),
            wanted.join(", ")
        )));
    }
    Ok(())
}
