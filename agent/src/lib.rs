//! interlock: an eBPF interception agent. The kernel side (agent-ebpf)
//! redirects chosen connects to this daemon, which attributes each to a
//! process and CI job, applies policy and relays or proxies it.
//! See shared/design.md for the architecture; each module's doc says what it owns.

pub mod audit;
pub mod cli;
mod context;
pub mod daemon;
pub mod ebpf;
pub mod gate;
pub mod identity;
pub mod intercept;
pub mod policy;
pub mod postgres;
pub mod sessions;
pub mod sinks;
mod targets;
mod tcp;

pub use daemon::{DaemonOptions, FailureMode, run};
