//! What one proxied SSH connection needs to know: where the upstream is, the
//! credential to inject, how to verify the upstream host key, which client
//! auth methods to accept, the host identity to present, where to record.

use std::{fmt, net::SocketAddr, path::PathBuf};

use russh::keys::{Certificate, PrivateKey};

use super::SshError;

/// The upstream credential interlock injects; the client never sees it.
/// `Debug` is redacted.
#[derive(Clone)]
pub enum Credential {
    /// An OpenSSH private key (PEM `-----BEGIN OPENSSH PRIVATE KEY-----`).
    PrivateKey(Vec<u8>),
    /// A password.
    Password(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::PrivateKey(_) => f.write_str("PrivateKey(<redacted>)"),
            Credential::Password(_) => f.write_str("Password(<redacted>)"),
        }
    }
}

/// How the upstream host key is verified. A mismatch refuses the session.
#[derive(Clone, Debug)]
pub enum HostKeyCheck {
    /// The one accepted key, in OpenSSH public key format
    /// (`ssh-ed25519 AAAA... comment`).
    Pinned(String),
    /// An OpenSSH known_hosts file: an entry for the upstream's address or
    /// one of the target's host names (`[name]:port` when the port is not
    /// 22) must hold the key, and no entry for them may hold another key of
    /// the same algorithm.
    KnownHosts(PathBuf),
}

/// Which client authentication methods the proxy accepts. The client's
/// credential is never forwarded: the flow identity is the credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAuth {
    /// Any key the client proves it holds.
    pub publickey: bool,
    /// Any password (it is never checked nor forwarded).
    pub password: bool,
    /// No credential at all.
    pub none: bool,
    /// A password that is a job token: given to the gate (which verifies it
    /// when it decides the session), never forwarded.
    pub job_token: bool,
}

impl Default for ClientAuth {
    fn default() -> Self {
        ClientAuth {
            publickey: true,
            password: false,
            none: false,
            job_token: false,
        }
    }
}

/// The identity interlock presents to clients: a host key, optionally with
/// a host certificate signed by interlock's SSH CA (see [`super::SshCa`]).
#[derive(Clone)]
pub struct HostIdentity {
    pub(super) key: PrivateKey,
    pub(super) certificate: Option<Certificate>,
}

impl fmt::Debug for HostIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostIdentity")
            .field("public_key", &self.public_key_openssh())
            .field("certificate", &self.certificate.is_some())
            .finish()
    }
}

impl HostIdentity {
    /// A fresh ed25519 host key without certificate.
    ///
    /// # Errors
    /// Key generation failure.
    pub fn generate() -> Result<HostIdentity, SshError> {
        let key = PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519)?;
        Ok(HostIdentity {
            key,
            certificate: None,
        })
    }

    /// A host key from OpenSSH private key text.
    ///
    /// # Errors
    /// The text is not an unencrypted OpenSSH private key.
    pub fn from_openssh(private_key: &[u8]) -> Result<HostIdentity, SshError> {
        let key = PrivateKey::from_openssh(private_key)?;
        Ok(HostIdentity {
            key,
            certificate: None,
        })
    }

    /// The host public key in OpenSSH format (for a pinned known_hosts line).
    pub fn public_key_openssh(&self) -> String {
        self.key.public_key().to_openssh().unwrap_or_default()
    }

    /// Whether a host certificate is presented.
    pub fn has_certificate(&self) -> bool {
        self.certificate.is_some()
    }
}

/// Everything one proxied SSH connection needs.
#[derive(Clone, Debug)]
pub struct SshTarget {
    /// Where the real sshd listens.
    pub upstream: SocketAddr,
    /// The target's host names (from the policy), also looked up in a
    /// known_hosts file besides the upstream address.
    pub host_names: Vec<String>,
    /// The user interlock logs in upstream as, whatever the client asked for.
    pub upstream_user: Option<String>,
    /// Without `upstream_user`: the users a client may ask for (and is
    /// logged in upstream as). Neither: every login is refused.
    pub upstream_users: Vec<String>,
    /// Environment variables (names or globs such as `LC_*`) a client may
    /// pass with `env` requests; any other is refused, never relayed.
    pub env: Vec<String>,
    /// Decide the session when the client authenticates, with the login
    /// known to the gate (rules on `ssh_user`), instead of before the
    /// authentication banner. Job-token targets always do.
    pub decide_at_login: bool,
    /// The credential injected upstream.
    pub credential: Credential,
    /// How the upstream host key is verified.
    pub host_key_check: HostKeyCheck,
    /// Which client auth methods are accepted.
    pub client_auth: ClientAuth,
    /// The host key (and certificate) presented to the client.
    pub host_identity: HostIdentity,
    /// Where `<session id>-<channel>.cast` recordings go.
    pub recording_dir: PathBuf,
    /// The session id recordings are named after (the daemon's, so a
    /// recording and the session's audit events share it); `None`: a fresh one.
    pub session_id: Option<String>,
    /// Kernel buffer sizes of the upstream socket.
    pub socket_buffers: crate::net::SocketBuffers,
}

impl SshTarget {
    /// The user interlock logs in upstream as when the client asked for
    /// `requested`; `Err` is the refusal for the client.
    pub(super) fn login_user(&self, requested: &str) -> Result<String, String> {
        if let Some(fixed) = &self.upstream_user {
            return Ok(fixed.clone());
        }
        if self.upstream_users.iter().any(|u| u == requested) {
            return Ok(requested.to_string());
        }
        let shown = crate::text::escape_controls(requested);
        Err(if self.upstream_users.is_empty() {
            format!("login as `{shown}` refused: the target names no upstream user")
        } else {
            format!(
                "login as `{shown}` is not allowed (upstream.users: {})",
                self.upstream_users.join(", ")
            )
        })
    }

    /// Whether a client may pass the environment variable `name`.
    pub(super) fn env_allowed(&self, name: &str) -> bool {
        self.env
            .iter()
            .any(|p| globset::Glob::new(p).is_ok_and(|g| g.compile_matcher().is_match(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(user: Option<&str>, users: &[&str], env: &[&str]) -> SshTarget {
        SshTarget {
            upstream: "127.0.0.1:22".parse().unwrap(),
            host_names: Vec::new(),
            upstream_user: user.map(str::to_string),
            upstream_users: users.iter().map(|u| u.to_string()).collect(),
            env: env.iter().map(|u| u.to_string()).collect(),
            decide_at_login: false,
            credential: Credential::Password("pw".into()),
            host_key_check: HostKeyCheck::Pinned(String::new()),
            client_auth: ClientAuth::default(),
            host_identity: HostIdentity::generate().unwrap(),
            recording_dir: PathBuf::new(),
            session_id: None,
            socket_buffers: Default::default(),
        }
    }

    #[test]
    fn the_client_never_chooses_the_upstream_user() {
        // Fixed: whatever the client asked for.
        let t = target(Some("deploy"), &[], &[]);
        assert_eq!(t.login_user("root").unwrap(), "deploy");
        // Allow-list: only those, as asked.
        let t = target(None, &["deploy", "ci"], &[]);
        assert_eq!(t.login_user("ci").unwrap(), "ci");
        let e = t.login_user("root").unwrap_err();
        assert!(
            e.contains("`root` is not allowed (upstream.users: deploy, ci)"),
            "{e}"
        );
        // Terminal escapes in the name are shown escaped.
        assert!(!t.login_user("a\x1b[2Jb").unwrap_err().contains('\x1b'));
        // Neither: nobody.
        assert!(target(None, &[], &[]).login_user("root").is_err());
    }

    #[test]
    fn env_is_an_allow_list() {
        let t = target(Some("u"), &[], &["LANG", "LC_*"]);
        assert!(t.env_allowed("LANG") && t.env_allowed("LC_ALL"));
        for bad in [
            "LD_PRELOAD",
            "BASH_ENV",
            "GIT_SSH_COMMAND",
            "LANGUAGE",
            "lang",
        ] {
            assert!(!t.env_allowed(bad), "{bad}");
        }
        assert!(!target(Some("u"), &[], &[]).env_allowed("LANG"));
    }

    #[test]
    fn credentials_are_redacted() {
        let c = Credential::Password("hunter2".into());
        assert!(!format!("{c:?}").contains("hunter2"));
        let k = Credential::PrivateKey(b"secret-bytes".to_vec());
        assert!(!format!("{k:?}").contains("secret"));
    }

    #[test]
    fn host_identity_round_trips_openssh() {
        let id = HostIdentity::generate().unwrap();
        let text = id.key.to_openssh(Default::default()).unwrap();
        let back = HostIdentity::from_openssh(text.as_bytes()).unwrap();
        assert_eq!(back.public_key_openssh(), id.public_key_openssh());
        assert!(HostIdentity::from_openssh(b"nope").is_err());
    }
}
