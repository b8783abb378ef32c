//! Errors from reading and validating a policy file.

use std::path::PathBuf;

/// A policy file could not be used. Messages name the file and, for
/// everything but an unreadable file, the line and column.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}
