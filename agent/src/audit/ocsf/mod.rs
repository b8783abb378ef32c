//! OCSF (Open Cybersecurity Schema Framework 1.3.0). Two forms:
//!
//! - the compact `ocsf` object every event carries in the audit log and
//!   `events.jsonl` (class, activity, severity, status: [`Ocsf`]);
//! - the full OCSF event that webhooks deliver ([`Mapper`]): the class's
//!   attributes at top level (actor, endpoints, traffic, query, ...) and
//!   interlock's own event under `unmapped`, so a SIEM ingests it without
//!   custom parsing.
//!
//! Both come from one classification ([`classify`]), a pure function of
//! the event kind; docs/events.md holds the table and why each class.

mod body;
mod fill;
mod objects;

use std::time::UNIX_EPOCH;

use serde::Serialize;

use super::{Disposition, EventKind, SessionOutcome};
use crate::approval::{Decision, RequestView};

pub(crate) use body::Mapper;

/// OCSF schema version the mapping follows.
pub(crate) const OCSF_VERSION: &str = "1.3.0";

/// An OCSF class: uid, name, category uid, category name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Class {
    pub(crate) uid: u32,
    pub(crate) name: &'static str,
    pub(crate) category_uid: u32,
    pub(crate) category_name: &'static str,
}

const fn class(uid: u32, name: &'static str, category_name: &'static str) -> Class {
    Class {
        uid,
        name,
        category_uid: uid / 1000,
        category_name,
    }
}

pub(crate) const PROCESS: Class = class(1007, "Process Activity", "System Activity");
pub(crate) const EVENT_LOG: Class = class(1008, "Event Log Activity", "System Activity");
pub(crate) const AUTHORIZE: Class =
    class(3003, "Authorize Session", "Identity & Access Management");
pub(crate) const NETWORK: Class = class(4001, "Network Activity", "Network Activity");
pub(crate) const SSH: Class = class(4007, "SSH Activity", "Network Activity");
pub(crate) const APP_LIFECYCLE: Class =
    class(6002, "Application Lifecycle", "Application Activity");
pub(crate) const DATASTORE: Class = class(6005, "Datastore Activity", "Application Activity");

/// `(id, caption)` pairs of OCSF enums.
pub(crate) type Enum = (u32, &'static str);

const INFORMATIONAL: Enum = (1, "Informational");
const LOW: Enum = (2, "Low");
const MEDIUM: Enum = (3, "Medium");
const HIGH: Enum = (4, "High");

const SUCCESS: Enum = (1, "Success");
const FAILURE: Enum = (2, "Failure");
/// A request waiting for a human is neither.
const PENDING: Enum = (99, "Pending");

/// Where an event falls in OCSF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Classification {
    pub(crate) class: Class,
    pub(crate) activity: Enum,
    pub(crate) severity: Enum,
    pub(crate) status: Enum,
}

impl Classification {
    /// `class_uid * 100 + activity_id`.
    pub(crate) fn type_uid(&self) -> u32 {
        self.class.uid * 100 + self.activity.0
    }
}

/// The OCSF class, activity, severity and status of `kind`.
pub(crate) fn classify(kind: &EventKind) -> Classification {
    use EventKind as K;
    let (class, activity, severity, status) = match kind {
        K::SessionStarted { decision, .. } => match decision.action {
            Disposition::Blocked => (NETWORK, (1, "Open"), MEDIUM, FAILURE),
            _ => (NETWORK, (1, "Open"), INFORMATIONAL, SUCCESS),
        },
        K::SessionEnded { outcome, .. } => match outcome {
            SessionOutcome::Closed | SessionOutcome::Drained => {
                (NETWORK, (2, "Close"), INFORMATIONAL, SUCCESS)
            }
            SessionOutcome::UpstreamUnreachable | SessionOutcome::Error => {
                (NETWORK, (2, "Close"), LOW, FAILURE)
            }
            SessionOutcome::Blocked | SessionOutcome::NotApproved => {
                (NETWORK, (5, "Refuse"), MEDIUM, FAILURE)
            }
        },
        K::RequestBlocked { request, .. } => match request {
            RequestView::Statement { .. } => (DATASTORE, (4, "Query"), MEDIUM, FAILURE),
            RequestView::Command { .. } | RequestView::Login { .. } | RequestView::Env { .. } => {
                (SSH, (5, "Refuse"), MEDIUM, FAILURE)
            }
            RequestView::Session { .. } => (NETWORK, (5, "Refuse"), MEDIUM, FAILURE),
        },
        K::ApprovalRequested { .. } => (AUTHORIZE, (99, "Approval Requested"), MEDIUM, PENDING),
        K::ApprovalDecided { approval, .. } => match approval.decision {
            Decision::Approved => (AUTHORIZE, (1, "Assign Privileges"), MEDIUM, SUCCESS),
            _ => (AUTHORIZE, (1, "Assign Privileges"), LOW, FAILURE),
        },
        K::Statement { error, .. } => (
            DATASTORE,
            (4, "Query"),
            INFORMATIONAL,
            if error.is_some() { FAILURE } else { SUCCESS },
        ),
        K::Command { exit_status, .. } => (
            SSH,
            (6, "Traffic"),
            INFORMATIONAL,
            if exit_status.is_some_and(|s| s != 0) {
                FAILURE
            } else {
                SUCCESS
            },
        ),
        K::Masked { .. } => (DATASTORE, (99, "Mask"), INFORMATIONAL, SUCCESS),
        K::ProtocolError { .. } => (NETWORK, (4, "Fail"), LOW, FAILURE),
        K::PolicyReloaded { .. } => (APP_LIFECYCLE, (99, "Policy Reload"), INFORMATIONAL, SUCCESS),
        K::PolicyReloadFailed { .. } => (APP_LIFECYCLE, (99, "Policy Reload"), MEDIUM, FAILURE),
        K::ConnectionRefused { .. } => (NETWORK, (5, "Refuse"), MEDIUM, FAILURE),
        // A count from the kernel's counters, not one connection (which
        // Network Activity would need endpoints for). Let through
        // unrecorded is a hole in enforcement: high.
        K::ConnectsRefused {
            reason: super::event::RefusalReason::FlowTableFullPassed,
            ..
        } => (EVENT_LOG, (99, "Connects Not Redirected"), HIGH, FAILURE),
        K::ConnectsRefused { .. } => (EVENT_LOG, (99, "Connects Not Redirected"), MEDIUM, FAILURE),
        // An upgrade replaces adopted links too: low. Anything else is
        // someone with root turning interception off or preparing to.
        K::KernelIntegrity {
            finding: super::event::KernelFinding::LinkFromOtherBuild,
            ..
        } => (EVENT_LOG, (99, "Kernel Side Changed"), LOW, SUCCESS),
        // After the fact, and `interlock detach` by an operator looks the same.
        K::KernelIntegrity {
            finding: super::event::KernelFinding::PinsVanished,
            ..
        } => (EVENT_LOG, (99, "Kernel Side Changed"), MEDIUM, FAILURE),
        K::KernelIntegrity { .. } => (EVENT_LOG, (99, "Kernel Side Changed"), HIGH, FAILURE),
        K::DaemonStarted { .. } => (PROCESS, (1, "Launch"), INFORMATIONAL, SUCCESS),
        K::DaemonStopped { .. } => (PROCESS, (2, "Terminate"), INFORMATIONAL, SUCCESS),
        K::ProcessRecordsLost { .. } => (EVENT_LOG, (99, "Records Lost"), MEDIUM, FAILURE),
        K::AuditTailSealed { .. } => (EVENT_LOG, (8, "Restart"), LOW, SUCCESS),
        K::AuditPartialRecordDropped { .. } => (EVENT_LOG, (2, "Delete"), LOW, SUCCESS),
        K::AuditTruncationDetected { .. } => (EVENT_LOG, (2, "Delete"), HIGH, FAILURE),
        // Nothing was lost (requests were refused instead), but enforcement
        // refused work for a while: high.
        K::AuditWriteFailed { .. } => (EVENT_LOG, (99, "Log Unwritable"), HIGH, FAILURE),
        K::WebhookDisabled { .. } => (EVENT_LOG, (99, "Sink Disabled"), MEDIUM, FAILURE),
        K::WebhookSpoolOverflow { .. } => (EVENT_LOG, (99, "Records Lost"), MEDIUM, FAILURE),
        K::WebhookTest { .. } => (EVENT_LOG, (99, "Webhook Test"), INFORMATIONAL, SUCCESS),
    };
    Classification {
        class,
        activity,
        severity,
        status,
    }
}

/// The classification attributes, as both OCSF forms spell them.
#[derive(Debug, Serialize)]
pub(crate) struct Header {
    class_uid: u32,
    class_name: &'static str,
    category_uid: u32,
    category_name: &'static str,
    activity_id: u32,
    activity_name: &'static str,
    type_uid: u32,
    severity_id: u32,
    severity: &'static str,
    status_id: u32,
    status: &'static str,
}

impl From<&Classification> for Header {
    fn from(c: &Classification) -> Header {
        Header {
            class_uid: c.class.uid,
            class_name: c.class.name,
            category_uid: c.class.category_uid,
            category_name: c.class.category_name,
            activity_id: c.activity.0,
            activity_name: c.activity.1,
            type_uid: c.type_uid(),
            severity_id: c.severity.0,
            severity: c.severity.1,
            status_id: c.status.0,
            status: c.status.1,
        }
    }
}

/// The compact OCSF object of an audit record.
#[derive(Debug, Serialize)]
pub(crate) struct Ocsf {
    #[serde(flatten)]
    header: Header,
    /// Event time in milliseconds since the Unix epoch (from the event's `time`).
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<u64>,
    metadata: objects::Metadata,
}

impl Ocsf {
    /// The classification of `kind` at `time` (the event's RFC 3339 time;
    /// `time` is left out if it does not parse, which our own stamps always do).
    pub(crate) fn of(kind: &EventKind, time: &str) -> Ocsf {
        Ocsf {
            header: Header::from(&classify(kind)),
            time: epoch_ms(time),
            metadata: objects::Metadata::compact(),
        }
    }
}

/// The id and OCSF body of a `webhook_test` event from `host` for
/// `endpoint` (`interlock webhook test`; never logged).
pub fn test_event_body(host: &str, endpoint: &str) -> (String, Vec<u8>) {
    let ev = super::Event::now(
        host,
        EventKind::WebhookTest {
            endpoint: endpoint.to_string(),
        },
    );
    let native = serde_json::to_vec(&ev).unwrap_or_default();
    let body = Mapper::default().body(None, &ev, &native).unwrap_or(native);
    (ev.id, body)
}

/// Milliseconds since the epoch of an RFC 3339 UTC time.
pub(crate) fn epoch_ms(time: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339(time).ok()?;
    u64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()
}

#[cfg(test)]
mod tests;
