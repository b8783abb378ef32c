//! Pinned maps are adopted by name; one pinned by a build whose key or
//! value layout differs would be misread by this build's programs (or
//! rejected by the verifier with an obscure message). Checked before
//! loading, with a clear error that says how to start afresh.

use std::{mem::size_of, path::Path};

use agent_common::{
    config::AgentConfig,
    flow::{FlowInfo, PeerKey, RefusalKey, RefusalRecord},
    maps as names,
    process::{PendingArgv, ScopeEntry, TracepointOffsets},
    target::{TargetMatch, TargetValue},
};
use aya::maps::MapInfo;

use super::KernelError;

/// (map, key size, value size) of every pinned map with a fixed layout
/// (the ring buffer has none). LPM trie keys carry a u32 prefix length.
fn expected() -> [(&'static str, usize, usize); 13] {
    [
        (
            names::TARGETS,
            4 + size_of::<TargetMatch>(),
            size_of::<TargetValue>(),
        ),
        (names::FLOWS, 8, size_of::<FlowInfo>()),
        (names::PEERS, size_of::<PeerKey>(), 8),
        (names::FLOW_OWNERS, 8, 8),
        (names::FLOW_COUNTS, 8, 8),
        (
            names::REFUSED_BY_CGROUP,
            size_of::<RefusalKey>(),
            size_of::<RefusalRecord>(),
        ),
        (names::CONFIG, 4, size_of::<AgentConfig>()),
        (names::SCOPES, 4, size_of::<ScopeEntry>()),
        (names::TP_OFFSETS, 4, size_of::<TracepointOffsets>()),
        (names::PENDING_ARGV, 4, size_of::<PendingArgv>()),
        (names::LOST_EVENTS, 4, 8),
        (names::ARGV_SCRATCH, 4, size_of::<PendingArgv>()),
        (names::REFUSALS, 4, 8),
    ]
}

/// Checks each map pinned in `maps_dir` against this build's layout.
///
/// # Errors
/// [`KernelError::PinnedLayout`] for the first that differs or is not a map.
pub(super) fn check(maps_dir: &Path, instance: &str) -> Result<(), KernelError> {
    for (name, key, value) in expected() {
        let path = maps_dir.join(name);
        if path.symlink_metadata().is_err() {
            continue;
        }
        let mismatch = |found: String| KernelError::PinnedLayout {
            path: path.clone(),
            found,
            expected: format!("key {key} bytes, value {value} bytes"),
            instance: instance.to_string(),
        };
        let info = MapInfo::from_pin(&path).map_err(|e| mismatch(format!("not a map ({e})")))?;
        let (k, v) = (info.key_size() as usize, info.value_size() as usize);
        if (k, v) != (key, value) {
            return Err(mismatch(format!("key {k} bytes, value {v} bytes")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pinned_map_with_a_layout_is_listed() {
        let listed: Vec<&str> = expected().iter().map(|e| e.0).collect();
        for name in [
            names::TARGETS,
            names::FLOWS,
            names::PEERS,
            names::FLOW_OWNERS,
            names::FLOW_COUNTS,
            names::REFUSED_BY_CGROUP,
            names::CONFIG,
            names::REFUSALS,
        ] {
            assert!(listed.contains(&name), "{name}");
        }
        // The LPM key as the kernel sizes it: prefix length + port + address.
        assert_eq!(expected()[0].1, 22);
    }
}
