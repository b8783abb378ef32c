//! Where the registry records what happens to held requests. The daemon
//! gives it the audit log's event sink (audit implements the trait), so
//! approval names no audit type and audit events can carry approval's.

use std::{future::Future, pin::Pin};

use super::{Decided, Pending};

/// The future of one recording.
pub type Recording<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Records held requests and their ends. A recording waits while the log
/// is behind and is never dropped silently (what cannot be written goes to
/// the daemon's own log).
pub trait ApprovalRecorder: Send + Sync + 'static {
    /// `pending` is now held.
    fn requested(&self, pending: Pending) -> Recording<'_>;
    /// A held request was approved, denied, expired or withdrawn.
    fn decided(&self, decided: Decided) -> Recording<'_>;
}
