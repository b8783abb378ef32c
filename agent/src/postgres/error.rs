//! Errors of the PostgreSQL module.

use crate::gate::Side;

/// Something a peer sent that breaks the wire protocol.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// A message declared a length below the protocol's minimum.
    #[error("message {tag} declares length {len}, below the minimum {min}")]
    TooShort { tag: String, len: u32, min: u32 },
    /// A message declared a length above the configured cap.
    #[error("message {tag} declares length {len}, above the limit of {max} bytes")]
    TooLong { tag: String, len: u32, max: usize },
    /// A message type this side never sends.
    #[error("unknown message type {0}")]
    UnknownTag(String),
    /// A message body that does not match its type's layout.
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    /// A message that is valid but not allowed at this point.
    #[error("unexpected {0}")]
    Unexpected(String),
    /// The connection ended inside a message.
    #[error("connection closed in the middle of a message ({0})")]
    Truncated(String),
    /// The client did not answer an authentication request in time.
    #[error("no answer to the server's authentication request within {0} s")]
    AuthTimeout(u64),
    /// The client did not finish its startup in time.
    #[error("no startup packet within {0} s")]
    StartupTimeout(u64),
}

impl ProtocolError {
    /// A `Malformed` error for message `what`.
    pub fn malformed(what: &'static str, detail: impl Into<String>) -> ProtocolError {
        ProtocolError::Malformed {
            what,
            detail: detail.into(),
        }
    }
}

/// Why a proxied session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// Socket I/O failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// One side broke the protocol; the session was closed with a FATAL.
    #[error("protocol error from the {side:?}: {source}")]
    Protocol {
        side: Side,
        #[source]
        source: ProtocolError,
    },
    /// Upstream TLS could not be set up.
    #[error("upstream tls: {0}")]
    Tls(String),
    /// The client's TLS handshake with interlock failed.
    #[error("client tls: {0}")]
    ClientTls(String),
    /// Upstream authentication failed on our side (the server's own errors are relayed).
    #[error("upstream auth: {0}")]
    Auth(String),
    /// The server refused the connection (its ErrorResponse was relayed to the client).
    #[error("upstream refused the session: {0}")]
    Refused(String),
    /// The server could not be reached.
    #[error("cannot connect to the server: {0}")]
    Connect(std::io::Error),
    /// The server closed the connection in the middle of the session.
    #[error("the server closed the connection unexpectedly")]
    UpstreamClosed,
    /// The gate blocked the session.
    #[error("session blocked by rule {0}")]
    Blocked(String),
    /// The session was refused: the audit log cannot be written.
    #[error("session refused: the audit log cannot be written")]
    AuditUnwritable,
}

impl PgError {
    /// A protocol error attributed to `side`.
    pub fn protocol(side: Side, source: ProtocolError) -> PgError {
        PgError::Protocol { side, source }
    }
}
