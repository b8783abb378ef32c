//! Turns the policy's targets into TARGETS map entries, resolving host names.
//! A [`Resolver`] serialises every update of the kernel's target map and
//! remembers each host's last good addresses, so neither a failed lookup
//! nor a re-resolution racing a reload can leave a target unintercepted.

use std::{collections::HashMap, net::IpAddr};

use agent_common::target::{
    ADDR_BITS, PORT_BITS, TargetMatch, TargetValue, V4_MAPPED_PREFIX_BITS, v4_mapped,
};
use tracing::warn;

use crate::policy::{AddressMatch, Policy};

/// One TARGETS entry: prefix length in bits (port included), data, value.
pub type Entry = (u32, TargetMatch, TargetValue);

/// Addresses a host name last resolved to, by (host, port).
type LastGood = HashMap<(String, u16), Vec<IpAddr>>;

/// Serialises target-map updates and keeps last good lookups.
#[derive(Default)]
pub struct Resolver {
    // Held across the DNS lookups and the map write of one update (an
    // .await), so a re-resolution that started before a reload cannot
    // write the old policy's entries after the reload wrote the new ones.
    last_good: tokio::sync::Mutex<LastGood>,
}

/// One target-map update in progress; others wait until it is dropped.
pub struct Update<'a> {
    last_good: tokio::sync::MutexGuard<'a, LastGood>,
}

impl Resolver {
    /// Starts an update, waiting for one in progress to finish.
    pub async fn begin(&self) -> Update<'_> {
        Update {
            last_good: self.last_good.lock().await,
        }
    }
}

impl Update<'_> {
    /// The entries for `policy`. Host names are resolved now; a name that
    /// does not resolve keeps the addresses it last resolved to (a name
    /// that never resolved contributes nothing until it does).
    pub async fn entries(&mut self, policy: &Policy) -> Vec<Entry> {
        entries(policy, &mut self.last_good).await
    }
}

async fn entries(policy: &Policy, last_good: &mut LastGood) -> Vec<Entry> {
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
                    let addrs = match tokio::net::lookup_host((host.as_str(), e.port)).await {
                        Ok(addrs) => {
                            let ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                            last_good.insert(key, ips.clone());
                            ips
                        }
                        Err(err) => {
                            let kept = last_good.get(&key).cloned().unwrap_or_default();
                            warn!(
                                target = %t.name, host, error = %err, kept = kept.len(),
                                "cannot resolve target host; keeping its last addresses"
                            );
                            kept
                        }
                    };
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
        resolver
            .begin()
            .await
            .last_good
            .insert(("db.interlock-test.invalid".into(), 5432), vec![known]);
        // `.invalid` never resolves: the target keeps its last address.
        let kept = resolver.begin().await.entries(&policy).await;
        assert_eq!(
            kept,
            vec![prefix_entry(known, 32, 5432u16.to_be_bytes(), kept[0].2)]
        );
    }
}
