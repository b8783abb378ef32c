//! The relay session: connect upstream, pump both directions, report.

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
    audit::{EventKind, SessionOutcome},
    context::AppContext,
    intercept::FlowIdentity,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const BUF: usize = 64 * 1024;

/// Relays `client` to the identity's original destination until either side
/// closes or the daemon's drain time runs out. Emits session start and end.
pub async fn relay(ctx: AppContext, session_id: String, identity: FlowIdentity, client: TcpStream) {
    let target = identity.target.clone();
    let dst = identity.original_destination;
    let _ = ctx
        .events()
        .emit(EventKind::SessionStarted {
            session_id: session_id.clone(),
            identity: Box::new(identity),
        })
        .await;
    let started = Instant::now();
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);

    let (outcome, error) =
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(dst)).await {
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
        };
    let (c2s, s2c) = (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed));
    match &error {
        Some(e) => warn!(?outcome, error = %e, c2s, s2c, "session ended"),
        None => info!(?outcome, c2s, s2c, "session ended"),
    }
    let _ = ctx
        .events()
        .emit(EventKind::SessionEnded {
            session_id,
            target,
            outcome,
            bytes_client_to_server: c2s,
            bytes_server_to_client: s2c,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            error,
        })
        .await;
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
