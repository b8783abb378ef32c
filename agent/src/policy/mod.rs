//! Policy files: what to intercept (targets) and, as later issues add them,
//! the rules deciding each session. Files are parsed and validated here into
//! typed values; nothing after [`load`] parses strings again.

mod error;
mod facts;
mod file;
mod target;

pub use error::PolicyError;
pub use facts::{CommandKind, StatementClass};
pub use file::{Policy, load, parse};
pub use target::{AddressMatch, Endpoint, Protocol, Target, TargetId};
