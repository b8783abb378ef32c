//! The OCSF (Open Cybersecurity Schema Framework 1.3) classification every
//! event carries in its `ocsf` object, so a SIEM can route and index events
//! without custom parsing. The mapping is a pure function of the event kind
//! (and, for session ends, the outcome); docs/events.md holds the table and
//! why each class was chosen.

use std::time::UNIX_EPOCH;

use serde::Serialize;

use super::{EventKind, SessionOutcome};
use crate::approval::{Decision, RequestView};

/// OCSF schema version the mapping follows.
pub(crate) const OCSF_VERSION: &str = "1.3.0";

/// The OCSF fields of one event.
#[derive(Debug, Serialize)]
pub(crate) struct Ocsf {
    class_uid: u32,
    class_name: &'static str,
    category_uid: u32,
    category_name: &'static str,
    activity_id: u32,
    activity_name: &'static str,
    /// `class_uid * 100 + activity_id`.
    type_uid: u32,
    severity_id: u32,
    severity: &'static str,
    status_id: u32,
    status: &'static str,
    /// Event time in milliseconds since the Unix epoch (from the event's `time`).
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<u64>,
    metadata: Metadata,
}

#[derive(Debug, Serialize)]
struct Metadata {
    version: &'static str,
    product: Product,
}

#[derive(Debug, Serialize)]
struct Product {
    name: &'static str,
    vendor_name: &'static str,
    version: &'static str,
}

/// OCSF classes interlock emits: (class_uid, class name, category_uid, category name).
const NETWORK: (u32, &str, u32, &str) = (4001, "Network Activity", 4, "Network Activity");
const APP_LIFECYCLE: (u32, &str, u32, &str) =
    (6002, "Application Lifecycle", 6, "Application Activity");
const EVENT_LOG: (u32, &str, u32, &str) = (1008, "Event Log Activity", 1, "System Activity");
const DATASTORE: (u32, &str, u32, &str) = (6005, "Datastore Activity", 6, "Application Activity");
const SSH: (u32, &str, u32, &str) = (4007, "SSH Activity", 4, "Network Activity");
const AUTHORIZE: (u32, &str, u32, &str) =
    (3003, "Authorize Session", 3, "Identity & Access Management");

/// Severity ids of OCSF.
const INFORMATIONAL: (u32, &str) = (1, "Informational");
const LOW: (u32, &str) = (2, "Low");
const MEDIUM: (u32, &str) = (3, "Medium");
const HIGH: (u32, &str) = (4, "High");

/// Status ids of OCSF.
const SUCCESS: (u32, &str) = (1, "Success");
const FAILURE: (u32, &str) = (2, "Failure");

impl Ocsf {
    /// The classification of `kind` at `time` (the event's RFC 3339 time;
    /// `time` is left out if it does not parse, which our own stamps always do).
    pub(crate) fn of(kind: &EventKind, time: &str) -> Ocsf {
        use EventKind as K;
        let (class, (activity_id, activity_name), severity, status) = match kind {
            K::SessionStarted { .. } => (NETWORK, (1, "Open"), INFORMATIONAL, SUCCESS),
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
                RequestView::Statement { .. } => (DATASTORE, (99, "Query"), MEDIUM, FAILURE),
                RequestView::Command { .. } => (SSH, (5, "Refuse"), MEDIUM, FAILURE),
                RequestView::Session { .. } => (NETWORK, (5, "Refuse"), MEDIUM, FAILURE),
            },
            K::ApprovalRequested { .. } => (AUTHORIZE, (99, "Approval Requested"), MEDIUM, SUCCESS),
            K::ApprovalDecided { approval, .. } => match approval.decision {
                Decision::Approved => (AUTHORIZE, (99, "Approval Granted"), MEDIUM, SUCCESS),
                _ => (AUTHORIZE, (99, "Approval Refused"), LOW, FAILURE),
            },
            K::Statement { error, .. } => (
                DATASTORE,
                (99, "Query"),
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
            K::PolicyReloaded { .. } => {
                (APP_LIFECYCLE, (99, "Policy Reload"), INFORMATIONAL, SUCCESS)
            }
            K::PolicyReloadFailed { .. } => (APP_LIFECYCLE, (99, "Policy Reload"), MEDIUM, FAILURE),
            K::ConnectionRefused { .. } => (NETWORK, (5, "Refuse"), MEDIUM, FAILURE),
            // Let through unrecorded is a hole in enforcement: high.
            K::ConnectsRefused {
                reason: super::event::RefusalReason::FlowTableFullPassed,
                ..
            } => (NETWORK, (5, "Refuse"), HIGH, FAILURE),
            K::ConnectsRefused { .. } => (NETWORK, (5, "Refuse"), MEDIUM, FAILURE),
            K::DaemonStarted { .. } => (APP_LIFECYCLE, (3, "Start"), INFORMATIONAL, SUCCESS),
            K::DaemonStopped { .. } => (APP_LIFECYCLE, (4, "Stop"), INFORMATIONAL, SUCCESS),
            K::ProcessRecordsLost { .. } => (EVENT_LOG, (99, "Records Lost"), MEDIUM, FAILURE),
            K::AuditTailSealed { .. } => (EVENT_LOG, (8, "Restart"), LOW, SUCCESS),
            K::AuditPartialRecordDropped { .. } => (EVENT_LOG, (2, "Delete"), LOW, SUCCESS),
            K::AuditTruncationDetected { .. } => (EVENT_LOG, (2, "Delete"), HIGH, FAILURE),
            K::WebhookDisabled { .. } => (EVENT_LOG, (99, "Sink Disabled"), MEDIUM, FAILURE),
            K::WebhookSpoolOverflow { .. } => (EVENT_LOG, (99, "Records Lost"), MEDIUM, FAILURE),
        };
        let (class_uid, class_name, category_uid, category_name) = class;
        Ocsf {
            class_uid,
            class_name,
            category_uid,
            category_name,
            activity_id,
            activity_name,
            type_uid: class_uid * 100 + activity_id,
            severity_id: severity.0,
            severity: severity.1,
            status_id: status.0,
            status: status.1,
            time: epoch_ms(time),
            metadata: Metadata {
                version: OCSF_VERSION,
                product: Product {
                    name: "interlock",
                    vendor_name: "interlock",
                    version: env!("CARGO_PKG_VERSION"),
                },
            },
        }
    }
}

/// Milliseconds since the epoch of an RFC 3339 UTC time.
fn epoch_ms(time: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339(time).ok()?;
    u64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Event;

    fn ocsf(kind: EventKind) -> serde_json::Value {
        let mut e = Event::now("h", kind);
        e.time = "2026-01-02T03:04:05.678Z".into();
        let v = serde_json::to_value(&e).unwrap();
        assert!(v["type"].is_string(), "existing fields stay: {v}");
        v["ocsf"].clone()
    }

    fn ended(outcome: SessionOutcome) -> EventKind {
        EventKind::SessionEnded {
            session_id: "s".into(),
            target: "t".into(),
            outcome,
            bytes_client_to_server: 1,
            bytes_server_to_client: 2,
            duration_ms: 3,
            error: None,
        }
    }

    #[test]
    fn session_end_is_network_close_with_status() {
        let o = ocsf(ended(SessionOutcome::Closed));
        assert_eq!(
            (&o["class_uid"], &o["category_uid"], &o["activity_id"]),
            (&4001.into(), &4.into(), &2.into())
        );
        assert_eq!(o["type_uid"], 400102);
        assert_eq!(o["severity_id"], 1);
        assert_eq!(o["status_id"], 1);
        assert_eq!(o["time"], 1_767_323_045_678_u64);
        assert_eq!(o["metadata"]["version"], OCSF_VERSION);
        let o = ocsf(ended(SessionOutcome::UpstreamUnreachable));
        assert_eq!((&o["status_id"], &o["severity_id"]), (&2.into(), &2.into()));
    }

    #[test]
    fn every_kind_has_a_consistent_type_uid() {
        let kinds = [
            EventKind::DaemonStarted {
                instance: "i".into(),
                pid: 1,
                version: "v",
                adopted_pins: false,
            },
            EventKind::DaemonStopped {
                instance: "i".into(),
                reason: "r".into(),
            },
            EventKind::ConnectionRefused {
                listener: "127.0.0.1:1".parse().unwrap(),
                peer: "127.0.0.1:2".parse().unwrap(),
                reason: "r".into(),
            },
            EventKind::ProcessRecordsLost { lost: 1, total: 2 },
            EventKind::AuditTailSealed {
                from_seq: 1,
                to_seq: 2,
            },
            EventKind::AuditPartialRecordDropped {
                segment: "s".into(),
                bytes: 1,
            },
            EventKind::AuditTruncationDetected {
                checkpoint_seq: 2,
                last_seq: 1,
            },
        ];
        let expect = [600203, 600204, 400105, 100899, 100808, 100802, 100802];
        for (k, want) in kinds.into_iter().zip(expect) {
            let o = ocsf(k);
            let (c, a) = (o["class_uid"].as_u64(), o["activity_id"].as_u64());
            assert_eq!(o["type_uid"], want, "{o}");
            assert_eq!(Some(want), c.zip(a).map(|(c, a)| c * 100 + a));
        }
    }

    #[test]
    fn unparsable_time_leaves_time_out() {
        assert_eq!(epoch_ms("yesterday"), None);
        assert_eq!(epoch_ms("1970-01-01T00:00:01.5Z"), Some(1500));
    }
}
