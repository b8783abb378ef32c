//! Every map of the object, named once. Maps are pinned by name so a restarted
//! daemon adopts them (the loader sets the directory).

use agent_common::{
    config::AgentConfig,
    flow::{FLOWS_MAX, FlowInfo, PeerKey, refusal},
    process::{
        PENDING_EXECS_MAX, PROC_EVENTS_BYTES, PendingArgv, SCOPES_MAX, ScopeEntry,
        TracepointOffsets,
    },
    target::{TARGETS_MAX, TargetMatch, TargetValue},
};
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
