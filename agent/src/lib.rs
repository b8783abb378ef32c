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
pub mod gate;
mod gatekeeper;
pub mod identity;
pub mod intercept;
pub mod net;
pub mod policy;
pub mod postgres;
pub mod sessions;
pub mod sinks;
pub mod ssh;
mod state_dir;
mod targets;
mod tcp;
#[cfg(test)]
mod test_dir;

pub use daemon::{DaemonOptions, FailureMode, run};

/// Statement classes of `sql` (every statement of it), as the PostgreSQL
/// proxy classifies them, for `policy explain`.
pub(crate) fn classify_sql(sql: &str) -> Vec<policy::StatementClass> {
    postgres::classify::classify(sql)
        .into_iter()
        .flat_map(|c| c.classes)
        .collect()
}
