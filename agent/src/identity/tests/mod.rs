//! Behaviour suites for the process table; `fake` builds throw-away proc trees.

pub(crate) mod fake;

mod events;
mod identity;
mod real_proc;
mod reuse;
