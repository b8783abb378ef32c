//! interlock: an eBPF interception agent. The kernel side (agent-ebpf)
//! redirects chosen connects to this daemon, which attributes each to a
//! process and CI job, applies policy and relays or proxies it.
//! See shared/design.md for the architecture; each module's doc says what it owns.

pub mod approval;
pub mod audit;
pub mod cli;
mod context;
pub mod control;
pub mod daemon;
pub mod ebpf;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod gate;
mod gatekeeper;
pub mod identity;
pub mod intercept;
mod kernel_watch;
pub mod limits;
pub mod lock;
pub mod net;
pub mod oidc;
pub mod policy;
pub mod postgres;
mod service;
pub mod sessions;
pub mod sinks;
pub mod ssh;
mod state_dir;
mod targets;
mod tcp;
#[cfg(test)]
mod test_dir;
pub mod text;
pub mod web;

pub use daemon::{DaemonOptions, FailureMode, run};
