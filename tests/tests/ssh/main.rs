//! SSH: the in-process proxy and the daemon's, sessions, sftp, forwarding, audit.
//!
//! One test binary with one module per former test file: every binary links
//! the agent, pg_query, russh and rustls, so few binaries build and link
//! much faster than one per file. A module's tests are named
//! `<module>::<test>`: run one module with `cargo xtask test ssh_audit::`,
//! or `cargo nextest run -p interlock-tests --test ssh -E 'test(/^ssh_audit::/)'`.

mod ssh_audit;
mod ssh_bulk;
mod ssh_daemon;
mod ssh_forwarding;
mod ssh_meaning;
mod ssh_password;
mod ssh_proxy;
mod ssh_session;
mod ssh_sftp;
mod ssh_upstream;
mod ssh_vanish;
