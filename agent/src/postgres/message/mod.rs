//! Typed PostgreSQL messages. Each decodes from a [`Frame`](super::frame::Frame)
//! and encodes back to one; the session relays original frames untouched and
//! only decodes what it inspects.

mod backend;
mod bind;
mod cursor;
mod frontend;
mod row;
mod startup;
mod wire_str;

pub use backend::{AuthRequest, BackendMessage, ErrorFields};
pub use bind::BindParams;
pub use frontend::FrontendMessage;
pub use row::{RowField, parameter_types};
pub use startup::{CANCEL_CODE, GSSENC_CODE, SSL_CODE, StartupPacket};
pub use wire_str::WireStr;
