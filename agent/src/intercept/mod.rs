//! Listeners for redirected connections: accept, find the flow the kernel
//! recorded (peer address -> PEERS -> cookie -> FLOWS), build the
//! [`FlowIdentity`], and hand the connection to its protocol's handler.
//! An accepted connection with no flow is refused and reported.

mod dispatch;
mod flow;
mod listener;

pub use flow::FlowIdentity;
pub use listener::{Listeners, accept_loop};
