//! Errors of the audit log: opening, writing, the host key, reading segments.

use std::path::PathBuf;

/// The audit log could not be opened, written or read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot open audit log {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("event log is closed")]
    Closed,
    #[error("host key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("host key {path} is accessible by group or others (mode {mode:04o}); `chmod 600` it")]
    KeyMode { path: PathBuf, mode: u32 },
    #[error("public key `{0}` is not 64 hex digits of an ed25519 key")]
    PublicKey(String),
    #[error(
        "audit log {path} line {line}: {why}; run `interlock audit verify` to locate the damage"
    )]
    Corrupt {
        path: PathBuf,
        line: usize,
        why: &'static str,
    },
    #[error("no audit log in {0} (no audit/segment-*.jsonl); pass --state-dir")]
    NoLog(PathBuf),
}

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io { path, source }
    }
}
