//! The event model and the tamper-evident audit log. Protocol handlers
//! produce [`Event`]s through an [`EventSink`]; the log thread appends each
//! as a hash-chained record to segment files under `<state dir>/audit/`,
//! with checkpoints signed by the host's ed25519 key, and as a plain JSON
//! line to `<state dir>/events.jsonl` (the JSONL sink, rotated by size). [`verify`] checks a log offline.
//! While records cannot be written, [`AuditHealth`] refuses new sessions and
//! requests; nothing admitted is dropped (see `log`).
//! Record format and recovery: docs/design-notes.md, "Audit log".

mod approvals;
mod error;
mod event;
mod health;
mod jsonl;
mod key;
mod log;
mod ocsf;
mod read;
mod reconcile;
mod record;
mod recover;
mod report;
mod segment;
mod sink;
mod verify;
mod writer;

pub use error::LogError;
pub use event::{
    DecisionView, Disposition, Event, EventKind, KernelFinding, RefusalReason, RefusedBy,
    ReloadTrigger, SessionOutcome,
};
pub use health::{Admission, AuditHealth, HealthView, SinkBehind, Unwritable};
pub use jsonl::Rotation;
pub use log::{EventLog, EventSink};
pub use ocsf::test_event_body;
pub use read::read_events;
pub use report::{Problem, Report, Tamper};
pub use sink::AuditSink;
pub use verify::{public_key, verify};
pub use writer::{AUDIT_DIR, AuditOptions, Fsync};

#[cfg(test)]
mod outage_tests;
#[cfg(test)]
mod tests;
