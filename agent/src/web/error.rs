//! Why the approvals page could not start, or a sign-in failed.

use std::path::PathBuf;

/// An approvals page error.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("`--web-listen` is given but the policy has no `web:` section (URL, TLS, sign-in)")]
    NoSection,
    #[error("cannot listen on {addr} for the approvals page: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("approvals page certificate {path}: {message}")]
    Certificate { path: PathBuf, message: String },
    #[error("approvals page TLS: {0}")]
    Tls(String),
    #[error("the OpenID provider: {0}")]
    Provider(String),
    #[error("sign-in client secret: {0}")]
    Secret(String),
    #[error("sign-in failed: {0}")]
    SignIn(String),
}
