//! The relay session: decide the connection (allow, block, or hold it
//! until approved), connect upstream, pump both directions, report.
//!
//! Full duplex by construction, so it cannot deadlock: each direction is
//! its own pump (read one side into a fixed [`BUF`], write it all to the
//! other side), and the two pumps are polled independently. A pump
//! waiting to write (the receiver is slow or not reading) stops only its
//! own reading of the producer, which is the backpressure: that producer's
//! socket buffer fills and TCP flow control makes it wait. The other
//! direction's pump is never behind that wait, so a peer that writes
//! while not reading (or reads slower than it writes) cannot stop
//! interlock from reading what it sends on the other direction. Memory is
//! bounded: one [`BUF`] per direction.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
};
use tracing::{info, warn};

use crate::{
    audit::SessionOutcome,
    context::AppContext,
    gate::{Gate as _, HoldOutcome, Request, Verdict},
    gatekeeper::DaemonGate,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const BUF: usize = 64 * 1024;

/// Decides the connection, then relays `client` to the identity's original
/// destination until either side closes or the daemon's drain time runs
/// out. The gate emits the session's start; this emits its end.
pub async fn relay(ctx: AppContext, gate: DaemonGate, client: TcpStream) {
    let dst = gate.identity().original_destination;
    let started = Instant::now();
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);

    let refused = match gate.decide(&Request::Session).await {
        Verdict::Allow { .. } => None,
        Verdict::Block { message, .. } => Some((SessionOutcome::Blocked, message)),
        // A reset, as for a block; nothing of the session is recorded.
        Verdict::Unavailable { message } => Some((SessionOutcome::Blocked, message)),
        Verdict::Hold(held) => {
            info!(approval = %held.approval_id, "connection held for approval");
            tokio::select! {
                outcome = held.outcome() => match outcome {
                    HoldOutcome::Approved { .. } => None,
                    other => Some((SessionOutcome::NotApproved, format!("{other:?}"))),
                },
                _ = client_gone(&client) => Some((SessionOutcome::NotApproved, "client closed while held".into())),
                _ = ctx.force_close().cancelled() => Some((SessionOutcome::Drained, "daemon stopped while held".into())),
            }
        }
    };
    let connect = async {
        match refused {
            Some(r) => Err(r),
            None => {
                Ok(tokio::time::timeout(CONNECT_TIMEOUT, ctx.socket_buffers().connect(dst)).await)
            }
        }
    };

    let (outcome, error) = match connect.await {
        Err((outcome, why)) => {
            reset(&client);
            (outcome, Some(why))
        }
        Ok(connected) => match connected {
            Err(_) => {
                reset(&client);
                (
                    SessionOutcome::UpstreamUnreachable,
                    Some(format!("connect to {dst} timed out")),
                )
            }
            Ok(Err(e)) => {
                reset(&client);
                (
                    SessionOutcome::UpstreamUnreachable,
                    Some(format!("connect to {dst}: {e}")),
                )
            }
            Ok(Ok(upstream)) => {
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (ur, uw) = upstream.into_split();
                let both = async { tokio::join!(pump(cr, uw, &up), pump(ur, cw, &down)) };
                tokio::select! {
                    (a, b) = both => match a.and(b) {
                        Ok(()) => (SessionOutcome::Closed, None),
                        Err(e) => (SessionOutcome::Error, Some(e.to_string())),
                    },
                    _ = ctx.force_close().cancelled() => (SessionOutcome::Drained, None),
                }
            }
        },
    };
    let (c2s, s2c) = (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed));
    match &error {
        Some(e) => warn!(?outcome, error = %e, c2s, s2c, "session ended"),
        None => info!(?outcome, c2s, s2c, "session ended"),
    }
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    gate.ended(outcome, (c2s, s2c), duration_ms, error).await;
}

/// Resolves when the held client closes its side. Data the client sends
/// early stays queued in the socket for the relay; from then on only the
/// hold's outcome ends the wait.
async fn client_gone(client: &TcpStream) {
    let mut b = [0u8; 1];
    loop {
        if client.readable().await.is_err() {
            return;
        }
        match client.peek(&mut b).await {
            Ok(0) | Err(_) => return,
            Ok(_) => std::future::pending::<()>().await,
        }
    }
}

/// Makes closing `client` send a reset: the daemon accepted it before it
/// knew the upstream was unreachable, and a reset is what a direct connect
/// would have seen, not an orderly close with no data.
fn reset(client: &TcpStream) {
    let _ = client.set_zero_linger();
}

/// Copies until EOF, then half-closes the writer so the other side sees EOF too.
async fn pump(
    mut r: OwnedReadHalf,
    mut w: OwnedWriteHalf,
    count: &AtomicU64,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; BUF];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return w.shutdown().await;
        }
        w.write_all(buf.get(..n).unwrap_or_default()).await?;
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
}
