//! Who made a redirected connection, and where it was going.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use agent_common::flow::FlowInfo;
use serde::{Deserialize, Serialize};

use crate::{identity::ProcessIdentity, policy::Protocol};

/// Everything interlock knows about the origin of one intercepted connection.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FlowIdentity {
    /// Where the client meant to connect.
    pub original_destination: SocketAddr,
    pub target: String,
    pub protocol: Protocol,
    /// The client's address as the daemon's listener saw it.
    pub client: SocketAddr,
    /// Kernel cgroup id at connect time.
    pub cgroup_id: u64,
    /// Task comm at connect time (from the kernel, not /proc).
    pub comm: String,
    /// The process, its ancestry, user, cgroup path and CI context.
    pub process: ProcessIdentity,
    /// The job token's verified identity (or why it was refused), once the
    /// session was decided; absent when the session had no token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_token: Option<crate::oidc::JobTokenView>,
}

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
