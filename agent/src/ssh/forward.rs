//! Forwarding requests: local (direct-tcpip) and remote (tcpip-forward)
//! port forwarding are decided by the gate and relayed only if allowed.

use std::sync::Arc;

use russh::{Channel, ChannelMsg, ChannelOpenFailure, ChannelWriteHalf, client, server};

use super::{decision, server::SessionCtx, upstream::Upstream};
use crate::gate::{CommandKind, Record, Request};

/// A direct-tcpip channel request.
pub(super) struct DirectTcpip {
    pub(super) host: String,
    pub(super) port: u32,
    pub(super) originator: String,
    pub(super) originator_port: u32,
}

/// Decides and relays one direct-tcpip channel.
pub(super) async fn direct_tcpip(
    ctx: Arc<SessionCtx>,
    upstream: Arc<Upstream>,
    channel: Channel<server::Msg>,
    reply: server::ChannelOpenHandle,
    spec: DirectTcpip,
) {
    let text = format!("{}:{}", spec.host, spec.port);
    let request = Request::Command {
        kind: CommandKind::PortForward,
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
    let up = match upstream
        .channel_open_direct_tcpip(spec.host, spec.port, spec.originator, spec.originator_port)
        .await
    {
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
            kind: CommandKind::PortForward,
            text,
            exit_status: None,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
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
        kind: CommandKind::PortForward,
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
