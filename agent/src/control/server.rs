//! The control socket's server side: one hyper connection per caller, with
//! the caller's kernel-vouched identity attached to every request. Any
//! local user can connect, so connections are bounded: how many are open
//! at once, how long one may wait for (or take to send) a request's
//! headers, and how long one may live.

use std::{convert::Infallible, os::unix::fs::PermissionsExt as _, path::Path, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, Response, StatusCode, body::Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::json;
use tokio::{net::UnixListener, sync::Semaphore};
use tracing::{debug, warn};

use crate::{
    approval::{ApprovalError, Approver, caller_name},
    context::AppContext,
    identity::LocalPeer,
    sinks::Endpoints,
};

/// The socket's file name in the state directory.
pub const CONTROL_SOCKET: &str = "control.sock";

/// Largest request body accepted (a reason text).
const MAX_BODY: usize = 16 * 1024;

/// Binds the socket at `path`, replacing a stale one, connectable by every
/// local user (authorisation is per request, by peer credentials).
///
/// # Errors
/// The socket cannot be created.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(l)
}

/// What the control API serves beside the [`AppContext`].
#[derive(Clone)]
pub struct Extras {
    /// The webhook endpoints (status counters, test events).
    pub webhooks: Endpoints,
    /// This host's name (test events carry it).
    pub host: String,
}

/// A connection lives at most this many times the idle limit (a body
/// trickled a byte at a time passes the header timeout).
const LIFETIME_IDLES: u32 = 4;

/// Serves callers until shutdown.
pub async fn serve(ctx: AppContext, listener: UnixListener, extras: Extras) {
    let limits = ctx.limits().clone();
    let open = Arc::new(Semaphore::new(
        usize::try_from(limits.control_connections).unwrap_or(64),
    ));
    loop {
        let stream = tokio::select! {
            _ = ctx.shutdown().cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(cred) = stream.peer_cred() else {
            continue;
        };
        // Over the cap the connection is closed at once; callers see EOF.
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            warn!(
                uid = cred.uid(),
                pid = cred.pid().unwrap_or(0),
                limit = limits.control_connections,
                "control socket: connection refused, interlock's limit of open connections is reached (--control-connections)"
            );
            continue;
        };
        let peer = LocalPeer::lookup(
            cred.uid(),
            cred.gid(),
            cred.pid().and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
        );
        let (ctx, extras) = (ctx.clone(), extras.clone());
        let idle = limits.control_idle;
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req| {
                let (ctx, extras, peer) = (ctx.clone(), extras.clone(), peer.clone());
                async move { Ok::<_, Infallible>(route(&ctx, &extras, &peer, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(idle)
                .serve_connection(TokioIo::new(stream), svc);
            match tokio::time::timeout(idle.saturating_mul(LIFETIME_IDLES), conn).await {
                Ok(Err(e)) => debug!(error = %e, "control connection ended"),
                Ok(Ok(())) => {}
                Err(_) => debug!("control connection closed: it lived past its limit"),
            }
        });
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    #[serde(default)]
    reason: Option<String>,
}

async fn route(
    ctx: &AppContext,
    extras: &Extras,
    peer: &LocalPeer,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (Method::GET, ["v1", "status"]) => reply(StatusCode::OK, status(ctx, extras, peer)),
        // Sends to the SIEMs with the daemon's secrets: root only.
        (Method::POST, ["v1", "webhooks", "test"]) if peer.uid == 0 => reply(
            StatusCode::OK,
            json!(extras.webhooks.send_test(&extras.host).await),
        ),
        (Method::POST, ["v1", "webhooks", "test"]) => error(
            StatusCode::FORBIDDEN,
            format!(
                "{} is not root: only root may send test events with the daemon's secrets",
                caller_name(peer)
            ),
        ),
        (Method::GET, ["v1", "approvals"]) => {
            match ctx.approvals().list_for(peer, approves_now(ctx, peer)) {
                Some(list) => reply(StatusCode::OK, json!(list)),
                None => not_an_approver(peer),
            }
        }
        (Method::GET, ["v1", "approvals", id]) => {
            match ctx.approvals().show_for(id, &Approver::Local(peer.clone())) {
                Ok(Ok(p)) => reply(StatusCode::OK, json!({"state": "pending", "request": p})),
                Ok(Err(d)) => reply(StatusCode::OK, json!({"state": "decided", "request": d})),
                Err(ApprovalError::NotFound(_))
                    if ctx
                        .approvals()
                        .list_for(peer, approves_now(ctx, peer))
                        .is_none() =>
                {
                    not_an_approver(peer)
                }
                Err(e) => error(
                    StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::FORBIDDEN),
                    e.to_string(),
                ),
            }
        }
        (Method::POST, ["v1", "approvals", id, verb @ ("approve" | "deny")]) => {
            let approve = *verb == "approve";
            let id = id.to_string();
            let body = match read_body(req).await {
                Ok(b) => b,
                Err((code, msg)) => return error(code, msg),
            };
            match ctx
                .approvals()
                .decide(&id, &Approver::Local(peer.clone()), approve, body.reason)
                .await
            {
                Ok(r) => reply(StatusCode::OK, json!(r)),
                Err(e) => error(
                    StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::FORBIDDEN),
                    e.to_string(),
                ),
            }
        }
        (_, ["v1", ..]) => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {path} (the API is under /v1/)"),
        ),
    }
}

/// A status and message for a refused request.
type Refusal = (StatusCode, String);

async fn read_body(req: Request<Incoming>) -> Result<DecisionBody, Refusal> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| (StatusCode::PAYLOAD_TOO_LARGE, format!("request body: {e}")))?
        .to_bytes();
    if bytes.is_empty() {
        return Ok(DecisionBody::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("request body is not {{\"reason\": \"...\"}}: {e}"),
        )
    })
}

/// Whether `peer` approves something in the policy in force. Held
/// requests are shown by the approvers captured with each hold (a reload
/// that drops a rule leaves its held requests visible to its approvers);
/// this only lets a current approver see an empty list rather than a 403.
fn approves_now(ctx: &AppContext, peer: &LocalPeer) -> bool {
    ctx.policy()
        .rules()
        .iter()
        .filter_map(|r| r.approval.as_ref())
        .any(|a| a.approvers.admits(peer.user.as_deref(), &peer.groups))
}

/// The refusal for a caller who approves nothing at all.
fn not_an_approver(peer: &LocalPeer) -> Response<Full<Bytes>> {
    error(
        StatusCode::FORBIDDEN,
        format!(
            "{} approves nothing held and is not an approver in the policy in force, so cannot see held requests",
            caller_name(peer)
        ),
    )
}

/// Open to every local user: nothing secret in it (webhook paths only for root).
fn status(ctx: &AppContext, extras: &Extras, peer: &LocalPeer) -> serde_json::Value {
    let policy = ctx.policy();
    json!({
        "pid": std::process::id(),
        "version": env!("CARGO_PKG_VERSION"),
        "policy": {
            "path": policy.path().display().to_string(),
            "targets": policy.targets().iter().map(|t| json!({"name": t.name, "protocol": t.protocol})).collect::<Vec<_>>(),
            "rules": policy.rules().len(),
        },
        "sessions": {
            "live": ctx.tracker().len(),
            "total": ctx.sessions_total(),
        },
        "approvals": {
            "pending": ctx.approvals().pending_count(),
            "next_deadline_secs": ctx.approvals().next_deadline().map(|d| d.as_secs()),
        },
        "webhooks": extras.webhooks.status(peer.uid == 0),
        "audit": ctx.events().health().view(),
    })
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    reply(status, json!({ "error": message }))
}
