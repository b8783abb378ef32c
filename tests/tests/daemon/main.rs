//! The daemon's own guarantees: the audit log, state, replay, the CLI, the instance lock.
//!
//! One test binary with one module per former test file: every binary links
//! the agent, pg_query, russh and rustls, so few binaries build and link
//! much faster than one per file. A module's tests are named
//! `<module>::<test>`: run one module with `cargo xtask test audit_full_disk::`,
//! or `cargo nextest run -p interlock-tests --test daemon -E 'test(/^audit_full_disk::/)'`.

mod audit_full_disk;
mod audit_tamper;
mod cli_errors;
mod daemon_lock;
mod sessions_replay;
mod state_perms;
