//! Approvals: requests held until a human decides (registry), who may decide
//! (SO_PEERCRED callers checked against the rule's approvers, never the
//! requester), deadlines, time-boxed grants, and notifications of new holds.

mod error;
mod notify;
mod registry;
mod types;

pub use error::ApprovalError;
pub use notify::Notifier;
pub(crate) use registry::caller_name;
pub use registry::{Approvals, DecisionReport};
pub use types::{Decided, Decision, HoldSpec, Pending, RequestView, Requester};
