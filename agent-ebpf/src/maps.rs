//! Every map of the object, named once. Maps are pinned by name so a restarted
//! daemon adopts them (the loader sets the directory).

use agent_common::{
    config::AgentConfig,
    flow::{FLOWS_MAX, FlowInfo, PeerKey},
    process::{
        PENDING_EXECS_MAX, PROC_EVENTS_BYTES, PendingArgv, SCOPES_MAX, ScopeEntry,
        TracepointOffsets,
    },
    target::{TARGETS_MAX, TargetMatch, TargetValue},
};
use aya_ebpf::{
    macros::map,
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};

#[map]
pub static TARGETS: LpmTrie<TargetMatch, TargetValue> = LpmTrie::pinned(TARGETS_MAX, 0);

#[map]
pub static FLOWS: LruHashMap<u64, FlowInfo> = LruHashMap::pinned(FLOWS_MAX, 0);

#[map]
pub static PEERS: LruHashMap<PeerKey, u64> = LruHashMap::pinned(FLOWS_MAX, 0);

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
