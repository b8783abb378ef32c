//! PostgreSQL: the in-process proxy and the daemon's, protocol, TLS, masking, holds, drivers.
//!
//! One test binary with one module per former test file: every binary links
//! the agent, pg_query, russh and rustls, so few binaries build and link
//! much faster than one per file. A module's tests are named
//! `<module>::<test>`: run one module with `cargo xtask test pg_client_tls::`,
//! or `cargo nextest run -p interlock-tests --test pg -E 'test(/^pg_client_tls::/)'`.

mod pg_client_tls;
mod pg_credential_pin;
mod pg_daemon;
mod pg_daemon_mask;
mod pg_driver_suites;
mod pg_evasion;
mod pg_features;
mod pg_function_call;
mod pg_holds;
mod pg_mask;
mod pg_mask_paths;
mod pg_mask_values;
mod pg_protocol;
mod pg_proxy;
mod pg_record_level;
mod pg_tls;
mod pg_transparency;
mod pg_upstream;
