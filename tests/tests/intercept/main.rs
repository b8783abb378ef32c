//! Interception: the kernel side, flows, identity, maps, relaying.
//!
//! One test binary with one module per former test file: every binary links
//! the agent, pg_query, russh and rustls, so few binaries build and link
//! much faster than one per file. A module's tests are named
//! `<module>::<test>`: run one module with `cargo xtask test ci_context::`,
//! or `cargo nextest run -p interlock-tests --test intercept -E 'test(/^ci_context::/)'`.

mod ci_context;
mod flow_exhaustion;
mod identity_failclosed;
mod intercept_failure;
mod intercept_identity;
mod intercept_redirect;
mod intercept_resolve;
mod intercept_scopes;
mod kernel_tamper;
mod lineage_loss;
mod maps_bounded;
mod maps_full;
mod pins_owner;
mod relay_flow;
