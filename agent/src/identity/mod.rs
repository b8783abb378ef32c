//! Who a process is: the process table (fed by kernel process events, seeded from /proc),
//! ancestry, cgroup path, user name and CI context, gathered into a [`ProcessIdentity`] for
//! each intercepted connection.
//!
//! CI variables and job tokens come only from the environment of the job's root process, the
//! child of a trusted runner (`job`), never from the job's own descendants.
//!
//! Every /proc reader takes the proc root as a parameter so tests run against a fake tree.
//! Environment files are read only to pick out [`CI_ALLOWLIST`] variables and the job token
//! variables the policy names; nothing else from an environment is kept, logged or returned,
//! and a token is never stored in an identity.

mod cache;
mod ci;
mod error;
mod exefile;
mod job;
mod process;
mod procfs;
mod redact;
mod store;
mod table;
mod users;

#[cfg(test)]
mod tests;

pub use ci::{CI_ALLOWLIST, EnvToken};
pub use error::IdentityError;
pub use exefile::{ExeFile, ExeTrust};
pub use job::JobRootSpec;
pub use process::{Ancestor, CiSource, ProcessIdentity, ProcessInfo};
pub use table::{ProcessEvent, ProcessTable};

/// A local peer (a control-socket caller), as the kernel vouches for it
/// with SO_PEERCRED, with names and cgroup looked up.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LocalPeer {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    /// From /etc/passwd; `None` when the uid has no entry.
    pub user: Option<String>,
    /// Primary and supplementary group names from /etc/group.
    pub groups: Vec<String>,
    /// cgroup-v2 path of `pid`; `None` when it has exited or is unreadable.
    pub cgroup: Option<String>,
}

impl LocalPeer {
    /// Looks up names and cgroup for a peer the kernel described.
    pub fn lookup(uid: u32, gid: u32, pid: u32) -> LocalPeer {
        let etc = std::path::Path::new("/etc");
        let user = users::user_name(&etc.join("passwd"), uid).ok().flatten();
        let groups = users::group_names(&etc.join("group"), user.as_deref(), gid);
        let cgroup = procfs::read_cgroup(std::path::Path::new("/proc"), pid);
        LocalPeer {
            uid,
            gid,
            pid,
            user,
            groups,
            cgroup,
        }
    }
}
