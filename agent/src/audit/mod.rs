//! The event model and the event log. Protocol handlers produce [`Event`]s
//! through an [`EventSink`]; the log task appends them as JSON lines to
//! `<state dir>/events.jsonl`. (The hash chain, signed checkpoints and
//! webhook sinks are the audit issue's; they grow behind this same face.)

mod event;
mod log;

pub use event::{Event, EventKind, SessionOutcome};
pub use log::{EventLog, EventSink, LogError};
