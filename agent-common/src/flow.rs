//! The FLOWS and PEERS maps: what connect4/6 saw about a redirected connect,
//! and how the daemon finds it again from an accepted socket's peer address;
//! the per-cgroup flow counts that bound what one cgroup can hold, and the
//! per-cgroup refusal records the daemon reports.

/// Default number of flows waiting to be accepted, and of redirected
/// sockets open at once (FLOWS, PEERS, FLOW_OWNERS and FLOW_COUNTS size;
/// `interlock run --flow-table-entries` sets it when the maps are created).
/// A flow whose socket goes away before it reached the daemon is removed
/// at once (`cgroup/sock_release`). When a map is full a connect to a
/// target is refused (fail closed) or, in fail-open mode, let through, and
/// counted in [`REFUSALS`](crate::maps::REFUSALS).
pub const FLOWS_MAX: u32 = 65536;

/// Entries of REFUSED_BY_CGROUP: (cgroup, reason) pairs with refusals the
/// daemon has not yet reported and cleared. When full, refusals are still
/// counted in REFUSALS, only without their cgroup.
pub const REFUSED_BY_CGROUP_MAX: u32 = 4096;

/// Slots of the REFUSALS per-CPU array: why connect4/6 or
/// sock_ops could not redirect a connect to a target.
pub mod refusal {
    /// FLOWS was full: the connect was refused (fail-closed mode).
    pub const FLOWS_FULL: u32 = 0;
    /// FLOWS was full: the connect went direct (fail-open mode).
    pub const FLOWS_FULL_PASSED: u32 = 1;
    /// No daemon listener for the target's protocol: refused.
    pub const NO_LISTENER: u32 = 2;
    /// Another FLOWS update error: refused.
    pub const MAP_ERROR: u32 = 3;
    /// PEERS was full at sock_ops: the daemon will refuse the connection
    /// as one without a flow.
    pub const PEERS_FULL: u32 = 4;
    /// The connecting cgroup already holds its quota of flows: refused
    /// (in both failure modes: passing it would let a job buy a bypass).
    pub const FLOW_QUOTA: u32 = 5;
    /// The connect came from another network namespace than the daemon's,
    /// where the redirect cannot reach it: refused, no flow recorded.
    pub const OTHER_NETNS: u32 = 6;
    /// Number of slots.
    pub const SLOTS: u32 = 8;
}

/// Recorded by connect4/connect6 at redirect time, keyed by socket cookie.
/// Identity is captured here because sock_ops runs in softirq context.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowInfo {
    /// Original destination address, IPv6 form (IPv4 v4-mapped), network order.
    pub orig_addr: [u8; 16],
    /// Original destination port, host order.
    pub orig_port: u16,
    /// Address family of the connecting socket (AF_INET = 2, AF_INET6 = 10).
    pub family: u16,
    pub tgid: u32,
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Index of the matched target.
    pub target_id: u32,
    pub cgroup_id: u64,
    /// `bpf_ktime_get_ns()` at connect.
    pub ktime_ns: u64,
    /// The task's comm, NUL padded.
    pub comm: [u8; 16],
}
crate::assert_layout!(FlowInfo, size = 72, align = 8);

/// Client side address of a redirected connection as the daemon's listener
/// sees it: IPv6 form (IPv4 v4-mapped) and port in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerKey {
    pub addr: [u8; 16],
    pub port: u16,
    pub _pad: [u8; 2],
}
crate::assert_layout!(PeerKey, size = 20, align = 2);

/// Key of REFUSED_BY_CGROUP: which cgroup was refused, and why (a
/// [`refusal`] slot).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RefusalKey {
    pub cgroup_id: u64,
    pub reason: u32,
    pub _pad: u32,
}
crate::assert_layout!(RefusalKey, size = 16, align = 8);

/// Value of REFUSED_BY_CGROUP: how many connects of that cgroup were
/// refused for that reason since the entry was made, and who tried last.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusalRecord {
    /// Incremented atomically by the programs.
    pub count: u64,
    /// The last refused connect's uid, tgid and comm.
    pub uid: u32,
    pub tgid: u32,
    pub comm: [u8; 16],
}
crate::assert_layout!(RefusalRecord, size = 32, align = 8);
