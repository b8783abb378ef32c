//! Typed access to the maps the daemon uses at run time.

use std::net::{IpAddr, SocketAddr};

use agent_common::{
    config::AgentConfig,
    flow::{FlowInfo, PeerKey, RefusalKey, RefusalRecord, refusal},
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
    refused_by_cgroup: HashMap<MapData, RefusalKey, RefusalRecord>,
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
            refused_by_cgroup: HashMap::try_from(take(names::REFUSED_BY_CGROUP)?)
                .map_err(map_err(names::REFUSED_BY_CGROUP))?,
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
    /// died with it) or older than `ttl_ns` (a connect that never completed
    /// on a socket still open), both on the `bpf_ktime_get_ns` clock; then
    /// PEERS entries whose flow is gone. Flows of sockets that went away
    /// without reaching the daemon are removed by the kernel already
    /// (`sock_release`); the per-cgroup counts are the kernel's alone and
    /// are not touched. Returns (flows, peers) removed.
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

    /// The per-cgroup refusal records (see [`CgroupRefusal`]).
    ///
    /// # Errors
    /// The map cannot be read.
    pub fn cgroup_refusals(&self) -> Result<Vec<CgroupRefusal>, KernelError> {
        self.refused_by_cgroup
            .iter()
            .map(|r| {
                r.map(|(key, rec)| CgroupRefusal {
                    cgroup_id: key.cgroup_id,
                    slot: key.reason,
                    count: rec.count,
                    uid: rec.uid,
                    tgid: rec.tgid,
                    comm: comm(&rec.comm),
                })
                .map_err(map_err(names::REFUSED_BY_CGROUP))
            })
            .collect()
    }

    /// Removes a per-cgroup refusal record the daemon has reported (a
    /// refusal counted in between is still in the REFUSALS slot, and is
    /// reported without its cgroup).
    ///
    /// # Errors
    /// The delete failed for another reason than "not found".
    pub fn forget_cgroup_refusal(&mut self, cgroup_id: u64, slot: u32) -> Result<(), KernelError> {
        let key = RefusalKey {
            cgroup_id,
            reason: slot,
            _pad: 0,
        };
        match self.refused_by_cgroup.remove(&key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err(names::REFUSED_BY_CGROUP)(e)),
        }
    }

    /// Takes (looks up and deletes) the flow of the connection whose client
    /// side is `peer`. `None` if the kernel recorded no redirect for it.
    /// The client's socket stays counted against its cgroup until it is
    /// released (the kernel's FLOW_OWNERS, not touched here).
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

/// Refusals of one cgroup for one reason, as the kernel counted them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupRefusal {
    /// The cgroup (v2) id: its directory's inode number.
    pub cgroup_id: u64,
    /// An `agent_common::flow::refusal` slot.
    pub slot: u32,
    /// Since the kernel made the record.
    pub count: u64,
    /// The last refused connect's uid, process and command name.
    pub uid: u32,
    pub tgid: u32,
    pub comm: String,
}

fn comm(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(raw.get(..end).unwrap_or_default()).into_owned()
}

/// The cookie of this process's network namespace (`SO_NETNS_COOKIE`,
/// Linux 5.14+), which the kernel side compares connects against; `None`
/// where the kernel cannot tell it.
#[allow(unsafe_code)]
pub fn netns_cookie() -> Option<u64> {
    use std::os::fd::AsRawFd as _;
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: the socket is open; cookie and len are valid for writes of len bytes.
    let r = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            std::ptr::from_mut(&mut cookie).cast(),
            &mut len,
        )
    };
    (r == 0 && cookie != 0).then_some(cookie)
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
    fn comm_stops_at_the_first_nul() {
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(b"curl");
        assert_eq!(comm(&raw), "curl");
        assert_eq!(comm(&[b'x'; 16]), "x".repeat(16));
    }

    #[test]
    fn this_process_has_a_network_namespace_cookie() {
        // Linux 5.14+; the machines this runs on have 6.x.
        assert!(netns_cookie().is_some());
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
    }
}
