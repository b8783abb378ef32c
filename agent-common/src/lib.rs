//! Types that cross the kernel/user boundary: map keys and values, config and
//! process events. Everything here is `#[repr(C)]`, `Copy`, pointer-free and
//! has its padding written out, so both sides agree byte for byte.
#![no_std]

pub mod config;
pub mod flow;
pub mod process;
pub mod target;

#[cfg(feature = "user")]
mod user;

/// Names of the maps in the eBPF object. The loader names each map once, from here.
pub mod maps {
    /// LPM trie: [`crate::target::TargetMatch`] -> [`crate::target::TargetValue`].
    pub const TARGETS: &str = "TARGETS";
    /// Hash: socket cookie -> [`crate::flow::FlowInfo`], until the daemon
    /// accepts the connection, or the socket goes away without having
    /// reached it (`sock_release`). Not LRU: a full map must refuse new
    /// connects, never silently evict a pending one.
    pub const FLOWS: &str = "FLOWS";
    /// Hash: socket cookie -> cgroup id, for every redirected socket still
    /// open: what `sock_release` gives back to FLOW_COUNTS. Only the
    /// programs write it.
    pub const FLOW_OWNERS: &str = "FLOW_OWNERS";
    /// Hash: cgroup id -> i64 redirected sockets that cgroup holds open
    /// (bounded by `AgentConfig::flow_quota`). Only the programs write it;
    /// signed: a lost race can only undercount.
    pub const FLOW_COUNTS: &str = "FLOW_COUNTS";
    /// Hash: [`crate::flow::RefusalKey`] -> [`crate::flow::RefusalRecord`]:
    /// refusals by cgroup and reason, for the daemon's reports.
    pub const REFUSED_BY_CGROUP: &str = "REFUSED_BY_CGROUP";
    /// Hash: [`crate::flow::PeerKey`] -> socket cookie (as big as FLOWS).
    pub const PEERS: &str = "PEERS";
    /// Array of one [`crate::config::AgentConfig`].
    pub const CONFIG: &str = "CONFIG";
    /// Ring buffer of [`crate::process::ProcessEvent`].
    pub const PROC_EVENTS: &str = "PROC_EVENTS";
    /// Array of [`crate::process::ScopeEntry`]: tracepoints only report tasks under them.
    pub const SCOPES: &str = "SCOPES";
    /// Array of [`crate::process::TracepointOffsets`] (one entry).
    pub const TP_OFFSETS: &str = "TP_OFFSETS";
    /// LRU hash: pid -> [`crate::process::PendingArgv`] between execve entry and exec.
    pub const PENDING_ARGV: &str = "PENDING_ARGV";
    /// Per-CPU scratch [`crate::process::PendingArgv`] (too big for the BPF stack).
    pub const ARGV_SCRATCH: &str = "ARGV_SCRATCH";
    /// Per-CPU u64: process records dropped because PROC_EVENTS was full.
    pub const LOST_EVENTS: &str = "LOST_EVENTS";
    /// Per-CPU u64 per [`crate::flow::refusal`] slot: connects to targets
    /// that could not be redirected, by reason.
    pub const REFUSALS: &str = "REFUSALS";
}

/// Names of the programs in the eBPF object.
pub mod programs {
    pub const CONNECT4: &str = "connect4";
    pub const CONNECT6: &str = "connect6";
    pub const SOCK_OPS: &str = "sockops_established";
    pub const SOCK_RELEASE: &str = "sock_release";
    pub const FORK: &str = "sched_process_fork";
    pub const EXEC: &str = "sched_process_exec";
    pub const EXIT: &str = "sched_process_exit";
    pub const EXECVE: &str = "sys_enter_execve";
}

/// Compile-time layout check for a shared struct.
#[macro_export]
macro_rules! assert_layout {
    ($t:ty, size = $size:expr, align = $align:expr) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $size);
        const _: () = assert!(core::mem::align_of::<$t>() == $align);
    };
}
