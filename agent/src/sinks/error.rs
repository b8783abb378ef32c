//! Errors of the event sinks (webhook configuration, spool, delivery).

use std::path::PathBuf;

/// Why a sink could not be configured or its spool used.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("webhook URL `{0}` is not an http:// or https:// URL")]
    Url(String),
    #[error("cannot read webhook secret file {path}: {source}")]
    SecretRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("webhook secret file {path} line {line}: not a `whsec_<base64>` secret ({why})")]
    SecretFormat {
        path: PathBuf,
        line: usize,
        why: &'static str,
    },
    #[error("webhook secret file {0} holds no secret")]
    NoSecret(PathBuf),
    #[error(
        "webhook {0} has no secrets: give it its own (`--webhook URL,secret=PATH`) or pass --webhook-secret-file (receivers verify signatures)"
    )]
    SecretMissing(String),
    #[error("`{0}`: `,secret=` needs the path of a secret file")]
    SecretPath(String),
    #[error("webhook spool {path}: {source}")]
    Spool {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("webhook request failed: {0}")]
    Request(reqwest::Error),
}

impl SinkError {
    /// A spool I/O error about `path`.
    pub(crate) fn spool(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> SinkError {
        let path = path.into();
        move |source| SinkError::Spool { path, source }
    }
}
