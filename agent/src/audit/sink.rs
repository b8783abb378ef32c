//! What the log hands each event to after its record: a durable queue of
//! a sink (a webhook's spool). Audit knows sinks only through this trait,
//! so `sinks` sits above `audit` and `audit` names no sink type.

/// A sink's durable queue, caught up from the log when it is behind.
/// Errors are text: the log only reports them.
pub trait AuditSink: Send + Sync {
    /// The sink's name in logs and health (the endpoint).
    fn label(&self) -> &str;
    /// Switched off: takes nothing and needs no catching up.
    fn is_disabled(&self) -> bool;
    /// Created by this start (nothing delivered yet): it starts at the log's end.
    fn is_fresh(&self) -> bool;
    /// The seq of the newest event it holds.
    fn last_seq(&self) -> u64;
    /// Records that a fresh queue starts after `seq`.
    fn start_at(&self, seq: u64) -> Result<(), String>;
    /// Appends event `id` (`seq` in the log) with its encoded `body`.
    fn append(&self, id: &str, seq: u64, body: &[u8]) -> Result<u64, String>;
    /// Events it dropped (full) and not yet reported, and all it ever dropped.
    fn unreported(&self) -> (u64, u64);
    /// Records that `n` dropped events were reported (in an overflow event).
    fn mark_reported(&self, n: u64) -> Result<(), String>;
    /// Flushes what it holds to disk.
    fn sync(&self) -> Result<(), String>;
}
