//! Every map of the object, named once. Maps are pinned by name so a restarted
//! daemon adopts them (the loader sets the directory).

use agent_common::{
    config::AgentConfig,
    flow::{
        FLOWS_MAX, FlowInfo, PeerKey, REFUSED_BY_CGROUP_MAX, RefusalKey, RefusalRecord, refusal,
    },
    process::{
        PENDING_EXECS_MAX, PROC_EVENTS_BYTES, PendingArgv, SCOPES_MAX, ScopeEntry,
        TracepointOffsets,
    },
    target::{TARGETS_MAX, TargetMatch, TargetValue},
};
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};

#[map]
pub static TARGETS: LpmTrie<TargetMatch, TargetValue> = LpmTrie::pinned(TARGETS_MAX, 0);

// Plain hash maps: when full, an insert fails and the connect is refused
// and counted; an LRU map would silently evict another pending flow.
#[map]
pub static FLOWS: HashMap<u64, FlowInfo> = HashMap::pinned(FLOWS_MAX, 0);

#[map]
pub static PEERS: HashMap<PeerKey, u64> = HashMap::pinned(FLOWS_MAX, 0);

/// Redirected sockets still open -> their cgroup (sized like FLOWS).
#[map]
pub static FLOW_OWNERS: HashMap<u64, u64> = HashMap::pinned(FLOWS_MAX, 0);

/// Redirected sockets open per cgroup (sized like FLOWS by the loader:
/// every entry with a positive count stands for at least one socket).
#[map]
pub static FLOW_COUNTS: HashMap<u64, i64> = HashMap::pinned(FLOWS_MAX, 0);

#[map]
pub static REFUSED_BY_CGROUP: HashMap<RefusalKey, RefusalRecord> =
    HashMap::pinned(REFUSED_BY_CGROUP_MAX, 0);

#[map]
pub static CONFIG: Array<AgentConfig> = Array::pinned(1, 0);

#[map]
pub static PROC_EVENTS: RingBuf = RingBuf::pinned(PROC_EVENTS_BYTES, 0);

#[map]
pub static SCOPES: Array<ScopeEntry> = Array::pinned(SCOPES_MAX, 0);

#[map]
pub static TP_OFFSETS: Array<TracepointOffsets> = Array::pinned(1, 0);

#[map]
pub static PENDING_ARGV: LruHashMap<u32, PendingArgv> = LruHashMap::pinned(PENDING_EXECS_MAX, 0);

#[map]
pub static LOST_EVENTS: PerCpuArray<u64> = PerCpuArray::pinned(1, 0);

#[map]
pub static ARGV_SCRATCH: PerCpuArray<PendingArgv> = PerCpuArray::pinned(1, 0);

#[map]
pub static REFUSALS: PerCpuArray<u64> = PerCpuArray::pinned(refusal::SLOTS, 0);

/// Counts one connect that could not be redirected, in its `refusal` slot.
pub fn count_refusal(slot: u32) {
    if let Some(n) = REFUSALS.get_ptr_mut(slot) {
        // SAFETY: the pointer is to this CPU's slot, valid for the program run;
        // per-CPU, so no other writer races us.
        unsafe { *n += 1 };
    }
}

/// Who was refused: the connecting task's cgroup and identity.
pub struct Refused {
    pub cgroup_id: u64,
    pub uid: u32,
    pub tgid: u32,
    pub comm: [u8; 16],
}

/// Counts one refused connect by cgroup (for the daemon's report), then
/// in its `refusal` slot. The per-cgroup record is written first: the
/// daemon reads the slots first, so every refusal it sees in a slot is
/// already in a record unless that map was full.
pub fn count_refusal_of(slot: u32, who: &Refused) {
    let key = RefusalKey {
        cgroup_id: who.cgroup_id,
        reason: slot,
        _pad: 0,
    };
    match REFUSED_BY_CGROUP.get_ptr_mut(key) {
        Some(r) => bump(r, who),
        None => {
            let first = RefusalRecord {
                count: 1,
                uid: who.uid,
                tgid: who.tgid,
                comm: who.comm,
            };
            // Fails when another CPU made the entry first (then bump it),
            // or when the map is full (then only the slot counts it).
            if REFUSED_BY_CGROUP.insert(key, first, BPF_NOEXIST).is_err()
                && let Some(r) = REFUSED_BY_CGROUP.get_ptr_mut(key)
            {
                bump(r, who);
            }
        }
    }
    count_refusal(slot);
}

fn bump(r: *mut RefusalRecord, who: &Refused) {
    // SAFETY: r points into a map value, valid for the program run; the
    // count is shared between CPUs, so it is added to atomically; the last
    // refused identity is informative and may be torn.
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*r).count, 1);
        (*r).uid = who.uid;
        (*r).tgid = who.tgid;
        (*r).comm = who.comm;
    }
}

/// `BPF_NOEXIST`: insert only if the key is absent.
pub const BPF_NOEXIST: u64 = 1;

/// Adds `delta` to the flow count of `cgroup_id` (atomically: connects and
/// releases of one cgroup run on several CPUs). The entry must exist.
pub fn add_flow_count(count: *mut i64, delta: i64) {
    // SAFETY: count points into a FLOW_COUNTS value, valid for the program run.
    unsafe { atomic_xadd::<i64, i64, { AtomicOrdering::Relaxed }>(count, delta) };
}
