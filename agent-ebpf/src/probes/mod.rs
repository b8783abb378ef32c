//! One file per hook.

mod connect;
mod flows;
mod process;
mod release;
mod sockops;

/// Why a probe gave up. `Copy` so it costs nothing to return.
#[derive(Clone, Copy)]
pub enum ProbeError {
    /// No listener for the target's protocol.
    NoListener,
    /// A map update failed.
    MapUpdate,
    /// A hash map is full (its update failed with E2BIG).
    MapFull,
    /// The connecting cgroup holds its quota of flows.
    Quota,
    /// The connect came from another network namespace than the daemon's.
    OtherNetns,
    /// A map had no entry where one must be.
    MapLookup,
    /// Reading tracepoint or user memory failed.
    Read,
    /// The ring buffer is full: the event is lost (the daemon falls back to /proc).
    RingFull,
}
