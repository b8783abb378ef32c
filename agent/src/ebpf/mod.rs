//! The kernel side as the daemon sees it: loading the eBPF object, attaching
//! it to the scope cgroups, pinning maps and links under
//! `/sys/fs/bpf/interlock/<instance>/` (so the kernel side outlives the
//! daemon and a restarted daemon adopts it; a tree others could write is
//! refused), noticing pins and links that are removed or replaced while it
//! runs, typed access to the maps, and
//! the process lineage tracepoints (attached per run, not pinned: a restarted
//! daemon re-seeds its process table from /proc).

mod cgroup;
mod error;
mod integrity;
mod layout;
mod lineage;
mod loader;
mod maps;
mod pins;
mod sys;

pub use cgroup::{cgroup_path_of, cgroup2_mount, resolve_scope};
pub use error::KernelError;
pub use integrity::{Finding, FindingKind};
pub use lineage::ProcessEventStream;
pub use loader::{Kernel, KernelHold, LoadOptions, lock_instance};
pub use maps::{CgroupRefusal, KernelMaps, Refusals, monotonic_ns, netns_cookie};
pub use pins::{DEFAULT_PIN_ROOT, check_instance, detach, pin_dir};
