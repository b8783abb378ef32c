//! Forwarding requests: local port forwarding (direct-tcpip) is decided and
//! relayed; remote forwarding, agent forwarding and X11 are decided but
//! not relayed yet, so they are refused even when allowed.

use std::sync::Arc;

use russh::{Channel, ChannelMsg, ChannelOpenFailure, server};

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
    let (mut cr, cw) = channel.split();
    let (mut ur, uw) = up.split();
    let (mut c_open, mut u_open) = (true, true);
    while c_open || u_open {
        tokio::select! {
            m = cr.wait(), if c_open => match m {
                Some(ChannelMsg::Data { data }) => {
                    if uw.data_bytes(data).await.is_err() { break; }
                }
                Some(ChannelMsg::Eof) => { let _ = uw.eof().await; }
                Some(ChannelMsg::Close) | None => { c_open = false; let _ = uw.close().await; }
                Some(_) => {}
            },
            m = ur.wait(), if u_open => match m {
                Some(ChannelMsg::Data { data }) => {
                    if cw.data_bytes(data).await.is_err() { break; }
                }
                Some(ChannelMsg::Eof) => { let _ = cw.eof().await; }
                Some(ChannelMsg::Close) | None => { u_open = false; let _ = cw.close().await; }
                Some(_) => {}
            },
        }
    }
    ctx.gate
        .record(Record::Command {
            kind: CommandKind::PortForward,
            text,
            exit_status: None,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
        .await;
}

/// Decides a forwarding request interlock cannot relay yet (remote port
/// forwarding, agent forwarding, X11): the gate sees it, and it is refused
/// whatever the verdict. Returns whether it was granted (always `false`).
pub(super) async fn ask_unsupported(ctx: &SessionCtx, kind: CommandKind, text: String) -> bool {
    let request = Request::Command {
        kind,
        text: text.clone(),
    };
    if decision::decide_quietly(ctx.gate.as_ref(), &request)
        .await
        .is_ok()
    {
        tracing::info!(session = %ctx.id, ?kind, %text, "ssh forwarding allowed by policy but not relayed by interlock");
    }
    false
}
