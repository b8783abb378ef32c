//! PostgreSQL: wire codec, startup/auth, session state machine, classifier.
//! The public face is [`serve`] (one proxied client connection), its
//! configuration [`PgTarget`] and the daemon-wide [`CancelRegistry`].

pub mod classify;
mod error;
pub mod frame;
pub mod message;

pub use error::{PgError, ProtocolError};
