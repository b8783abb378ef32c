//! Every map of the object, named once. Maps are pinned by name so a restarted
//! daemon adopts them (the loader sets the directory).

use agent_common::{
    config::AgentConfig,
    flow::{FLOWS_MAX, FlowInfo, PeerKey},
    target::{TARGETS_MAX, TargetMatch, TargetValue},
};
use aya_ebpf::{
    macros::map,
    maps::{Array, LpmTrie, LruHashMap},
};

#[map]
pub static TARGETS: LpmTrie<TargetMatch, TargetValue> = LpmTrie::pinned(TARGETS_MAX, 0);

#[map]
pub static FLOWS: LruHashMap<u64, FlowInfo> = LruHashMap::pinned(FLOWS_MAX, 0);

#[map]
pub static PEERS: LruHashMap<PeerKey, u64> = LruHashMap::pinned(FLOWS_MAX, 0);

#[map]
pub static CONFIG: Array<AgentConfig> = Array::pinned(1, 0);
