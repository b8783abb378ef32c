//! The upstream side: a russh client that connects to the real sshd,
//! verifies its host key (pinned or known_hosts, never trust-on-first-use)
//! and authenticates with the injected credential.

use std::{borrow::Cow, path::PathBuf, sync::Arc};

use russh::{
    Channel, ChannelOpenFailure, Preferred, cipher, client,
    keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate},
};

use super::{
    Credential, HostKeyCheck, SshError, SshTarget,
    reverse::{Grants, Reverse},
};

/// The upstream leg prefers AES-GCM: with AES instructions (every x86-64
/// and arm64 server CPU of the last decade) it costs the daemon, which
/// decrypts and re-encrypts every byte, less than ChaCha20-Poly1305, and
/// every OpenSSH since 6.2 offers it. russh's other ciphers follow for
/// servers without it.
const UPSTREAM_CIPHERS: &[cipher::Name] = &[
    cipher::AES_256_GCM,
    cipher::AES_128_GCM,
    cipher::CHACHA20_POLY1305,
    cipher::AES_256_CTR,
    cipher::AES_192_CTR,
    cipher::AES_128_CTR,
];

/// The connected, authenticated upstream session.
pub(super) type Upstream = client::Handle<Verifier>;

/// Checks the upstream host key against the target's configuration.
pub(super) struct Verifier {
    addr: String,
    /// The upstream address, then the target's host names.
    hosts: Vec<String>,
    port: u16,
    check: HostKeyCheck,
    grants: Arc<Grants>,
}

fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

impl Verifier {
    fn verify(&self, key: &PublicKey) -> Result<(), SshError> {
        match &self.check {
            HostKeyCheck::Pinned(text) => {
                let pinned = PublicKey::from_openssh(text.trim())?;
                if pinned.key_data() == key.key_data() {
                    Ok(())
                } else {
                    Err(SshError::HostKeyMismatch {
                        addr: self.addr.clone(),
                        expected: fingerprint(&pinned),
                        got: fingerprint(key),
                    })
                }
            }
            HostKeyCheck::KnownHosts(path) => self.verify_known_hosts(path, key),
        }
    }

    /// Looks up every name the upstream goes by: an entry holding another
    /// key for any of them refuses the session even if another name's
    /// entry holds this key (one of the two is wrong).
    fn verify_known_hosts(&self, path: &PathBuf, key: &PublicKey) -> Result<(), SshError> {
        let mut known = false;
        for host in &self.hosts {
            match russh::keys::check_known_hosts_path(host, self.port, key, path) {
                Ok(found) => known |= found,
                Err(russh::keys::Error::KeyChanged { line }) => {
                    return Err(SshError::HostKeyMismatch {
                        addr: self.addr.clone(),
                        expected: format!(
                            "the key for {host} on line {line} of {}",
                            path.display()
                        ),
                        got: fingerprint(key),
                    });
                }
                Err(e) => return Err(SshError::Key(format!("{}: {e}", path.display()))),
            }
        }
        if known {
            Ok(())
        } else {
            Err(SshError::HostKeyUnknown {
                addr: self.addr.clone(),
                names: self.hosts.join(", "),
                got: fingerprint(key),
                known_hosts: path.clone(),
            })
        }
    }
}

impl client::Handler for Verifier {
    type Error = SshError;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => self.verify(key).map(|()| true),
            // We never advertise certificate algorithms upstream.
            PublicKeyOrCertificate::Certificate(_) => Ok(false),
        }
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<client::Msg>,
        connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let kind = Reverse::Forwarded {
            address: connected_address.to_string(),
            port: connected_port,
            originator: originator_address.to_string(),
            originator_port,
        };
        self.grants.open(kind, channel, reply).await;
        Ok(())
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        channel: Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.grants.open(Reverse::Agent, channel, reply).await;
        Ok(())
    }

    async fn server_channel_open_x11(
        &mut self,
        channel: Channel<client::Msg>,
        originator_address: &str,
        originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let kind = Reverse::X11 {
            originator: originator_address.to_string(),
            originator_port,
        };
        self.grants.open(kind, channel, reply).await;
        Ok(())
    }

    // An upstream has no business opening these towards a client.
    async fn server_channel_open_session(
        &mut self,
        _channel: Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn server_channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<client::Msg>,
        _host_to_connect: &str,
        _port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        channel: Channel<client::Msg>,
        socket_path: &str,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let kind = Reverse::Streamlocal {
            path: socket_path.to_string(),
        };
        self.grants.open(kind, channel, reply).await;
        Ok(())
    }
}

/// Connects to the target's sshd and authenticates as `user` with the
/// injected credential.
///
/// # Errors
/// TCP connect failure, host key mismatch or unknown key, protocol errors,
/// and a rejected credential.
pub(super) async fn connect(
    target: &SshTarget,
    user: &str,
    grants: Arc<Grants>,
) -> Result<Upstream, SshError> {
    let addr = target.upstream.to_string();
    let tcp = target
        .socket_buffers
        .connect(target.upstream)
        .await
        .map_err(|source| SshError::Connect {
            addr: addr.clone(),
            source,
        })?;
    let verifier = Verifier {
        addr: addr.clone(),
        hosts: std::iter::once(target.upstream.ip().to_string())
            .chain(target.host_names.iter().cloned())
            .collect(),
        port: target.upstream.port(),
        check: target.host_key_check.clone(),
        grants,
    };
    let config = Arc::new(client::Config {
        preferred: Preferred {
            cipher: Cow::Borrowed(UPSTREAM_CIPHERS),
            ..Preferred::DEFAULT
        },
        ..client::Config::default()
    });
    let mut handle = client::connect_stream(config, tcp, verifier).await?;
    let result = match &target.credential {
        Credential::Password(p) => handle.authenticate_password(user, p.as_str()).await?,
        Credential::PrivateKey(bytes) => {
            let key = PrivateKey::from_openssh(bytes)
                .map_err(|_| SshError::Key("the injected private key does not parse".into()))?;
            let hash = if key.algorithm().is_rsa() {
                handle.best_supported_rsa_hash().await?.flatten()
            } else {
                None
            };
            let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
            handle.authenticate_publickey(user, key).await?
        }
    };
    if result.success() {
        Ok(handle)
    } else {
        Err(SshError::UpstreamAuth {
            addr,
            user: user.to_string(),
        })
    }
}
