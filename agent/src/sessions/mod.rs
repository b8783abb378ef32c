//! Recordings and replay for investigators: each session's recording is
//! the audit records that name its `session_id` (for tcp: start with the
//! flow identity, end with outcome and byte counts; protocol handlers add
//! transcript entries as further events with a `session_id`; SSH shells
//! also have asciicast files under `recordings/`, which replay plays).
//! `interlock sessions list|show` and `interlock replay` read them from the
//! audit segments of a state directory; nothing here writes.

mod commands;
mod error;
mod filter;
mod recording;
mod render;
mod terminal;

pub use commands::{list, replay, show};
pub use error::SessionsError;
pub use filter::Filter;
pub use recording::{Entry, Recording};
