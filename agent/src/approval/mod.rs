//! Approvals: requests held until a human decides (registry), who may decide
//! (SO_PEERCRED callers and people signed in on the approvals page, checked
//! against the rule's approvers, never the requester or the human who
//! started its job), deadlines, time-boxed grants keyed on the job, and
//! notifications of new holds.

mod error;
mod grants;
mod notify;
mod record;
mod registry;
mod types;
mod who;

pub use error::ApprovalError;
pub use notify::Notifier;
pub use record::{ApprovalRecorder, Recording};
pub use registry::{Approvals, DecisionReport};
pub use types::{Decided, Decision, HoldSpec, Pending, RequestView, Requester};
pub(crate) use who::caller_name;
pub use who::{Approver, Channel, DecidedBy, SignedIn};
