//! Who a process is: the process table (fed by kernel process events, seeded from /proc),
//! ancestry, cgroup path, user name and CI context, gathered into a [`ProcessIdentity`] for
//! each intercepted connection.
//!
//! Every /proc reader takes the proc root as a parameter so tests run against a fake tree.
//! Environment files are read only to pick out [`CI_ALLOWLIST`] variables; nothing else from
//! an environment is kept, logged or returned.

mod cache;
mod ci;
mod error;
mod process;
mod procfs;
mod store;
mod table;
mod users;

#[cfg(test)]
mod tests;

pub use ci::CI_ALLOWLIST;
pub use error::IdentityError;
pub use process::{Ancestor, ProcessIdentity, ProcessInfo};
pub use table::{ProcessEvent, ProcessTable};
