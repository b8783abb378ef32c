//! Errors of the SSH proxy. Messages never contain credentials.

use std::path::PathBuf;

/// What can go wrong while proxying one SSH connection.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The SSH library reported a protocol or transport error.
    #[error("ssh protocol: {0}")]
    Protocol(#[from] russh::Error),
    /// A key or certificate could not be parsed, generated or signed.
    #[error("ssh key: {0}")]
    Key(String),
    /// Reading or writing a local file (state dir, recording, known_hosts).
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The upstream TCP connection failed.
    #[error("connecting to upstream {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The upstream presented a host key that is not the configured one.
    #[error("upstream host key mismatch for {addr}: expected {expected}, got {got}")]
    HostKeyMismatch {
        addr: String,
        expected: String,
        got: String,
    },
    /// The upstream's host key is not in the configured known_hosts file
    /// under any name it goes by.
    #[error("upstream host key for {addr} ({got}) is not in {known_hosts} (looked up as {names})")]
    HostKeyUnknown {
        addr: String,
        names: String,
        got: String,
        known_hosts: PathBuf,
    },
    /// The upstream rejected the injected credential.
    #[error("upstream {addr} rejected the injected credential for user {user}")]
    UpstreamAuth { addr: String, user: String },
    /// An sftp stream could not be followed (fail closed: the channel ends).
    #[error("sftp: {0}")]
    Sftp(String),
    /// The client asked to log in as a user the target does not allow.
    #[error("{0}")]
    LoginRefused(String),
    /// The upstream session is gone.
    #[error("upstream session closed")]
    UpstreamClosed,
    /// The client went away.
    #[error("client session closed")]
    ClientClosed,
}

impl SshError {
    /// A one-line text safe to show the SSH client.
    pub fn client_reply(&self) -> String {
        format!("interlock: {self}")
    }

    /// Whether this only says the peer went away (a closed TCP connection
    /// or a disconnect), which ends a session normally.
    pub fn is_disconnect(&self) -> bool {
        match self {
            SshError::Protocol(russh::Error::Disconnect | russh::Error::HUP) => true,
            SshError::Protocol(russh::Error::IO(e)) => matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
            ),
            SshError::ClientClosed | SshError::UpstreamClosed => true,
            _ => false,
        }
    }
}

impl From<russh::keys::ssh_key::Error> for SshError {
    fn from(e: russh::keys::ssh_key::Error) -> Self {
        SshError::Key(e.to_string())
    }
}

impl From<russh::keys::Error> for SshError {
    fn from(e: russh::keys::Error) -> Self {
        SshError::Key(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_reply_names_the_problem() {
        let e = SshError::HostKeyMismatch {
            addr: "10.0.0.1:22".into(),
            expected: "SHA256:a".into(),
            got: "SHA256:b".into(),
        };
        assert_eq!(
            e.client_reply(),
            "interlock: upstream host key mismatch for 10.0.0.1:22: expected SHA256:a, got SHA256:b"
        );
        assert!(!e.is_disconnect());
    }

    #[test]
    fn a_vanished_peer_is_a_disconnect() {
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "early eof");
        assert!(SshError::Protocol(russh::Error::IO(eof)).is_disconnect());
        assert!(SshError::Protocol(russh::Error::Disconnect).is_disconnect());
        let other = std::io::Error::other("x");
        assert!(!SshError::Protocol(russh::Error::IO(other)).is_disconnect());
    }
}
