use std::io;
use std::path::PathBuf;

/// Why a piece of process identity could not be read.
///
/// Messages name the file and what was wrong with it, never its contents: environment files
/// are never parsed into errors at all, so no environment value can reach a log through here.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file or directory under the proc root (or the passwd file) could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file or directory that failed.
        path: PathBuf,
        /// The I/O error behind it.
        source: io::Error,
    },
    /// A file was read but does not have the expected layout.
    #[error("cannot parse {}: {what}", path.display())]
    Parse {
        /// The file that failed to parse.
        path: PathBuf,
        /// Which part was missing or malformed (a fixed description, no file contents).
        what: &'static str,
    },
}

impl IdentityError {
    /// True when the error only means the process is gone (its `/proc` entry vanished or never
    /// existed), which is routine for short-lived processes and not worth a warning.
    pub fn is_process_gone(&self) -> bool {
        match self {
            Self::Read { source, .. } => {
                source.kind() == io::ErrorKind::NotFound
                    || source.raw_os_error() == Some(libc::ESRCH)
            }
            Self::Parse { .. } => false,
        }
    }

    pub(crate) fn read(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Read {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn parse(path: impl Into<PathBuf>, what: &'static str) -> Self {
        Self::Parse {
            path: path.into(),
            what,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gone_only_for_missing_process() {
        let missing = IdentityError::read("/proc/1/stat", io::Error::from(io::ErrorKind::NotFound));
        let esrch = IdentityError::read("/proc/1/stat", io::Error::from_raw_os_error(libc::ESRCH));
        let denied = IdentityError::read(
            "/proc/1/environ",
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        let bad = IdentityError::parse("/proc/1/stat", "no ')' after comm");
        assert!(missing.is_process_gone());
        assert!(esrch.is_process_gone());
        assert!(!denied.is_process_gone());
        assert!(!bad.is_process_gone());
    }

    #[test]
    fn message_names_path_and_problem() {
        let bad = IdentityError::parse("/proc/7/stat", "no ')' after comm");
        assert_eq!(
            bad.to_string(),
            "cannot parse /proc/7/stat: no ')' after comm"
        );
    }
}
