//! The kernel side as the daemon sees it: loading the eBPF object, attaching
//! it to the scope cgroups, pinning maps and links under
//! `/sys/fs/bpf/interlock/<instance>/` (so the kernel side outlives the
//! daemon and a restarted daemon adopts it), typed access to the maps, and
//! the process lineage tracepoints (attached per run, not pinned: a restarted
//! daemon re-seeds its process table from /proc).

mod cgroup;
mod error;
mod lineage;
mod loader;
mod maps;

pub use cgroup::{cgroup2_mount, resolve_scope};
pub use error::KernelError;
pub use lineage::ProcessEventStream;
pub use loader::{Kernel, KernelHold, LoadOptions, detach, lock_instance, pin_dir};
pub use maps::{KernelMaps, Refusals, monotonic_ns};
