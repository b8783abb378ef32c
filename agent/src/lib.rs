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

/// Statement classes of `sql` (every statement of it), as the PostgreSQL
/// proxy classifies them before looking functions up, and why it is
/// `opaque` if it is, for `policy explain`.
pub(crate) fn classify_sql(sql: &str) -> (Vec<policy::StatementClass>, Option<String>) {
    let stmts = postgres::classify::classify(sql);
    let opaque = stmts.iter().find_map(|c| c.opaque.clone());
    let calls: Vec<String> = stmts.iter().flat_map(|c| c.calls.clone()).collect();
    let mut classes: Vec<policy::StatementClass> =
        stmts.into_iter().flat_map(|c| c.classes).collect();
    // Without a server to look them up in, calls of other functions are opaque.
    let opaque = match (opaque, calls.first()) {
        (Some(o), _) => Some(o),
        (None, Some(f)) => {
            classes.push(policy::StatementClass::Opaque);
            Some(format!(
                "calls {f}, which only the server's catalog can say what it does"
            ))
        }
        (None, None) => None,
    };
    (classes, opaque)
}
