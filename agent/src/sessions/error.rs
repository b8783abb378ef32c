//! Errors of the investigator commands (`interlock sessions`, `interlock replay`).

use std::path::PathBuf;

use crate::audit::LogError;

/// A session could not be found, the log could not be read, or an argument is wrong.
#[derive(Debug, thiserror::Error)]
pub enum SessionsError {
    /// The audit log is missing, unreadable or damaged (the message suggests `audit verify`).
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(
        "no session `{id}` in the audit log under {dir}; `interlock sessions list` shows the ids"
    )]
    Unknown { id: String, dir: PathBuf },
    #[error(
        "session id prefix `{prefix}` is ambiguous: it matches {count} sessions ({examples}); give more characters"
    )]
    Ambiguous {
        prefix: String,
        count: usize,
        examples: String,
    },
    #[error(
        "--since `{0}`: not an RFC 3339 UTC time (2026-01-02T03:04:05Z) nor a duration (90s, 15m, 1h, 2days)"
    )]
    Since(String),
    #[error("--speed {0}: must be a number greater than 0")]
    Speed(f64),
    #[error("cannot read the terminal recording {path}: {source}")]
    Recording {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A terminal recording differs from (or lacks) the size and SHA-256
    /// the audit trail recorded for it.
    #[error(
        "terminal recording {path} {}; the audit trail's own integrity is `interlock audit verify`'s",
        if *missing { "is missing although the audit trail recorded it" } else { "does not match the SHA-256 the audit trail recorded for it: it was changed after the session" }
    )]
    RecordingChanged { path: PathBuf, missing: bool },
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}
