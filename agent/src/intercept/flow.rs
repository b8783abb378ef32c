//! Where a redirected connection was going, from the kernel's flow record.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use agent_common::flow::FlowInfo;

// Flow identity is plain data of the bottom layers (identity); it is named
// here too because the listener makes it.
pub use crate::identity::FlowIdentity;

/// The original destination recorded by connect4/6, with v4-mapped
/// addresses turned back into IPv4.
pub(crate) fn original_destination(flow: &FlowInfo) -> SocketAddr {
    let v6 = Ipv6Addr::from(flow.orig_addr);
    let ip = match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    };
    SocketAddr::new(ip, flow.orig_port)
}

/// A NUL-padded kernel comm as text.
pub(crate) fn comm_str(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|b| *b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(comm.get(..end).unwrap_or_default()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(addr: [u8; 16], port: u16) -> FlowInfo {
        FlowInfo {
            orig_addr: addr,
            orig_port: port,
            family: 2,
            tgid: 1,
            pid: 1,
            uid: 0,
            gid: 0,
            target_id: 0,
            cgroup_id: 0,
            ktime_ns: 0,
            comm: *b"psql\0\0\0\0\0\0\0\0\0\0\0\0",
        }
    }

    #[test]
    fn v4_mapped_destinations_become_ipv4() {
        let f = flow(agent_common::target::v4_mapped([127, 0, 0, 2]), 5432);
        assert_eq!(original_destination(&f), "127.0.0.2:5432".parse().unwrap());
        let f6 = flow(Ipv6Addr::LOCALHOST.octets(), 22);
        assert_eq!(original_destination(&f6), "[::1]:22".parse().unwrap());
        assert_eq!(comm_str(&f.comm), "psql");
        assert_eq!(comm_str(b"0123456789abcdef"), "0123456789abcdef");
    }
}
