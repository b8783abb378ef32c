//! Channels the upstream opens towards the client: remote-forwarded TCP
//! connections and sockets, agent and X11 channels. Each is relayed only
//! if the gate allowed the matching request earlier in this session
//! (tcpip-forward for that address and port, streamlocal-forward for that
//! path, auth-agent-req, x11-req); every other channel an upstream opens is
//! rejected.

use std::sync::Mutex;

use russh::{Channel, ChannelOpenFailure, client, server};

use super::forward;

/// A server-initiated channel kind.
#[derive(Clone, Debug)]
pub(super) enum Reverse {
    Forwarded {
        address: String,
        port: u32,
        originator: String,
        originator_port: u32,
    },
    Agent,
    X11 {
        originator: String,
        originator_port: u32,
    },
    /// A connection to a socket the server listens on for us.
    Streamlocal {
        path: String,
    },
}

#[derive(Default)]
struct Allowed {
    client: Option<server::Handle>,
    agent: bool,
    x11: bool,
    forwards: Vec<(String, u32)>,
    sockets: Vec<String>,
}

/// What the gate allowed for reverse channels in one session, and the
/// client session to open them on. A `std` mutex: never held across `.await`.
#[derive(Default)]
pub(super) struct Grants {
    inner: Mutex<Allowed>,
}

impl Grants {
    fn with<T>(&self, f: impl FnOnce(&mut Allowed) -> T) -> T {
        let mut guard = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Agent channels may be relayed to `client`.
    pub(super) fn allow_agent(&self, client: server::Handle) {
        self.with(|a| {
            a.agent = true;
            a.client = Some(client);
        });
    }

    /// X11 channels may be relayed to `client`.
    pub(super) fn allow_x11(&self, client: server::Handle) {
        self.with(|a| {
            a.x11 = true;
            a.client = Some(client);
        });
    }

    /// Connections to the remote forward `address:port` may be relayed.
    pub(super) fn allow_forward(&self, client: server::Handle, address: &str, port: u32) {
        self.with(|a| {
            a.forwards.push((address.to_string(), port));
            a.client = Some(client);
        });
    }

    /// Connections to the remote socket forward `path` may be relayed.
    pub(super) fn allow_streamlocal(&self, client: server::Handle, path: &str) {
        self.with(|a| {
            a.sockets.push(path.to_string());
            a.client = Some(client);
        });
    }

    /// The remote socket forward `path` was cancelled.
    pub(super) fn cancel_streamlocal(&self, path: &str) {
        self.with(|a| a.sockets.retain(|p| p != path));
    }

    /// The remote forward `address:port` was cancelled.
    pub(super) fn cancel_forward(&self, address: &str, port: u32) {
        self.with(|a| a.forwards.retain(|(h, p)| !(h == address && *p == port)));
    }

    /// The client session to relay `kind` to, if it was allowed.
    fn client_for(&self, kind: &Reverse) -> Option<server::Handle> {
        self.with(|a| {
            let ok = match kind {
                Reverse::Agent => a.agent,
                Reverse::X11 { .. } => a.x11,
                Reverse::Forwarded { address, port, .. } => {
                    a.forwards.iter().any(|(h, p)| h == address && p == port)
                }
                Reverse::Streamlocal { path } => a.sockets.contains(path),
            };
            ok.then(|| a.client.clone()).flatten()
        })
    }

    /// Relays an upstream-opened channel to the client, or rejects it.
    pub(super) async fn open(
        &self,
        kind: Reverse,
        channel: Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
    ) {
        let Some(client) = self.client_for(&kind) else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return;
        };
        tokio::spawn(async move {
            let opened = match kind {
                Reverse::Agent => client.channel_open_agent().await,
                Reverse::Streamlocal { path } => {
                    client.channel_open_forwarded_streamlocal(path).await
                }
                Reverse::X11 {
                    originator,
                    originator_port,
                } => client.channel_open_x11(originator, originator_port).await,
                Reverse::Forwarded {
                    address,
                    port,
                    originator,
                    originator_port,
                } => {
                    client
                        .channel_open_forwarded_tcpip(address, port, originator, originator_port)
                        .await
                }
            };
            match opened {
                Ok(to_client) => {
                    reply.accept().await;
                    let _ = forward::pipe(to_client, channel).await.close().await;
                }
                Err(_) => reply.reject(ChannelOpenFailure::ConnectFailed).await,
            }
        });
    }
}
