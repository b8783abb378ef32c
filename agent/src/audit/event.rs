//! Typed events. Every field is safe to store: identities carry only
//! allow-listed CI variables, and no credential or payload byte is ever a field.

use std::{net::SocketAddr, time::SystemTime};

use serde::Serialize;

use super::ocsf::Ocsf;
use crate::{
    approval::{Decided, Pending, RequestView},
    gate::{RecordingRef, Side},
    intercept::FlowIdentity,
    policy::{CommandKind, StatementClass},
};

/// One thing that happened, with when and where. Serialized flat (`id`,
/// `time`, `host`, `type`, the kind's fields) plus an `ocsf` object with its
/// OCSF classification (docs/events.md).
#[derive(Debug)]
pub struct Event {
    /// Stable unique id (UUID v7, so ids sort by creation time).
    pub id: String,
    /// RFC 3339 UTC time with milliseconds.
    pub time: String,
    /// Host name of the machine the daemon runs on.
    pub host: String,
    pub kind: EventKind,
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        /// The wire form: the event's fields, then its OCSF classification.
        #[derive(Serialize)]
        struct Wire<'a> {
            id: &'a str,
            time: &'a str,
            host: &'a str,
            #[serde(flatten)]
            kind: &'a EventKind,
            ocsf: Ocsf,
        }
        Wire {
            id: &self.id,
            time: &self.time,
            host: &self.host,
            kind: &self.kind,
            ocsf: Ocsf::of(&self.kind, &self.time),
        }
        .serialize(s)
    }
}

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionOutcome {
    /// Both sides closed normally.
    Closed,
    /// The upstream could not be reached.
    UpstreamUnreachable,
    /// An I/O error on either side.
    Error,
    /// The daemon shut down and the drain time ran out.
    Drained,
    /// A rule blocked the session before anything was relayed.
    Blocked,
    /// The session waited for approval and was denied, expired or withdrawn.
    NotApproved,
}

/// What the policy decided, for events: the action and the deciding rule
/// (`None`: the target's default).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DecisionView {
    pub action: Disposition,
    pub rule: Option<String>,
}

/// How a request was let through or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// Allowed by a rule or the default.
    Allowed,
    /// Allowed after a human approved it (or under a grant).
    Approved,
    /// Waiting for a human.
    Held,
    Blocked,
}

/// What made a policy reload happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadTrigger {
    Sighup,
    FileChange,
}

/// What happened.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    DaemonStarted {
        instance: String,
        pid: u32,
        version: &'static str,
        adopted_pins: bool,
    },
    DaemonStopped {
        instance: String,
        reason: String,
    },
    SessionStarted {
        session_id: String,
        identity: Box<FlowIdentity>,
        /// The session-level decision.
        decision: DecisionView,
    },
    SessionEnded {
        session_id: String,
        target: String,
        outcome: SessionOutcome,
        bytes_client_to_server: u64,
        bytes_server_to_client: u64,
        duration_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A statement or command that was blocked (sessions blocked at the
    /// start end with outcome `blocked` instead).
    RequestBlocked {
        session_id: String,
        target: String,
        request: RequestView,
        rule: String,
        message: String,
    },
    /// A request is held until a human decides.
    ApprovalRequested {
        session_id: String,
        approval: Box<Pending>,
    },
    /// A held request was approved, denied, expired or withdrawn; `by` is
    /// the approver as the kernel identified the caller.
    ApprovalDecided {
        session_id: String,
        approval: Box<Decided>,
    },
    /// A SQL statement that ran. `text` is absent at recording level metadata.
    Statement {
        session_id: String,
        target: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        classes: Vec<StatementClass>,
        decision: DecisionView,
        #[serde(skip_serializing_if = "Option::is_none")]
        rows: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        duration_ms: u64,
    },
    /// An SSH request that ran. `text` is absent at recording level metadata.
    Command {
        session_id: String,
        target: String,
        command_kind: CommandKind,
        #[serde(skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        decision: DecisionView,
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_status: Option<u32>,
        /// The signal that ended the command, when one did.
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_signal: Option<String>,
        duration_ms: u64,
        /// A command line reconstructed from a shell's PTY input: best
        /// effort, not itself decided.
        reconstructed: bool,
        /// The terminal recording (path, size, SHA-256), at every
        /// recording level.
        #[serde(skip_serializing_if = "Option::is_none")]
        recording: Option<RecordingRef>,
    },
    /// Values masked in one statement's results: counts only, never values.
    Masked {
        session_id: String,
        target: String,
        rule: String,
        counts: Vec<(String, u64)>,
    },
    /// A protocol error from one side of a proxied session.
    ProtocolError {
        session_id: String,
        target: String,
        side: Side,
        message: String,
    },
    /// A new policy is in force for new requests.
    PolicyReloaded {
        path: String,
        trigger: ReloadTrigger,
        targets: usize,
        rules: usize,
    },
    /// A changed policy file was invalid; the previous policy stays in force.
    PolicyReloadFailed {
        path: String,
        trigger: ReloadTrigger,
        error: String,
    },
    /// The kernel dropped process lineage records (its ring was full);
    /// identities of those processes come from /proc instead.
    ProcessRecordsLost {
        lost: u64,
        total: u64,
    },
    /// An accepted connection the kernel recorded no redirect for: refused,
    /// never relayed blindly.
    ConnectionRefused {
        listener: SocketAddr,
        peer: SocketAddr,
        reason: String,
    },
    /// At start, the audit log held records written after its last
    /// checkpoint (the daemon did not stop cleanly); a checkpoint now seals them.
    AuditTailSealed {
        from_seq: u64,
        to_seq: u64,
    },
    /// At start, the last line of the audit log was incomplete (the daemon
    /// died while writing it) and was cut off; its seq is reused.
    AuditPartialRecordDropped {
        segment: String,
        bytes: u64,
    },
    /// At start, the audit log ended before the seq its latest checkpoint
    /// file names: records were removed behind a checkpoint.
    AuditTruncationDetected {
        checkpoint_seq: u64,
        last_seq: u64,
    },
    /// A webhook receiver answered 410 Gone: the endpoint (shown without
    /// credentials or query) gets no more events, also after a restart.
    WebhookDisabled {
        endpoint: String,
        status: u16,
    },
    /// A webhook endpoint's spool was full: its `dropped` oldest
    /// undelivered events were discarded.
    WebhookSpoolOverflow {
        endpoint: String,
        dropped: u64,
    },
}

impl Event {
    /// An event of `kind` stamped now.
    pub fn now(host: &str, kind: EventKind) -> Event {
        Event {
            id: uuid::Uuid::now_v7().to_string(),
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            host: host.to_string(),
            kind,
        }
    }
}
