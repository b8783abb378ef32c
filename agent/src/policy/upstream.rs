//! How the daemon reaches a target's real server: user, credentials by
//! reference (a file or an environment variable of the daemon — never the
//! secret itself in the policy), TLS, and SSH host-key pinning.

use std::{net::IpAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

/// Where a secret lives. Resolved when a session needs it, so rotating the
/// file takes effect without a reload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretRef {
    File(PathBuf),
    Env(String),
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            // Only recognised to be refused with a helpful message.
            Inline(#[allow(dead_code)] String),
            Ref {
                file: Option<PathBuf>,
                env: Option<String>,
            },
        }
        match Raw::deserialize(d)? {
            Raw::Inline(_) => Err(serde::de::Error::custom(
                "inline secrets are not allowed in policy files; write `{ file: PATH }` or `{ env: VARIABLE }`",
            )),
            Raw::Ref {
                file: Some(f),
                env: None,
            } => Ok(SecretRef::File(f)),
            Raw::Ref {
                file: None,
                env: Some(e),
            } => Ok(SecretRef::Env(e)),
            Raw::Ref { .. } => Err(serde::de::Error::custom(
                "a secret reference needs exactly one of `file` or `env`",
            )),
        }
    }
}

impl TlsMode {
    /// The mode as written in policy files.
    pub fn name(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyFull => "verify-full",
        }
    }
}

impl PasswordAuth {
    /// The method as written in policy files.
    pub fn name(self) -> &'static str {
        match self {
            PasswordAuth::Scram => "scram",
            PasswordAuth::Md5 => "md5",
            PasswordAuth::Cleartext => "cleartext",
        }
    }
}

/// A resolved secret. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// The secret's bytes, for the one place that sends them upstream.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a secret could not be read. Names where it was looked for, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read secret file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("environment variable {0} of the daemon is not set")]
    Env(String),
}

impl SecretRef {
    /// Reads the secret now. A file's trailing newline is not part of it.
    ///
    /// # Errors
    /// The file is unreadable or the variable unset.
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        let mut bytes = match self {
            SecretRef::File(path) => std::fs::read(path).map_err(|source| SecretError::File {
                path: path.clone(),
                source,
            })?,
            SecretRef::Env(name) => std::env::var_os(name)
                .ok_or_else(|| SecretError::Env(name.clone()))?
                .into_encoded_bytes(),
        };
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        Ok(Secret(bytes))
    }
}

/// TLS towards the real server (PostgreSQL).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    Disable,
    /// TLS if the server offers it, without certificate checks.
    #[default]
    Prefer,
    /// TLS or nothing, without certificate checks (encrypts; does not
    /// authenticate the server: `policy check` warns when a credential is
    /// injected).
    Require,
    /// TLS with the certificate checked against `ca_file` and the host name.
    VerifyFull,
}

/// A target's upstream settings.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// The user interlock logs in as, whatever user the client asked for
    /// (PostgreSQL default: the client's). SSH with an injected credential:
    /// this or `users` is required, so the job never picks whom the
    /// credential logs in as.
    #[serde(default)]
    pub user: Option<String>,
    /// SSH: the users the client may ask for; interlock logs in upstream as
    /// the one asked for, and refuses any other at authentication.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// SSH: environment variables a client may pass (`env` requests, OpenSSH
    /// `SendEnv`/`SetEnv`), as names or globs (`LC_*`). Any other is refused
    /// before it reaches the server: sshd's `AcceptEnv` would let
    /// `LD_PRELOAD`, `BASH_ENV` and the like choose what runs there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// PostgreSQL password or SSH password.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// SSH private key (OpenSSH format).
    #[serde(default)]
    pub key: Option<SecretRef>,
    /// PostgreSQL database (default: the client's).
    #[serde(default)]
    pub database: Option<String>,
    /// The only server addresses injected credentials go to. A target whose
    /// `match` is a range (or any address) and that injects a credential
    /// without verifying the server (`tls: verify-full`) must list them:
    /// the job chooses the address it dials, and could listen on one.
    #[serde(default)]
    pub servers: Vec<IpAddr>,
    /// PostgreSQL with an injected password: the methods interlock answers a
    /// server's password request with (default: SCRAM only; cleartext and md5
    /// hand the server the password or a replayable hash of it).
    #[serde(default = "scram_only")]
    pub password_auth: Vec<PasswordAuth>,
    #[serde(default)]
    pub tls: TlsMode,
    /// CA certificates (PEM) for `tls: verify-full`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// SSH: the server's public host key (`ssh-ed25519 AAAA...`).
    #[serde(default)]
    pub host_key: Option<String>,
    /// SSH: a known_hosts file to check the server's host key against.
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
    /// SSH: the host key interlock presents to clients for this target (an
    /// OpenSSH private key), instead of a host certificate minted by
    /// interlock's SSH CA; clients pin its public key in known_hosts.
    #[serde(default)]
    pub presented_host_key: Option<SecretRef>,
    /// SSH: client authentication methods accepted from the CI job (the
    /// flow identity is the credential; nothing the client sends is checked
    /// or forwarded, except a job token). Default: publickey, password, none.
    /// `job_token` (SSH and PostgreSQL): the client's password is a job token,
    /// verified and never forwarded; PostgreSQL clients are then asked for a
    /// password.
    #[serde(default = "all_client_auth")]
    pub client_auth: Vec<ClientAuthMethod>,
    /// PostgreSQL with injected credentials: when interlock asks the client
    /// for a password (never checked nor forwarded).
    #[serde(default)]
    pub client_password: ClientPassword,
    /// PostgreSQL with `client_auth: [job_token]`: ask for the token on a
    /// client leg without TLS too (default: refuse the session instead, since
    /// the token would cross the connection in clear).
    #[serde(default)]
    pub token_without_tls: bool,
}

/// When a PostgreSQL target with injected credentials asks the client for
/// a password. Whatever the client answers is discarded: the flow identity
/// is the credential. A target that takes a job token as the password
/// (`client_auth: [job_token]`) asks for it before the session is decided
/// and does not ask again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientPassword {
    /// Exactly when the server asked interlock for one, as the server would
    /// have asked the client: a client without a password fails as it would
    /// directly, and drivers report that a password was used.
    #[default]
    Mirror,
    /// Never: clients that have no password at all connect.
    Never,
}

/// A PostgreSQL password method interlock may answer with an injected password.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PasswordAuth {
    /// SCRAM-SHA-256: the server learns no password and must prove it knows it.
    Scram,
    /// md5: the server gets a hash that logs in as the role wherever it is stored as md5.
    Md5,
    /// `password`: the server gets the password itself.
    Cleartext,
}

fn scram_only() -> Vec<PasswordAuth> {
    vec![PasswordAuth::Scram]
}

/// A client authentication method the SSH proxy accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    Publickey,
    Password,
    None,
    /// The password is a job token (see `identity.issuers`).
    JobToken,
}

fn all_client_auth() -> Vec<ClientAuthMethod> {
    vec![
        ClientAuthMethod::Publickey,
        ClientAuthMethod::Password,
        ClientAuthMethod::None,
    ]
}

impl Default for Upstream {
    fn default() -> Upstream {
        Upstream {
            user: None,
            users: Vec::new(),
            env: Vec::new(),
            password: None,
            key: None,
            database: None,
            servers: Vec::new(),
            password_auth: scram_only(),
            tls: TlsMode::default(),
            ca_file: None,
            host_key: None,
            known_hosts: None,
            presented_host_key: None,
            client_auth: all_client_auth(),
            client_password: ClientPassword::default(),
            token_without_tls: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_resolve_and_never_print() {
        let dir = crate::test_dir::TestDir::new("il-secret");
        let f = dir.join("pw");
        std::fs::write(&f, "hunter2\n").unwrap();
        let s = SecretRef::File(f).resolve().unwrap();
        assert_eq!(s.expose(), b"hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        let missing = SecretRef::Env("INTERLOCK_TEST_NO_SUCH_VAR".into())
            .resolve()
            .unwrap_err();
        assert!(missing.to_string().contains("INTERLOCK_TEST_NO_SUCH_VAR"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn inline_secrets_are_refused() {
        let e = serde_yaml::from_str::<Upstream>("password: hunter2\n").unwrap_err();
        assert!(
            e.to_string().contains("inline secrets are not allowed"),
            "{e}"
        );
        let e = serde_yaml::from_str::<Upstream>("password: {file: /a, env: B}\n").unwrap_err();
        assert!(e.to_string().contains("exactly one"), "{e}");
        let u: Upstream =
            serde_yaml::from_str("password: {env: PGPASS}\ntls: verify-full\n").unwrap();
        assert_eq!(u.password, Some(SecretRef::Env("PGPASS".into())));
        assert_eq!(u.tls, TlsMode::VerifyFull);
        let u: Upstream =
            serde_yaml::from_str("presented_host_key: {file: /etc/interlock/host_key}\n").unwrap();
        assert_eq!(
            u.presented_host_key,
            Some(SecretRef::File("/etc/interlock/host_key".into()))
        );
        assert!(serde_yaml::from_str::<Upstream>("presented_host_key: AAAA\n").is_err());
        assert_eq!(Upstream::default().client_password, ClientPassword::Mirror);
        let u: Upstream = serde_yaml::from_str("client_password: never\n").unwrap();
        assert_eq!(u.client_password, ClientPassword::Never);
        let e = serde_yaml::from_str::<Upstream>("client_password: always\n").unwrap_err();
        assert!(e.to_string().contains("mirror"), "{e}");
    }

    #[test]
    fn servers_and_password_methods_parse() {
        let u = Upstream::default();
        assert_eq!(u.password_auth, [PasswordAuth::Scram]);
        assert!(u.servers.is_empty());
        let u: Upstream = serde_yaml::from_str(
            "servers: [10.0.0.5, '::1']\npassword_auth: [scram, md5, cleartext]\n",
        )
        .unwrap();
        assert_eq!(
            u.servers,
            [
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert_eq!(
            u.password_auth,
            [
                PasswordAuth::Scram,
                PasswordAuth::Md5,
                PasswordAuth::Cleartext
            ]
        );
        // A range is not a server: credentials go to exact addresses only.
        assert!(serde_yaml::from_str::<Upstream>("servers: [10.0.0.0/8]\n").is_err());
        let e = serde_yaml::from_str::<Upstream>("password_auth: [plain]\n").unwrap_err();
        assert!(e.to_string().contains("cleartext"), "{e}");
    }
}
