//! Approvals and notification: holds over tcp and postgres, grants, the web page, OIDC job tokens, webhooks.
//!
//! One test binary with one module per former test file: every binary links
//! the agent, pg_query, russh and rustls, so few binaries build and link
//! much faster than one per file. A module's tests are named
//! `<module>::<test>`: run one module with `cargo xtask test approvals_grants::`,
//! or `cargo nextest run -p interlock-tests --test approvals -E 'test(/^approvals_grants::/)'`.

mod approvals_grants;
mod approvals_pg;
mod approvals_tcp;
mod approvals_web;
mod oidc_jobs;
mod webhook_delivery;
mod webhook_endpoints;
