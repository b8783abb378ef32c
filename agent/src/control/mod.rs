//! The local control API: HTTP+JSON on a Unix socket in the state
//! directory, used by `interlock status` and `interlock approvals`. Every
//! caller is identified by the kernel (SO_PEERCRED), never by what it says:
//! anyone may read the status; root and each hold's approvers may list and
//! show held requests; only a rule's approvers may decide its requests, and
//! never the requester; only root may have the daemon send test events.

mod client;
mod commands;
mod server;

pub use client::{ControlError, call};
pub use commands::{ApprovalsCommand, approvals, status, webhook_test};
pub use server::{CONTROL_SOCKET, Extras, bind, serve};
