//! The CONFIG map: what the eBPF programs need to know about the daemon.

use crate::target::PROTOCOL_SLOTS;

/// Redirect even while the daemon is down: connects are refused (fail closed).
pub const FAILURE_CLOSED: u32 = 0;
/// Skip the redirect while the daemon's heartbeat is stale (fail open).
pub const FAILURE_OPEN: u32 = 1;

/// The daemon's own connects pass unredirected only while its heartbeat is
/// younger than this. After a SIGKILL its tgid stays in CONFIG; a process
/// that is later given the same pid must not slip past interception.
/// Generous, because a daemon whose heartbeat stalls would otherwise have
/// its own upstream connects redirected to itself (it then refuses them).
pub const OWN_CONNECTS_FRESH_NS: u64 = 15_000_000_000;

/// The single entry of the CONFIG array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// The daemon's tgid: its own connects are never redirected.
    pub daemon_tgid: u32,
    /// [`FAILURE_CLOSED`] or [`FAILURE_OPEN`].
    pub failure_mode: u32,
    /// `CLOCK_MONOTONIC` nanoseconds of the daemon's last heartbeat.
    pub heartbeat_ns: u64,
    /// In fail-open mode, a heartbeat older than this means the daemon is down.
    pub stale_after_ns: u64,
    /// IPv4 listener port (on 127.0.0.1) per protocol, host order; 0 = none.
    pub listen_port4: [u16; PROTOCOL_SLOTS],
    /// IPv6 listener port (on ::1) per protocol, host order; 0 = none.
    pub listen_port6: [u16; PROTOCOL_SLOTS],
    /// Cookie of the daemon's network namespace (`SO_NETNS_COOKIE`): a
    /// connect from another namespace cannot reach the listeners, so it is
    /// refused without recording a flow. 0: not checked.
    pub netns_cookie: u64,
    /// Redirected sockets one cgroup may hold open at once; further
    /// connects from it are refused. 0: no limit.
    pub flow_quota: u32,
    pub _pad: u32,
}
crate::assert_layout!(AgentConfig, size = 56, align = 8);
