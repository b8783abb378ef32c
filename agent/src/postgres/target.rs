//! What one proxied PostgreSQL target looks like to a session: where the
//! server is, which credentials to inject and how to protect the upstream leg.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use super::{
    ca::{CaError, PgCa},
    frame::DEFAULT_MAX_FRAME,
};

/// A secret value whose `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that sends it (upstream auth).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Credentials interlock injects upstream (already resolved by the caller).
#[derive(Clone, Debug)]
pub struct PgCredentials {
    /// The upstream role; `None` keeps the client's user name.
    pub user: Option<String>,
    pub password: Secret,
}

/// When a target with injected credentials asks the client for a password
/// (the answer is read and discarded, never checked nor forwarded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientPassword {
    /// When the server asked interlock for one, so the client is asked
    /// exactly when it would be directly: cleartext if the server asked
    /// for cleartext, else md5 with a fresh salt (interlock cannot run
    /// SCRAM with a client whose password it does not know: the client
    /// checks the server's proof).
    #[default]
    Mirror,
    /// Never.
    Never,
}

/// Which of the server's password requests an injected password answers
/// (`upstream.password_auth`); the others end the session before anything
/// is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordMethods {
    /// SCRAM-SHA-256: the server never sees the password and must prove it knows it.
    pub scram: bool,
    /// md5: the server gets a hash that works as the password wherever it is stored as md5.
    pub md5: bool,
    /// `password`: the server gets the password itself.
    pub cleartext: bool,
}

impl PasswordMethods {
    /// SCRAM only, the default.
    pub const SCRAM_ONLY: PasswordMethods = PasswordMethods {
        scram: true,
        md5: false,
        cleartext: false,
    };
}

impl Default for PasswordMethods {
    fn default() -> PasswordMethods {
        PasswordMethods::SCRAM_ONLY
    }
}

/// How the upstream leg uses TLS (libpq's sslmode names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamTls {
    /// Plain TCP.
    Disable,
    /// TLS if the server offers it (no certificate check), else plain.
    Prefer,
    /// TLS or fail, without certificate verification (as libpq's `require`).
    Require,
    /// TLS, the chain verified against `ca_file` (PEM) and the certificate
    /// matching [`PgTarget::server_name`].
    VerifyFull { ca_file: PathBuf },
}

/// One PostgreSQL target as a session needs it.
#[derive(Clone, Debug)]
pub struct PgTarget {
    /// The real server.
    pub upstream: SocketAddr,
    /// The server's host name (TLS SNI and verify-full).
    pub server_name: String,
    /// Injected credentials; `None` relays the client's own authentication.
    pub credentials: Option<PgCredentials>,
    /// The password requests `credentials` answer.
    pub password_methods: PasswordMethods,
    /// Why `credentials` may not go to `upstream` (the job dialled an
    /// address the policy does not send them to): the session is refused
    /// once it is decided and recorded, before anything is dialled.
    pub withheld: Option<String>,
    /// With `credentials` and no `ask_token`: when the client is asked for
    /// a password.
    pub client_password: ClientPassword,
    /// Database to connect to instead of the client's choice.
    pub database: Option<String>,
    pub tls: UpstreamTls,
    /// Largest message accepted from either side after startup, in bytes
    /// (startup-phase messages: PostgreSQL's 10 000).
    pub max_frame: usize,
    /// How big a statement is classified, and for how long.
    pub classify: super::ClassifyBudget,
    /// Where the certificate interlock presents to clients that ask for
    /// TLS comes from; `None` answers SSLRequest 'N'.
    pub client_tls: Option<ClientTls>,
    /// How long a client may take to send its startup packet (TLS
    /// handshake included) before the connection is closed.
    pub startup_timeout: Duration,
    /// The host's key for the `hash` masking strategy; `None` refuses
    /// statements masked by hash.
    pub mask_key: Option<Arc<super::MaskKey>>,
    /// Kernel buffer sizes of the upstream socket.
    pub socket_buffers: crate::net::SocketBuffers,
    /// Ask the client for a job token as its password (`client_auth:
    /// [job_token]`); `None`: nothing is asked.
    pub ask_token: Option<super::AskToken>,
}

/// Longest a client may take from connect to its startup packet (as the
/// server's `authentication_timeout` bounds an idle socket's task).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// interlock's CA and the names a target's certificate carries. The
/// certificate is minted when a client first asks for TLS, so a failure
/// to mint it never refuses clients that do not.
#[derive(Clone)]
pub struct ClientTls {
    ca: Arc<PgCa>,
    names: Vec<String>,
}

impl ClientTls {
    /// Certificates for `names` (host names and addresses) from `ca`.
    pub fn new(ca: Arc<PgCa>, names: Vec<String>) -> ClientTls {
        ClientTls { ca, names }
    }

    /// The TLS configuration (minted on first use, then cached by the CA).
    ///
    /// # Errors
    /// The names are empty or invalid, or signing failed.
    pub fn config(&self) -> Result<Arc<rustls::ServerConfig>, CaError> {
        self.ca.server_config(&self.names)
    }
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl PgTarget {
    /// A target at `upstream` with passthrough auth, plain TCP and the default frame cap.
    pub fn new(upstream: SocketAddr) -> PgTarget {
        PgTarget {
            upstream,
            server_name: upstream.ip().to_string(),
            credentials: None,
            password_methods: PasswordMethods::default(),
            withheld: None,
            client_password: ClientPassword::default(),
            database: None,
            tls: UpstreamTls::Disable,
            max_frame: DEFAULT_MAX_FRAME,
            classify: super::ClassifyBudget::default(),
            client_tls: None,
            mask_key: None,
            ask_token: None,
            startup_timeout: STARTUP_TIMEOUT,
            socket_buffers: crate::net::SocketBuffers::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let c = PgCredentials {
            user: Some("app".into()),
            password: Secret::new("hunter2"),
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***"));
    }
}
