//! Typed events. Every field is safe to store: identities carry only
//! allow-listed CI variables, and no credential or payload byte is ever a field.

use std::{net::SocketAddr, time::SystemTime};

use serde::{Deserialize, Serialize};

use super::ocsf::Ocsf;
use crate::{
    approval::{Decided, Pending, RequestView},
    gate::{ClientLeg, RecordingRef, Side},
    identity::FlowIdentity,
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

/// The wire form read back from a record: the same fields; `ocsf`, `seq`,
/// `prev` and `hash` are ignored.
#[derive(Deserialize)]
struct WireIn {
    id: String,
    time: String,
    host: String,
    #[serde(flatten)]
    kind: EventKind,
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = WireIn::deserialize(d)?;
        Ok(Event {
            id: w.id,
            time: w.time,
            host: w.host,
            kind: w.kind,
        })
    }
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

/// Why the kernel could not redirect a connect to a target
/// (`agent_common::flow::refusal`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// FLOWS was full; the connect failed with EPERM (fail closed).
    FlowTableFull,
    /// FLOWS was full; in fail-open mode the connect went direct, unrecorded.
    FlowTableFullPassed,
    /// No daemon listener for the target's protocol; refused.
    NoListener,
    /// Another kernel map error; refused.
    MapError,
    /// PEERS was full when the connection was established; the daemon
    /// refuses such a connection as one without a flow.
    PeerTableFull,
    /// The connecting cgroup already held its quota of the flow table
    /// (`--flow-quota`); refused in both failure modes.
    FlowQuota,
    /// The connect came from another network namespace than the daemon's
    /// (where the redirect cannot reach it); refused.
    OtherNetns,
}

impl RefusalReason {
    /// The reason counted in `slot` of the kernel's REFUSALS map.
    pub fn of_slot(slot: u32) -> Option<RefusalReason> {
        use agent_common::flow::refusal;
        match slot {
            refusal::FLOWS_FULL => Some(RefusalReason::FlowTableFull),
            refusal::FLOWS_FULL_PASSED => Some(RefusalReason::FlowTableFullPassed),
            refusal::NO_LISTENER => Some(RefusalReason::NoListener),
            refusal::MAP_ERROR => Some(RefusalReason::MapError),
            refusal::PEERS_FULL => Some(RefusalReason::PeerTableFull),
            refusal::FLOW_QUOTA => Some(RefusalReason::FlowQuota),
            refusal::OTHER_NETNS => Some(RefusalReason::OtherNetns),
            _ => None,
        }
    }
}

/// Who a kernel refusal hit: the connecting cgroup and the last process
/// refused (a count covers many connects; uid, pid and comm are the last).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedBy {
    pub cgroup_id: u64,
    /// The cgroup's path (as in /proc/<pid>/cgroup); absent if it is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    pub uid: u32,
    pub pid: u32,
    pub comm: String,
}

/// What the daemon found changed in its kernel side (its pins and links).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelFinding {
    /// A link's pin was removed; the daemon still held the link and re-pinned it.
    LinkUnpinned,
    /// Something else was pinned where a link's pin was.
    LinkPinReplaced,
    /// A link was detached from its cgroup: interception was off there.
    LinkDetached,
    /// A link was made to run another program.
    LinkProgramReplaced,
    /// An adopted link ran another build's program (after an upgrade, or
    /// tampering while the daemon was down): replaced with this build's.
    LinkFromOtherBuild,
    /// A map's pin was removed.
    MapUnpinned,
    /// Something else was pinned where a map's pin was.
    MapPinReplaced,
    /// The pins this instance had earlier in this boot were gone at start:
    /// intercepted connects went direct in between.
    PinsVanished,
}

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionView {
    pub action: Disposition,
    pub rule: Option<String>,
}

/// How a request was let through or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadTrigger {
    Sighup,
    FileChange,
}

/// What happened. Fields added after the first release are
/// `#[serde(default)]`, so records of older versions still read back.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    DaemonStarted {
        instance: String,
        pid: u32,
        version: String,
        adopted_pins: bool,
        /// The daemon's parent process (0: unknown).
        #[serde(default)]
        ppid: u32,
        /// Real uid the daemon runs as.
        #[serde(default)]
        uid: u32,
        /// The daemon's executable.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exe: Option<String>,
        /// Its command line.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        argv: Vec<String>,
    },
    DaemonStopped {
        instance: String,
        reason: String,
        /// The daemon's pid (0 in records of older versions).
        #[serde(default)]
        pid: u32,
    },
    SessionStarted {
        session_id: String,
        identity: Box<FlowIdentity>,
        /// The session-level decision.
        decision: DecisionView,
        /// PostgreSQL: how the client's leg to interlock is protected.
        #[serde(skip_serializing_if = "Option::is_none")]
        client_leg: Option<ClientLeg>,
        /// PostgreSQL: why the client's request for TLS was answered 'N'.
        #[serde(skip_serializing_if = "Option::is_none")]
        client_tls_unavailable: Option<String>,
        /// SSH: the login, when the session was decided at authentication
        /// (job tokens, rules on `ssh_user`); else on `session_ended`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ssh_login: Option<crate::policy::SshLogin>,
    },
    SessionEnded {
        session_id: String,
        target: String,
        outcome: SessionOutcome,
        bytes_client_to_server: u64,
        bytes_server_to_client: u64,
        duration_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// SSH: the user the client asked for and the one interlock logged
        /// in upstream as (absent when refused).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ssh_login: Option<crate::policy::SshLogin>,
        /// SSH: environment variables passed to the server (`env` requests
        /// `upstream.env` allowed), `NAME=value` at recording level full,
        /// `NAME` at metadata. Refused ones are `request_blocked` events.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ssh_env: Vec<String>,
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
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// Bind parameters with value detectors applied; absent at
        /// recording level metadata and for statements without any.
        #[serde(skip_serializing_if = "Option::is_none")]
        params: Option<Vec<Option<String>>>,
        classes: Vec<StatementClass>,
        /// Why interlock could not read what it does (class `opaque`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        opaque: Option<String>,
        decision: DecisionView,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rows: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        duration_ms: u64,
    },
    /// An SSH request that ran. `text` is absent at recording level metadata.
    Command {
        session_id: String,
        target: String,
        command_kind: CommandKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        decision: DecisionView,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_status: Option<u32>,
        /// The signal that ended the command, when one did.
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_signal: Option<String>,
        duration_ms: u64,
        /// A command line reconstructed from a shell's PTY input: best
        /// effort, not itself decided.
        #[serde(default)]
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
    ProcessRecordsLost { lost: u64, total: u64 },
    /// The kernel could not redirect connects to targets (e.g. its flow
    /// table was full): `count` of them since the previous report, refused
    /// (or, for `flow_table_full_passed` in fail-open mode, let through).
    ConnectsRefused {
        reason: RefusalReason,
        count: u64,
        /// Since the kernel maps were created (they outlive daemon
        /// restarts); with `by`, that cgroup's total for this reason.
        total: u64,
        /// The cgroup (and last process) refused; absent when the kernel
        /// could not record it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<Box<RefusedBy>>,
    },
    /// The daemon's pins or links were removed, replaced or detached
    /// (only root can); `repaired`: put back from the daemon's own handles.
    KernelIntegrity {
        finding: KernelFinding,
        path: String,
        detail: String,
        repaired: bool,
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
    AuditTailSealed { from_seq: u64, to_seq: u64 },
    /// At start, the last line of the audit log was incomplete (the daemon
    /// died while writing it) and was cut off; its seq is reused.
    AuditPartialRecordDropped { segment: String, bytes: u64 },
    /// At start, the audit log ended before the seq its latest checkpoint
    /// file names: records were removed behind a checkpoint.
    AuditTruncationDetected { checkpoint_seq: u64, last_seq: u64 },
    /// The audit log could not be written from `since` until this record
    /// (`error`: the last failure). Meanwhile new sessions and requests
    /// were refused (counted here) and the `records_held` records of
    /// requests admitted before the failure waited in memory; they are
    /// the records right before this one.
    AuditWriteFailed {
        since: String,
        error: String,
        records_held: u64,
        refused_sessions: u64,
        refused_requests: u64,
    },
    /// A webhook receiver answered 410 Gone: the endpoint (shown without
    /// credentials or query) gets no more events, also after a restart.
    WebhookDisabled { endpoint: String, status: u16 },
    /// A webhook endpoint's spool was full: its `dropped` oldest
    /// undelivered events were discarded (`total`: since the spool was made).
    WebhookSpoolOverflow {
        endpoint: String,
        dropped: u64,
        #[serde(default)]
        total: u64,
    },
    /// Sent only by `interlock webhook test`, straight to the endpoint;
    /// never in the audit log.
    WebhookTest { endpoint: String },
}

impl EventKind {
    /// The session this event belongs to, if any.
    pub fn session_id(&self) -> Option<&str> {
        use EventKind as K;
        match self {
            K::SessionStarted { session_id, .. }
            | K::SessionEnded { session_id, .. }
            | K::RequestBlocked { session_id, .. }
            | K::ApprovalRequested { session_id, .. }
            | K::ApprovalDecided { session_id, .. }
            | K::Statement { session_id, .. }
            | K::Command { session_id, .. }
            | K::Masked { session_id, .. }
            | K::ProtocolError { session_id, .. } => Some(session_id),
            K::DaemonStarted { .. }
            | K::DaemonStopped { .. }
            | K::PolicyReloaded { .. }
            | K::PolicyReloadFailed { .. }
            | K::ProcessRecordsLost { .. }
            | K::ConnectionRefused { .. }
            | K::ConnectsRefused { .. }
            | K::KernelIntegrity { .. }
            | K::AuditTailSealed { .. }
            | K::AuditPartialRecordDropped { .. }
            | K::AuditTruncationDetected { .. }
            | K::AuditWriteFailed { .. }
            | K::WebhookDisabled { .. }
            | K::WebhookSpoolOverflow { .. }
            | K::WebhookTest { .. } => None,
        }
    }
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
