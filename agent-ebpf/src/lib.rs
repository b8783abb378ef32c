//! Exists so that `agent` can name this crate as a build dependency (cache
//! invalidation); the programs are the `interlock` binary in main.rs.
#![no_std]
