//! Typed access to the maps the daemon uses at run time.

use std::net::{IpAddr, SocketAddr};

use agent_common::{
    config::AgentConfig,
    flow::{FlowInfo, PeerKey, refusal},
    maps as names,
    target::{TargetMatch, TargetValue},
};
use aya::maps::{
    Array, HashMap, Map, MapData, PerCpuArray,
    lpm_trie::{Key, LpmTrie},
};

use super::KernelError;

/// The maps, taken out of the loaded object.
pub struct KernelMaps {
    targets: LpmTrie<MapData, TargetMatch, TargetValue>,
    flows: HashMap<MapData, u64, FlowInfo>,
    peers: HashMap<MapData, PeerKey, u64>,
    config: Array<MapData, AgentConfig>,
    lost_events: PerCpuArray<MapData, u64>,
    refusals: PerCpuArray<MapData, u64>,
}

/// Connects to targets the kernel could not redirect, by reason, since the
/// maps were created (summed over CPUs). Indexed by `agent_common::flow::refusal`.
pub type Refusals = [u64; refusal::SLOTS as usize];

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> KernelError {
    move |source| KernelError::Map { name, source }
}

impl KernelMaps {
    pub(super) fn take(ebpf: &mut aya::Ebpf) -> Result<KernelMaps, KernelError> {
        let mut take = |name: &'static str| -> Result<Map, KernelError> {
            ebpf.take_map(name).ok_or(KernelError::MissingMap(name))
        };
        Ok(KernelMaps {
            targets: LpmTrie::try_from(take(names::TARGETS)?).map_err(map_err(names::TARGETS))?,
            flows: HashMap::try_from(take(names::FLOWS)?).map_err(map_err(names::FLOWS))?,
            peers: HashMap::try_from(take(names::PEERS)?).map_err(map_err(names::PEERS))?,
            config: Array::try_from(take(names::CONFIG)?).map_err(map_err(names::CONFIG))?,
            lost_events: PerCpuArray::try_from(take(names::LOST_EVENTS)?)
                .map_err(map_err(names::LOST_EVENTS))?,
            refusals: PerCpuArray::try_from(take(names::REFUSALS)?)
                .map_err(map_err(names::REFUSALS))?,
        })
    }

    /// The current config entry (zeroed if the daemon never wrote one).
    ///
    /// # Errors
    /// The map lookup failed.
    pub fn config(&self) -> Result<AgentConfig, KernelError> {
        self.config.get(&0, 0).map_err(map_err(names::CONFIG))
    }

    /// Replaces the config entry.
    ///
    /// # Errors
    /// The map update failed.
    pub fn set_config(&mut self, cfg: &AgentConfig) -> Result<(), KernelError> {
        self.config.set(0, cfg, 0).map_err(map_err(names::CONFIG))
    }

    /// Process records the kernel dropped because the ring was full, since
    /// the maps were created (summed over CPUs).
    ///
    /// # Errors
    /// The map lookup failed.
    pub fn lost_process_records(&self) -> Result<u64, KernelError> {
        let per_cpu = self
            .lost_events
            .get(&0, 0)
            .map_err(map_err(names::LOST_EVENTS))?;
        Ok(per_cpu.iter().fold(0u64, |a, b| a.saturating_add(*b)))
    }

    /// The refusal counters (see [`Refusals`]).
    ///
    /// # Errors
    /// A map lookup failed.
    pub fn refusals(&self) -> Result<Refusals, KernelError> {
        let mut out = [0u64; refusal::SLOTS as usize];
        for (slot, total) in (0u32..).zip(out.iter_mut()) {
            let per_cpu = self
                .refusals
                .get(&slot, 0)
                .map_err(map_err(names::REFUSALS))?;
            *total = per_cpu.iter().fold(0u64, |a, b| a.saturating_add(*b));
        }
        Ok(out)
    }

    /// Removes flows that can no longer be accepted: recorded before
    /// `dead_before_ns` (the listeners of an earlier daemon, whose backlog
    /// died with it) or older than `ttl_ns` (a connect that never completed),
    /// both on the `bpf_ktime_get_ns` clock; then PEERS entries whose flow is
    /// gone. Keeps FLOWS from filling up with connects refused while the
    /// daemon was down. Returns (flows, peers) removed.
    ///
    /// # Errors
    /// Iterating or deleting failed.
    pub fn sweep_flows(
        &mut self,
        dead_before_ns: u64,
        ttl_ns: u64,
    ) -> Result<(usize, usize), KernelError> {
        let now = monotonic_ns();
        let stale: Vec<u64> = self
            .flows
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, f)| f.ktime_ns < dead_before_ns || now.saturating_sub(f.ktime_ns) > ttl_ns)
            .map(|(cookie, _)| cookie)
            .collect();
        for cookie in &stale {
            match self.flows.remove(cookie) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(names::FLOWS)(e)),
            }
        }
        let orphans: Vec<PeerKey> = self
            .peers
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, cookie)| {
                matches!(
                    self.flows.get(cookie, 0),
                    Err(aya::maps::MapError::KeyNotFound)
                )
            })
            .map(|(key, _)| key)
            .collect();
        for key in &orphans {
            match self.peers.remove(key) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(names::PEERS)(e)),
            }
        }
        Ok((stale.len(), orphans.len()))
    }

    /// Takes (looks up and deletes) the flow of the connection whose client
    /// side is `peer`. `None` if the kernel recorded no redirect for it.
    ///
    /// # Errors
    /// A map operation other than "not found" failed.
    pub fn take_flow(&mut self, peer: SocketAddr) -> Result<Option<FlowInfo>, KernelError> {
        let key = peer_key(peer);
        let cookie = match self.peers.get(&key, 0) {
            Ok(c) => c,
            Err(aya::maps::MapError::KeyNotFound) => return Ok(None),
            Err(e) => return Err(map_err(names::PEERS)(e)),
        };
        let _ = self.peers.remove(&key);
        let flow = match self.flows.get(&cookie, 0) {
            Ok(f) => f,
            Err(aya::maps::MapError::KeyNotFound) => return Ok(None),
            Err(e) => return Err(map_err(names::FLOWS)(e)),
        };
        let _ = self.flows.remove(&cookie);
        Ok(Some(flow))
    }

    /// Makes the TARGETS map hold exactly `entries`: inserts new ones first,
    /// then removes stale ones, so a destination in both sets never passes
    /// unintercepted during the swap.
    ///
    /// # Errors
    /// A map update failed (the map may then hold a mix of old and new).
    pub fn set_targets(
        &mut self,
        entries: &[(u32, TargetMatch, TargetValue)],
    ) -> Result<(), KernelError> {
        for (len, data, value) in entries {
            self.targets
                .insert(&Key::new(*len, *data), value, 0)
                .map_err(map_err(names::TARGETS))?;
        }
        let stale: Vec<Key<TargetMatch>> = self
            .targets
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                let (len, data) = (k.prefix_len(), k.data());
                !entries.iter().any(|(l, d, _)| *l == len && *d == data)
            })
            .collect();
        for k in stale {
            self.targets.remove(&k).map_err(map_err(names::TARGETS))?;
        }
        Ok(())
    }
}

/// The key sock_ops wrote for a client at `peer`: IPv6 form, host-order port.
fn peer_key(peer: SocketAddr) -> PeerKey {
    PeerKey {
        addr: ipv6_bytes(peer.ip()),
        port: peer.port(),
        _pad: [0; 2],
    }
}

/// `ip` in the IPv6 form the kernel side uses (IPv4 as v4-mapped).
pub(crate) fn ipv6_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds, the clock of `bpf_ktime_get_ns`, for the heartbeat.
#[allow(unsafe_code)]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_keys_use_v4_mapped_form() {
        let k = peer_key("127.0.0.1:40000".parse().unwrap());
        assert_eq!(k.addr, agent_common::target::v4_mapped([127, 0, 0, 1]));
        assert_eq!(k.port, 40000);
        let k6 = peer_key("[::1]:5".parse().unwrap());
        assert_eq!(k6.addr[15], 1);
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
    }
}
