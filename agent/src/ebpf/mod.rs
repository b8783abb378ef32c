//! The kernel side as the daemon sees it: loading the eBPF object, attaching
//! it to the scope cgroups, pinning maps and links under
//! `/sys/fs/bpf/interlock/<instance>/` (so the kernel side outlives the
//! daemon and a restarted daemon adopts it), and typed access to the maps.

mod cgroup;
mod error;
mod loader;
mod maps;

pub use cgroup::{cgroup2_mount, resolve_scope};
pub use error::KernelError;
pub use loader::{Kernel, KernelHold, LoadOptions, detach, pin_dir};
pub use maps::{KernelMaps, monotonic_ns};
