use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::exefile::{ExeFile, ExeTrust};

/// Stand-in for a uid or gid that could not be learned (the kernel's invalid id, `(uid_t)-1`),
/// so an unknown process never looks like root.
pub(crate) const UNKNOWN_ID: u32 = u32::MAX;

/// Most arguments kept per process; the rest are dropped.
pub(crate) const MAX_ARGS: usize = 256;
/// Most bytes of argument text kept per process (counting one separator per argument).
pub(crate) const MAX_ARGV_BYTES: usize = 16 * 1024;

/// What the process table knows about one process (thread group).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Thread-group id, i.e. the process id.
    pub tgid: u32,
    /// Parent's tgid; 0 when there is none (tgid 1, kernel threads) or it is unknown.
    pub ppid: u32,
    /// Real uid.
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
    /// Kernel command name (at most 15 bytes from the kernel).
    pub comm: String,
    /// Executable path: `/proc/<pid>/exe` for processes read from /proc, the exec'd filename
    /// for processes learned from exec events; `None` for kernel threads or when unknown.
    pub exe: Option<String>,
    /// Command line, capped at 256 arguments and 16 KiB in total.
    pub argv: Vec<String>,
    /// Start time in clock ticks after boot (`/proc/<pid>/stat` field 22), used to tell a
    /// reused pid from the original process; `None` until read from /proc.
    pub start_ticks: Option<u64>,
    /// The process has exited; the entry is kept so late connections can still be attributed.
    pub exited: bool,
    /// How many times it exec'd since its fork was seen; `None` when its fork was not seen
    /// (it started before interlock, or its records were lost). A runner's child that exec'd
    /// more than once may have replaced the environment the runner gave it.
    pub execs: Option<u32>,
}

/// One ancestor of a process, as recorded in an identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ancestor {
    /// The ancestor's tgid.
    pub tgid: u32,
    /// Its executable path; `None` when unknown (e.g. it exited before we saw it).
    pub exe: Option<String>,
    /// Its command line; empty when unknown.
    pub argv: Vec<String>,
    /// The file it runs (device, inode, owner, mode); `None` when it could not be read
    /// (the ancestor has exited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe_file: Option<ExeFile>,
    /// Whether `exe` can be believed to name that file (`identity/exefile.rs`).
    #[serde(default)]
    pub exe_trust: ExeTrust,
}

impl From<&ProcessInfo> for Ancestor {
    /// Without the file check: [`ExeTrust::Unknown`] until the table inspects it.
    fn from(info: &ProcessInfo) -> Self {
        Self {
            tgid: info.tgid,
            exe: info.exe.clone(),
            argv: info.argv.clone(),
            exe_file: None,
            exe_trust: ExeTrust::default(),
        }
    }
}

/// Who issued a connection: the process, its ancestry, cgroup, user and CI context.
///
/// Built by [`ProcessTable::identity`](super::ProcessTable::identity). When the process is
/// gone and was never seen, only `pid` and `tgid` are filled in: `uid`/`gid` are `u32::MAX`
/// (never 0, so an unknown process is not mistaken for root) and the rest is empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// Thread id that made the connection.
    pub pid: u32,
    /// Process (thread-group) id.
    pub tgid: u32,
    /// Parent's tgid; 0 when none or unknown.
    pub ppid: u32,
    /// Real uid; `u32::MAX` when unknown.
    pub uid: u32,
    /// User name for `uid` from the passwd file; `None` when the uid has no entry there.
    pub user: Option<String>,
    /// Real gid; `u32::MAX` when unknown.
    pub gid: u32,
    /// Kernel command name; empty when unknown.
    pub comm: String,
    /// Executable path; `None` when unknown.
    pub exe: Option<String>,
    /// The file the process runs (device, inode, owner, mode, from `/proc/<pid>/exe`);
    /// `None` when it could not be read (the process has exited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe_file: Option<ExeFile>,
    /// Whether `exe` can be believed to name that file (`identity/exefile.rs`).
    #[serde(default)]
    pub exe_trust: ExeTrust,
    /// Command line; empty when unknown.
    pub argv: Vec<String>,
    /// Ancestors, parent first, up to tgid 1 or the requested depth.
    pub ancestry: Vec<Ancestor>,
    /// cgroup-v2 path (the `0::` line of `/proc/<tgid>/cgroup`); `None` when unreadable.
    pub cgroup: Option<String>,
    /// Allow-listed CI variables ([`CI_ALLOWLIST`](super::CI_ALLOWLIST)) of the job's root
    /// process (the child of the trusted runner on this process's ancestry), never of the
    /// job's own descendants; empty when there is no such process (`ci_source` says why).
    pub ci: BTreeMap<String, String>,
    /// Where `ci` came from, or why there is none.
    #[serde(default)]
    pub ci_source: CiSource,
}

/// Where a flow's CI context came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum CiSource {
    /// The environment of the job's root process as the trusted runner started it.
    JobRoot {
        /// The outermost ancestor whose executable is a trusted runner.
        runner_tgid: u32,
        runner_exe: String,
        /// The runner's child on the flow's ancestry (the process itself, possibly).
        job_root_tgid: u32,
        job_root_exe: Option<String>,
    },
    /// No CI context: `ci:` conditions do not apply to this flow.
    None { reason: String },
}

impl Default for CiSource {
    /// What records of versions that did not say read back as.
    fn default() -> Self {
        CiSource::None {
            reason: "not recorded".into(),
        }
    }
}

impl CiSource {
    /// Whether the CI context came from a trusted runner's job root.
    pub fn is_trusted(&self) -> bool {
        matches!(self, CiSource::JobRoot { .. })
    }
}

impl ProcessIdentity {
    /// An identity with only the ids filled in, for a process we know nothing about.
    pub(crate) fn unknown(tgid: u32, pid: u32) -> Self {
        Self {
            pid,
            tgid,
            ppid: 0,
            uid: UNKNOWN_ID,
            user: None,
            gid: UNKNOWN_ID,
            comm: String::new(),
            exe: None,
            exe_file: None,
            exe_trust: ExeTrust::Unknown {
                reason: "the process is unknown".into(),
            },
            argv: Vec::new(),
            ancestry: Vec::new(),
            cgroup: None,
            ci: BTreeMap::new(),
            ci_source: CiSource::None {
                reason: "the process is unknown".into(),
            },
        }
    }
}

/// Keeps at most [`MAX_ARGS`] arguments and [`MAX_ARGV_BYTES`] bytes of argument text, so one
/// process with a huge command line cannot blow up the table; the last kept argument may be
/// cut (at a character boundary). Secrets are redacted first (`redact`): every argv the
/// table stores passes here.
pub(crate) fn cap_argv(argv: Vec<String>) -> Vec<String> {
    let mut argv = super::redact::redact_argv(argv);
    let mut budget = MAX_ARGV_BYTES;
    let mut keep = 0;
    for arg in argv.iter_mut().take(MAX_ARGS) {
        if budget == 0 {
            break;
        }
        if arg.len() >= budget {
            let mut cut = budget.saturating_sub(1);
            while !arg.is_char_boundary(cut) {
                cut = cut.saturating_sub(1);
            }
            arg.truncate(cut);
            budget = 0;
        } else {
            budget -= arg.len() + 1;
        }
        keep += 1;
    }
    argv.truncate(keep);
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_argv_keeps_small_command_lines() {
        let argv = vec!["psql".to_string(), "-c".to_string(), "select 1".to_string()];
        assert_eq!(cap_argv(argv.clone()), argv);
    }

    #[test]
    fn cap_argv_bounds_count_and_bytes() {
        let many = vec!["x".to_string(); MAX_ARGS * 4];
        assert_eq!(cap_argv(many).len(), MAX_ARGS);

        let huge = vec!["é".repeat(MAX_ARGV_BYTES), "after".to_string()];
        let capped = cap_argv(huge);
        assert_eq!(capped.len(), 1);
        let total: usize = capped.iter().map(|a| a.len() + 1).sum();
        assert!(total <= MAX_ARGV_BYTES);
    }

    #[test]
    fn unknown_identity_is_not_root() {
        let id = ProcessIdentity::unknown(42, 43);
        assert_eq!((id.tgid, id.pid), (42, 43));
        assert_ne!(id.uid, 0);
        assert_ne!(id.gid, 0);
        assert!(id.exe.is_none() && id.argv.is_empty() && id.ci.is_empty());
    }
}
