//! Forwarding requests: local (direct-tcpip, direct-streamlocal) and
//! remote (tcpip-forward, streamlocal-forward) forwarding are decided by
//! the gate and relayed only if allowed. The policy refuses forwarding no
//! rule allows.

use std::sync::Arc;

use russh::{Channel, ChannelMsg, ChannelOpenFailure, ChannelWriteHalf, client, server};

use super::{decision, server::SessionCtx, upstream::Upstream};
use crate::gate::{CommandKind, Record, Request};

/// A channel the client opens towards the server's side.
pub(super) enum Direct {
    /// direct-tcpip (`ssh -L`, `-W`, `-D`, `-J`).
    Tcpip {
        host: String,
        port: u32,
        originator: String,
        originator_port: u32,
    },
    /// direct-streamlocal@openssh.com (`ssh -L` to a socket path).
    Streamlocal { path: String },
}

impl Direct {
    fn kind_and_text(&self) -> (CommandKind, String) {
        match self {
            Direct::Tcpip { host, port, .. } => {
                (CommandKind::PortForward, format!("{host}:{port}"))
            }
            Direct::Streamlocal { path } => {
                (CommandKind::StreamlocalForward, format!("unix:{path}"))
            }
        }
    }
}

/// Decides and relays one direct-tcpip or direct-streamlocal channel.
pub(super) async fn direct(
    ctx: Arc<SessionCtx>,
    upstream: Arc<Upstream>,
    channel: Channel<server::Msg>,
    reply: server::ChannelOpenHandle,
    spec: Direct,
) {
    let (kind, text) = spec.kind_and_text();
    let request = Request::Command {
        kind,
        text: text.clone(),
    };
    if let Err(line) = decision::decide_quietly(ctx.gate.as_ref(), &request).await {
        reply
            .reject(ChannelOpenFailure::Other {
                code: 1,
                reason: line,
            })
            .await;
        return;
    }
    let opened = match spec {
        Direct::Tcpip {
            host,
            port,
            originator,
            originator_port,
        } => {
            upstream
                .channel_open_direct_tcpip(host, port, originator, originator_port)
                .await
        }
        Direct::Streamlocal { path } => upstream.channel_open_direct_streamlocal(path).await,
    };
    let up = match opened {
        Ok(up) => up,
        Err(e) => {
            let reason = format!("interlock: upstream refused {text}: {e}");
            reply
                .reject(ChannelOpenFailure::Other { code: 2, reason })
                .await;
            return;
        }
    };
    reply.accept().await;
    let started = std::time::Instant::now();
    let to_client = pipe(channel, up).await;
    ctx.gate
        .record(Record::Command {
            kind,
            text,
            exit_status: None,
            exit_signal: None,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            recording: None,
        })
        .await;
    let _ = to_client.close().await;
}

/// Relays bytes and EOF both ways between a client-side and an
/// upstream-side channel until the upstream side is closed. The directions
/// run concurrently, so one waiting for window space never stops the other
/// from being read. Returns the client side for the caller to close (after
/// recording, so a client that waits for the close also finds the record).
pub(super) async fn pipe(
    client: Channel<server::Msg>,
    upstream: Channel<client::Msg>,
) -> ChannelWriteHalf<server::Msg> {
    let (mut cr, cw) = client.split();
    let (mut ur, uw) = upstream.split();
    let outbound = async {
        loop {
            match cr.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    if uw.data_bytes(data).await.is_err() {
                        return;
                    }
                }
                Some(ChannelMsg::Eof) => {
                    let _ = uw.eof().await;
                }
                Some(ChannelMsg::Close) | None => return,
                Some(_) => {}
            }
        }
    };
    let inbound = async {
        loop {
            match ur.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    let _ = cw.data_bytes(data).await;
                }
                Some(ChannelMsg::Eof) => {
                    let _ = cw.eof().await;
                }
                Some(ChannelMsg::Close) | None => return,
                Some(_) => {}
            }
        }
    };
    {
        tokio::pin!(outbound, inbound);
        tokio::select! {
            () = &mut inbound => {}
            () = &mut outbound => {
                let _ = uw.close().await;
                inbound.await;
            }
        }
    }
    let _ = uw.close().await;
    cw
}

/// Decides a remote port forwarding request (`ssh -R`) and, if allowed,
/// asks the upstream to listen; connections to it are relayed back by
/// [`super::reverse`]. Returns whether the forward is in place. A hold
/// blocks this session's other traffic until it is decided (global
/// requests are answered in order).
pub(super) async fn remote(
    ctx: &SessionCtx,
    upstream: &Upstream,
    client: server::Handle,
    address: &str,
    port: &mut u32,
) -> bool {
    let request = Request::Command {
        kind: CommandKind::RemoteForward,
        text: format!("remote {address}:{port}"),
    };
    if decision::decide_quietly(ctx.gate.as_ref(), &request)
        .await
        .is_err()
    {
        return false;
    }
    match upstream.tcpip_forward(address, *port).await {
        Ok(bound) => {
            if *port == 0 {
                *port = bound;
            }
            ctx.grants.allow_forward(client, address, *port);
            true
        }
        Err(e) => {
            tracing::info!(session = %ctx.id, error = %e, "upstream refused remote forwarding");
            false
        }
    }
}

/// Decides a remote socket forwarding request (`ssh -R` with a socket path
/// on the server) and, if allowed, asks the upstream to listen there.
pub(super) async fn remote_streamlocal(
    ctx: &SessionCtx,
    upstream: &Upstream,
    client: server::Handle,
    path: &str,
) -> bool {
    let request = Request::Command {
        kind: CommandKind::StreamlocalForward,
        text: format!("remote unix:{path}"),
    };
    if decision::decide_quietly(ctx.gate.as_ref(), &request)
        .await
        .is_err()
    {
        return false;
    }
    match upstream.streamlocal_forward(path).await {
        Ok(()) => {
            ctx.grants.allow_streamlocal(client, path);
            true
        }
        Err(e) => {
            tracing::info!(session = %ctx.id, error = %e, "upstream refused socket forwarding");
            false
        }
    }
}
