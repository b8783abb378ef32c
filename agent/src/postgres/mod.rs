//! PostgreSQL: wire codec, startup/auth, session state machine, classifier.
//! The public face is [`serve`] (one proxied client connection), its
//! configuration [`PgTarget`] and the daemon-wide [`CancelRegistry`].

mod auth;
mod ca;
mod cancel;
mod catalog;
pub mod classify;
mod decide;
mod encoding;
mod error;
mod executions;
pub mod frame;
mod functions;
mod job_token;
mod legs;
mod mask;
pub mod message;
mod names;
mod pending;
mod relay;
mod results;
mod session;
mod startup;
mod target;
mod tls;

pub use ca::{CaError, PgCa};
pub use cancel::CancelRegistry;
pub use classify::ClassifyBudget;
pub use error::{PgError, ProtocolError};
pub use job_token::AskToken;
pub(crate) use legs::fatal;
pub use mask::{MASK_KEY_FILE, MaskKey, MaskKeyError};
pub use session::serve;
pub use target::{
    ClientPassword, ClientTls, PasswordMethods, PgCredentials, PgTarget, STARTUP_TIMEOUT, Secret,
    UpstreamTls,
};
