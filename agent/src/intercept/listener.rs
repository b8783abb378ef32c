//! Loopback listeners, one pair (127.0.0.1, ::1) per protocol, and the accept
//! loop that turns an accepted socket into an attributed session.

use std::{io, net::SocketAddr};

use agent_common::{config::AgentConfig, target::PROTOCOL_SLOTS};
use tokio::net::{TcpListener, TcpStream};
use tracing::{Instrument as _, info, info_span, warn};

use super::flow::{FlowIdentity, comm_str, original_destination};
use crate::{
    audit::EventKind,
    context::AppContext,
    gatekeeper::DaemonGate,
    net::SocketBuffers,
    policy::{Protocol, TargetId},
};

/// The bound listeners.
pub struct Listeners {
    bound: Vec<(Protocol, TcpListener)>,
    port4: [u16; PROTOCOL_SLOTS],
    port6: [u16; PROTOCOL_SLOTS],
}

impl Listeners {
    /// Binds 127.0.0.1 and ::1 for every protocol. Reuses the ports in
    /// `previous` (a restarted daemon's kernel side still points there), and
    /// falls back to fresh ports if they are taken. Accepted sockets get
    /// `buffers` (set on the listener, so the handshake already advertises
    /// the window they allow).
    ///
    /// # Errors
    /// Binding a fresh loopback port failed.
    pub async fn bind(previous: &AgentConfig, buffers: SocketBuffers) -> io::Result<Listeners> {
        let mut l = Listeners {
            bound: Vec::new(),
            port4: [0; PROTOCOL_SLOTS],
            port6: [0; PROTOCOL_SLOTS],
        };
        for proto in Protocol::ALL {
            let slot = proto.kernel() as usize;
            let want4 = previous.listen_port4.get(slot).copied().unwrap_or(0);
            let want6 = previous.listen_port6.get(slot).copied().unwrap_or(0);
            let v4 = bind_one(SocketAddr::from(([127, 0, 0, 1], want4)), buffers).await?;
            let v6 = bind_one(
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, want6)),
                buffers,
            )
            .await?;
            if let Some(p) = l.port4.get_mut(slot) {
                *p = v4.local_addr()?.port();
            }
            if let Some(p) = l.port6.get_mut(slot) {
                *p = v6.local_addr()?.port();
            }
            info!(protocol = %proto, v4 = %v4.local_addr()?, v6 = %v6.local_addr()?, "listening");
            l.bound.push((proto, v4));
            l.bound.push((proto, v6));
        }
        Ok(l)
    }

    /// IPv4 and IPv6 listener ports per kernel protocol slot.
    pub fn ports(&self) -> ([u16; PROTOCOL_SLOTS], [u16; PROTOCOL_SLOTS]) {
        (self.port4, self.port6)
    }

    /// Every bound address with its protocol.
    pub fn addresses(&self) -> Vec<(Protocol, SocketAddr)> {
        self.bound
            .iter()
            .filter_map(|(p, l)| l.local_addr().ok().map(|a| (*p, a)))
            .collect()
    }

    /// Hands out the listeners, for one accept loop each.
    pub fn into_inner(self) -> Vec<(Protocol, TcpListener)> {
        self.bound
    }
}

/// Listener ports come from the privileged range, so that while the daemon
/// is down no unprivileged local process can bind the port the kernel still
/// redirects to and receive intercepted connections.
const PRIVILEGED_PORTS: std::ops::Range<u16> = 600..1024;

async fn bind_one(addr: SocketAddr, buffers: SocketBuffers) -> io::Result<TcpListener> {
    if addr.port() != 0 {
        match buffers.listen(addr) {
            Ok(l) => return Ok(l),
            Err(e) => {
                warn!(%addr, error = %e, "previous listener port unavailable; binding a new one")
            }
        }
    }
    bind_fresh(addr.ip(), buffers).await
}

/// Binds a free privileged port on `ip`, starting at a random point of the
/// range; an ephemeral port (with a warning) only if all are taken.
async fn bind_fresh(ip: std::net::IpAddr, buffers: SocketBuffers) -> io::Result<TcpListener> {
    let span = PRIVILEGED_PORTS.end - PRIVILEGED_PORTS.start;
    let start: u16 = rand::random::<u16>() % span;
    for i in 0..span {
        let port = PRIVILEGED_PORTS.start + (start + i) % span;
        match buffers.listen(SocketAddr::new(ip, port)) {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            // Not allowed privileged ports (no CAP_NET_BIND_SERVICE): say so once.
            Err(e) => {
                warn!(%ip, error = %e, "cannot bind a privileged listener port");
                break;
            }
        }
    }
    warn!(
        %ip,
        "listener on an unprivileged port: while the daemon is down another local user could bind it"
    );
    buffers.listen(SocketAddr::new(ip, 0))
}

/// Accepts until shutdown; each connection runs as a tracked task.
pub async fn accept_loop(ctx: AppContext, protocol: Protocol, listener: TcpListener) {
    let shutdown = ctx.shutdown().clone();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let ctx2 = ctx.clone();
        ctx.tracker()
            .spawn(async move { handle(ctx2, protocol, stream, peer).await });
    }
}

async fn handle(ctx: AppContext, protocol: Protocol, stream: TcpStream, peer: SocketAddr) {
    let listener = stream.local_addr().unwrap_or(peer);
    let flow = match ctx.take_flow(peer) {
        Ok(Some(f)) => f,
        Ok(None) => {
            return refuse(
                &ctx,
                listener,
                peer,
                "no flow recorded by the kernel for this peer",
            )
            .await;
        }
        Err(e) => return refuse(&ctx, listener, peer, &format!("flow lookup failed: {e}")).await,
    };
    let Some(target) = ctx.policy().target(TargetId(flow.target_id)).cloned() else {
        return refuse(
            &ctx,
            listener,
            peer,
            "flow names a target the policy does not have",
        )
        .await;
    };
    // Only possible if the daemon's heartbeat stalled so long that the
    // kernel stopped trusting its tgid (OWN_CONNECTS_FRESH_NS): refusing
    // breaks what would be a loop.
    if flow.tgid == std::process::id() {
        return refuse(
            &ctx,
            listener,
            peer,
            "the daemon's own connect was redirected (its heartbeat is stale)",
        )
        .await;
    }
    if target.protocol != protocol {
        return refuse(
            &ctx,
            listener,
            peer,
            "flow's target speaks another protocol",
        )
        .await;
    }
    // Held until the session ends: one job cannot take every session
    // (and file descriptor) the daemon can serve.
    let _slot = match ctx.session_slot(flow.cgroup_id) {
        Ok(slot) => slot,
        Err(why) => {
            let reason = why.to_string();
            if protocol == Protocol::Postgres {
                // As the server's "sorry, too many clients already": an
                // ErrorResponse at once, which libpq reports whatever it sent.
                let msg = format!("interlock: {reason}");
                let _ = stream.try_write(crate::postgres::fatal("53300", &msg).raw());
            }
            return refuse(&ctx, listener, peer, &reason).await;
        }
    };
    let (process, env_token) = ctx
        .process_identity(flow.tgid, flow.pid, flow.uid, flow.gid)
        .await;
    let identity = FlowIdentity {
        original_destination: original_destination(&flow),
        target: target.name.clone(),
        protocol,
        client: peer,
        cgroup_id: flow.cgroup_id,
        comm: comm_str(&flow.comm),
        process,
        job_token: None,
    };
    let session_id = uuid::Uuid::now_v7().to_string();
    let span = info_span!(
        "session",
        id = %session_id,
        target = %identity.target,
        dst = %identity.original_destination,
        pid = identity.process.tgid,
        exe = identity.process.exe.as_deref().unwrap_or("?"),
    );
    ctx.count_session();
    let gate = DaemonGate::new(ctx.clone(), session_id, identity, target.clone())
        .with_env_token(env_token);
    match protocol {
        Protocol::Tcp => crate::tcp::relay(ctx, gate, stream).instrument(span).await,
        Protocol::Postgres => {
            super::dispatch::pg_session(ctx, gate, target, stream)
                .instrument(span)
                .await
        }
        Protocol::Ssh => {
            super::dispatch::ssh_session(ctx, gate, target, stream)
                .instrument(span)
                .await
        }
    }
}

async fn refuse(ctx: &AppContext, listener: SocketAddr, peer: SocketAddr, reason: &str) {
    warn!(%peer, reason, "refusing connection");
    ctx.events()
        .record(EventKind::ConnectionRefused {
            listener,
            peer,
            reason: reason.to_string(),
        })
        .await;
}
