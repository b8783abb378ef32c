//! One file per hook.

mod connect;
mod sockops;

/// Why a probe gave up. `Copy` so it costs nothing to return.
#[derive(Clone, Copy)]
pub enum ProbeError {
    /// No listener for the target's protocol.
    NoListener,
    /// A map update failed.
    MapUpdate,
}
