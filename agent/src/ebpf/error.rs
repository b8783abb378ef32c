//! Errors from loading, attaching and using the kernel side.

use std::path::PathBuf;

/// The kernel side could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "no cgroup v2 filesystem is mounted (looked in /proc/mounts); interlock attaches to cgroup v2"
    )]
    NoCgroup2,
    #[error("scope cgroup {0} does not exist")]
    NoSuchScope(PathBuf),
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{fstype} is not mounted at {dir} and mounting it failed: {message}")]
    Mount {
        fstype: &'static str,
        dir: &'static str,
        message: String,
    },
    #[error("tracepoint {tracepoint} has no field `{field}` on this kernel")]
    TracepointField {
        tracepoint: &'static str,
        field: &'static str,
    },
    #[error("too many scopes: {0} (at most {max})", max = agent_common::process::SCOPES_MAX)]
    TooManyScopes(usize),
    /// Another daemon (or a detach) holds the instance.
    #[error(transparent)]
    InUse(#[from] crate::lock::LockError),
    #[error(
        "this interlock was built without its eBPF programs (AYA_BUILD_SKIP was set): rebuild without it"
    )]
    NoObject,
    #[error("loading the eBPF object failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("eBPF object has no program named {0}")]
    MissingProgram(&'static str),
    #[error("eBPF object has no map named {0}")]
    MissingMap(&'static str),
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("pinning {path}: {source}")]
    Pin {
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error(
        "refusing the pin directory {path}: it {why}; someone else could have swapped interlock's pins there. Check it, remove it (`rm -r {path}` unpins what is in it) and start again"
    )]
    UnsafePins { path: PathBuf, why: String },
    #[error("instance name {0:?} must be one plain path component (no `/`, `.` or `..`)")]
    InstanceName(String),
    #[error(
        "{path} was pinned by an interlock build with another map layout ({found}; this build needs {expected}): stop the daemon of instance {instance}, run `interlock detach --instance {instance}` and start again"
    )]
    PinnedLayout {
        path: PathBuf,
        found: String,
        expected: String,
        instance: String,
    },
    #[error("adopting pinned link {path}: {source}")]
    Adopt {
        path: PathBuf,
        source: aya::programs::links::LinkError,
    },
}
