//! Turns the policy's targets into TARGETS map entries, resolving host names.
//! A [`Resolver`] serialises every update of the kernel's target map and
//! remembers every address each host resolved to within the last
//! `keep` (round-robin and failover names return a subset per lookup; an
//! address dropped at once would be reachable directly until it came
//! back), so neither a failed lookup, nor a name that rotates its
//! addresses, nor a re-resolution racing a reload can leave one of a
//! target's addresses unintercepted.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use agent_common::target::{
    ADDR_BITS, PORT_BITS, TargetMatch, TargetValue, V4_MAPPED_PREFIX_BITS, v4_mapped,
};
use tracing::warn;

use crate::policy::{AddressMatch, Policy};

/// One TARGETS entry: prefix length in bits (port included), data, value.
pub type Entry = (u32, TargetMatch, TargetValue);

/// Every address a host name resolved to, with when it was last seen, by (host, port).
type Seen = HashMap<(String, u16), HashMap<IpAddr, Instant>>;

/// How long an address a name no longer resolves to stays intercepted, by default.
pub const DEFAULT_KEEP: Duration = Duration::from_secs(3600);

/// Serialises target-map updates and keeps the addresses names resolved to.
pub struct Resolver {
    // Held across the DNS lookups and the map write of one update (an
    // .await), so a re-resolution that started before a reload cannot
    // write the old policy's entries after the reload wrote the new ones.
    seen: tokio::sync::Mutex<Seen>,
    keep: Duration,
}

impl Default for Resolver {
    fn default() -> Resolver {
        Resolver::new(DEFAULT_KEEP)
    }
}

/// One target-map update in progress; others wait until it is dropped.
pub struct Update<'a> {
    seen: tokio::sync::MutexGuard<'a, Seen>,
    keep: Duration,
}

impl Resolver {
    /// A resolver that keeps each address for `keep` after a lookup last returned it.
    pub fn new(keep: Duration) -> Resolver {
        Resolver {
            seen: tokio::sync::Mutex::new(Seen::new()),
            keep,
        }
    }

    /// Starts an update, waiting for one in progress to finish.
    pub async fn begin(&self) -> Update<'_> {
        Update {
            seen: self.seen.lock().await,
            keep: self.keep,
        }
    }
}

impl Update<'_> {
    /// The entries for `policy`. Host names are resolved now; each keeps
    /// every address it resolved to within `keep`, and a name that does
    /// not resolve keeps all it had (a DNS outage must not open a hole; a
    /// name that never resolved contributes nothing until it does).
    pub async fn entries(&mut self, policy: &Policy) -> Vec<Entry> {
        let keep = self.keep;
        entries(policy, &mut self.seen, keep, Instant::now()).await
    }
}

/// Records one lookup of `key` made at `now` and returns the addresses
/// to intercept: those seen within `keep` (after a failed lookup, all).
fn remember(
    seen: &mut Seen,
    key: (String, u16),
    lookup: Option<Vec<IpAddr>>,
    keep: Duration,
    now: Instant,
) -> Vec<IpAddr> {
    let known = seen.entry(key).or_default();
    if let Some(ips) = lookup {
        for ip in ips {
            known.insert(ip, now);
        }
        known.retain(|_, at| now.saturating_duration_since(*at) <= keep);
    }
    let mut ips: Vec<IpAddr> = known.keys().copied().collect();
    ips.sort();
    ips
}

async fn entries(policy: &Policy, seen: &mut Seen, keep: Duration, now: Instant) -> Vec<Entry> {
    // Names no target uses any more are forgotten.
    seen.retain(|(host, port), _| {
        policy
            .targets()
            .iter()
            .flat_map(|t| &t.endpoints)
            .any(|e| matches!(&e.address, AddressMatch::Host(h) if h == host && e.port == *port))
    });
    let mut out = Vec::new();
    for t in policy.targets() {
        let value = TargetValue {
            target_id: t.id.0,
            protocol: t.protocol.kernel() as u32,
        };
        for e in &t.endpoints {
            let port = e.port.to_be_bytes();
            match &e.address {
                AddressMatch::Any => {
                    out.push((
                        PORT_BITS,
                        TargetMatch {
                            port,
                            addr: [0; 16],
                        },
                        value,
                    ));
                }
                AddressMatch::Prefix { addr, len } => {
                    out.push(prefix_entry(*addr, *len, port, value))
                }
                AddressMatch::Host(host) => {
                    let key = (host.clone(), e.port);
                    let lookup = match tokio::net::lookup_host((host.as_str(), e.port)).await {
                        Ok(addrs) => Some(addrs.map(|a| a.ip()).collect()),
                        Err(err) => {
                            warn!(
                                target = %t.name, host, error = %err,
                                kept = seen.get(&key).map_or(0, HashMap::len),
                                "cannot resolve target host; keeping its last addresses"
                            );
                            None
                        }
                    };
                    let addrs = remember(seen, key, lookup, keep, now);
                    for ip in addrs {
                        let full = if ip.is_ipv4() { 32 } else { 128 };
                        out.push(prefix_entry(ip, full, port, value));
                    }
                }
            }
        }
    }
    out.sort_by_key(|e| (e.0, e.1.port, e.1.addr));
    out.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    out
}

/// Whether any target names a host (then the daemon re-resolves periodically).
pub fn has_hosts(policy: &Policy) -> bool {
    policy
        .targets()
        .iter()
        .flat_map(|t| &t.endpoints)
        .any(|e| matches!(e.address, AddressMatch::Host(_)))
}

fn prefix_entry(addr: IpAddr, len: u8, port: [u8; 2], value: TargetValue) -> Entry {
    let (bytes, addr_bits) = match addr {
        IpAddr::V4(v4) => (
            v4_mapped(v4.octets()),
            V4_MAPPED_PREFIX_BITS + u32::from(len),
        ),
        IpAddr::V6(v6) => (v6.octets(), u32::from(len)),
    };
    let addr_bits = addr_bits.min(ADDR_BITS);
    (
        PORT_BITS + addr_bits,
        TargetMatch {
            port,
            addr: mask(bytes, addr_bits),
        },
        value,
    )
}

/// Zeroes the bits after the prefix so equal prefixes make equal keys.
fn mask(mut a: [u8; 16], bits: u32) -> [u8; 16] {
    for (i, byte) in a.iter_mut().enumerate() {
        let start = (i as u32) * 8;
        if start >= bits {
            *byte = 0;
        } else if bits - start < 8 {
            *byte &= 0xffu8 << (8 - (bits - start));
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: TargetValue = TargetValue {
        target_id: 0,
        protocol: 0,
    };

    #[test]
    fn ipv4_prefixes_are_v4_mapped() {
        let (len, m, _) = prefix_entry("10.1.2.3".parse().unwrap(), 8, 5432u16.to_be_bytes(), V);
        assert_eq!(len, 16 + 96 + 8);
        assert_eq!(m.addr, v4_mapped([10, 0, 0, 0]));
        assert_eq!(m.port, [0x15, 0x38]);
    }

    #[test]
    fn ipv6_prefixes_are_masked() {
        let (len, m, _) = prefix_entry("fd00::1:2".parse().unwrap(), 12, [0, 22], V);
        assert_eq!(len, 16 + 12);
        assert_eq!(&m.addr[..2], &[0xfd, 0x00]);
        assert!(m.addr[2..].iter().all(|b| *b == 0));
        assert_eq!(mask([0xff; 16], 4)[0], 0xf0);
    }

    #[tokio::test]
    async fn a_failed_lookup_keeps_the_last_good_addresses() {
        let text = "version: 1\ntargets:\n  - name: db\n    protocol: tcp\n    match:\n      - { address: db.interlock-test.invalid, port: 5432 }\n";
        let policy = crate::policy::parse(std::path::Path::new("t.yaml"), text).unwrap();
        let resolver = Resolver::default();
        // Never resolved: nothing to intercept yet.
        assert!(resolver.begin().await.entries(&policy).await.is_empty());
        let known: IpAddr = "10.9.8.7".parse().unwrap();
        let long_ago = Instant::now()
            .checked_sub(Duration::from_secs(2 * 3600))
            .unwrap();
        resolver.begin().await.seen.insert(
            ("db.interlock-test.invalid".into(), 5432),
            HashMap::from([(known, long_ago)]),
        );
        // `.invalid` never resolves: the target keeps its last address,
        // however old (a DNS outage must not open a hole).
        let kept = resolver.begin().await.entries(&policy).await;
        assert_eq!(
            kept,
            vec![prefix_entry(known, 32, 5432u16.to_be_bytes(), kept[0].2)]
        );
    }

    #[test]
    fn every_address_seen_within_keep_stays_until_it_is_older() {
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let key = || ("rr.example".to_string(), 5432);
        let keep = Duration::from_secs(60);
        let t0 = Instant::now();
        let mut seen = Seen::new();
        assert_eq!(remember(&mut seen, key(), Some(vec![a]), keep, t0), vec![a]);
        // Round robin: the next answer has only b; a stays.
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(
            remember(&mut seen, key(), Some(vec![b]), keep, t1),
            vec![a, b]
        );
        // a was last seen 61 s ago: let go; b (31 s) stays.
        let t2 = t0 + Duration::from_secs(61);
        assert_eq!(remember(&mut seen, key(), Some(vec![b]), keep, t2), vec![b]);
        // A failed lookup long after keeps everything it had.
        let t3 = t0 + Duration::from_secs(3600);
        assert_eq!(remember(&mut seen, key(), None, keep, t3), vec![b]);
    }
}
