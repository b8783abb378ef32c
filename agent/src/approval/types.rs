//! The shapes of held requests and decisions, as the registry keeps them,
//! the control API returns them and audit events carry them.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::who::{Approver, Channel, DecidedBy};
use crate::{
    gate::{HoldOutcome, Request},
    identity::FlowIdentity,
    oidc::JobTokenView,
    policy::{ApprovalSpec, Approvers, CommandKind, Grant, StatementClass},
};

/// Who made a held request (a summary of its flow identity).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requester {
    pub uid: u32,
    pub user: Option<String>,
    pub tgid: u32,
    pub exe: Option<String>,
    pub cgroup: Option<String>,
    /// Allow-listed CI variables (job, pipeline, repository).
    pub ci: std::collections::BTreeMap<String, String>,
    /// The session's verified job token (issuer, subject, recorded claims), if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobTokenView>,
}

impl From<&FlowIdentity> for Requester {
    fn from(f: &FlowIdentity) -> Requester {
        Requester {
            uid: f.process.uid,
            user: f.process.user.clone(),
            tgid: f.process.tgid,
            exe: f.process.exe.clone(),
            cgroup: f.process.cgroup.clone(),
            ci: f.process.ci.clone(),
            job: f.job_token.clone(),
        }
    }
}

/// The exact request that waits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RequestView {
    /// A whole connection (tcp targets, or a session-level rule).
    Session { destination: String },
    Statement {
        text: String,
        classes: Vec<StatementClass>,
        /// Why interlock could not read what it does, when it could not
        /// (`opaque`): it was decided as if it had every class rules name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        opaque: Option<String>,
    },
    Command {
        command_kind: CommandKind,
        text: String,
    },
    /// SSH: logging in as `user`, which the target does not allow.
    Login { user: String },
    /// SSH: passing the environment variable `name` (never its value).
    Env { name: String },
}

impl RequestView {
    /// The view of `request` on a session to `destination`.
    pub fn of(request: &Request, destination: std::net::SocketAddr) -> RequestView {
        match request {
            Request::Session => RequestView::Session {
                destination: destination.to_string(),
            },
            Request::Statement {
                text,
                classes,
                opaque,
            } => RequestView::Statement {
                text: text.clone(),
                classes: classes.clone(),
                opaque: opaque.clone(),
            },
            Request::Command { kind, text } => RequestView::Command {
                command_kind: *kind,
                text: text.clone(),
            },
        }
    }
}

/// What a session asks the registry to hold.
#[derive(Clone, Debug)]
pub struct HoldSpec {
    pub session_id: String,
    pub target: String,
    pub rule: String,
    pub request: RequestView,
    pub requester: Requester,
    pub approval: ApprovalSpec,
}

/// A request waiting for a decision.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pending {
    pub id: String,
    pub session_id: String,
    pub target: String,
    pub rule: String,
    pub request: RequestView,
    pub requester: Requester,
    pub approvers: Approvers,
    #[serde(default = "once")]
    pub grant: Grant,
    #[serde(with = "rfc3339")]
    pub requested_at: SystemTime,
    #[serde(with = "rfc3339")]
    pub deadline: SystemTime,
}

fn once() -> Grant {
    Grant::Once
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approved,
    Denied,
    Expired,
    /// The requester went away (client disconnected or cancelled) or the
    /// daemon stopped.
    Withdrawn,
}

/// A decided request: who decided, why, when.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Decided {
    #[serde(flatten)]
    pub pending: Pending,
    pub decision: Decision,
    /// The approver (None for expiry and withdrawal): a local caller as the kernel
    /// identified it, or someone signed in with the identity provider.
    pub by: Option<DecidedBy>,
    /// Where the decision was made (None for expiry and withdrawal).
    #[serde(default)]
    pub channel: Option<Channel>,
    pub reason: Option<String>,
    #[serde(with = "rfc3339")]
    pub decided_at: SystemTime,
    /// Until when a time-boxed grant covers the same rule, target and job (absent: this
    /// request only, including when the job could not be identified).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_rfc3339")]
    pub granted_until: Option<SystemTime>,
}

impl Decided {
    pub(super) fn new(pending: Pending, outcome: &HoldOutcome, by: Option<&Approver>) -> Decided {
        let (decision, reason) = match outcome {
            HoldOutcome::Approved { reason, .. } => (Decision::Approved, reason.clone()),
            HoldOutcome::Denied { reason, .. } => (Decision::Denied, reason.clone()),
            HoldOutcome::Expired => (Decision::Expired, Some("deadline passed".into())),
            HoldOutcome::Withdrawn => (Decision::Withdrawn, None),
        };
        Decided {
            pending,
            decision,
            by: by.map(Approver::record),
            channel: by.map(Approver::channel),
            reason,
            decided_at: SystemTime::now(),
            granted_until: None,
        }
    }
}

/// SystemTime as RFC 3339 with milliseconds.
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&s).map_err(serde::de::Error::custom)
    }
}

/// An optional SystemTime as RFC 3339 with milliseconds.
mod opt_rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::rfc3339::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => humantime::parse_rfc3339_weak(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}
