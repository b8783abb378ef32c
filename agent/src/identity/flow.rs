//! Who made an intercepted connection and which protocol it speaks: the
//! plain data that policy, approval, audit and the protocols share.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::ProcessIdentity;

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

/// The protocol a target speaks (selects the daemon's handler).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// A transparent byte relay with session start/end events.
    Tcp,
    /// The PostgreSQL proxy: every statement decided and recorded.
    Postgres,
    /// The SSH proxy: every exec, shell, sftp operation decided and recorded.
    Ssh,
}

impl Protocol {
    /// Every protocol the daemon can serve, in listener order.
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Postgres, Protocol::Ssh];

    /// The kernel's view of the protocol (listener slot).
    pub fn kernel(self) -> agent_common::target::Protocol {
        match self {
            Protocol::Tcp => agent_common::target::Protocol::Tcp,
            Protocol::Postgres => agent_common::target::Protocol::Postgres,
            Protocol::Ssh => agent_common::target::Protocol::Ssh,
        }
    }

    /// The protocol's name as written in policy files.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Postgres => "postgres",
            Protocol::Ssh => "ssh",
        }
    }
}
