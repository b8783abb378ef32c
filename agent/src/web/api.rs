//! The page's JSON API, for chat bots and scripts: list, show, approve, deny. A caller is a
//! bot with a bearer token the sign-in provider signed for the policy's `web.api.audience`
//! (channel `api`), or a signed-in browser session, which must send its CSRF token in
//! `X-CSRF-Token` on every POST (channel `web`). Either sees and decides exactly what the
//! page would let it.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{app::Shared, sessions::Lookup, signin::signed_in};
use crate::{
    approval::{Approver, Channel},
    oidc::TokenSource,
};

/// The CSRF header of cookie-authenticated calls.
const CSRF_HEADER: &str = "x-csrf-token";

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Who calls, and for cookie sessions the CSRF token they must echo.
async fn caller(app: &Shared, headers: &HeaderMap) -> Result<(Approver, Option<String>), Response> {
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let Some(token) = auth.to_str().ok().and_then(|a| a.strip_prefix("Bearer ")) else {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "Authorization must be `Bearer <token>`",
            ));
        };
        let Some(verifier) = &app.api else {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "bearer tokens are not accepted here (the policy sets no `web.api`)",
            ));
        };
        return match verifier.verify(token, TokenSource::ApprovalApi).await {
            Ok(id) => {
                let who = signed_in(
                    &id.claims,
                    &app.policy.sign_in.groups_claim,
                    app.policy.sign_in.require_verified_email,
                    &app.policy.four_eyes,
                );
                Ok((Approver::SignedIn(who, Channel::Api), None))
            }
            Err(e) => Err(error(
                StatusCode::UNAUTHORIZED,
                format!("bearer token refused: {e}"),
            )),
        };
    }
    match app.session(headers) {
        Lookup::Active(s) => {
            let s = *s;
            Ok((Approver::SignedIn(s.who, Channel::Web), Some(s.csrf)))
        }
        Lookup::Expired => Err(error(
            StatusCode::UNAUTHORIZED,
            "the session has expired; sign in again",
        )),
        Lookup::None => Err(error(
            StatusCode::UNAUTHORIZED,
            "sign in on the page, or send a bearer token",
        )),
    }
}

fn with_url(app: &Shared, v: Value, id: &str) -> Value {
    let mut v = v;
    if let Some(o) = v.as_object_mut() {
        o.insert("url".into(), json!(app.policy.hold_url(id)));
    }
    v
}

/// `GET /api/v1/holds`: `{"pending": [...], "decided": [...]}`, each as the audit events
/// record them plus its page `url`.
pub(super) async fn list(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let (who, _) = match caller(&app, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (pending, decided) = app.ctx.approvals().visible(&who);
    let pending: Vec<Value> = pending
        .iter()
        .map(|p| with_url(&app, json!(p), &p.id))
        .collect();
    let decided: Vec<Value> = decided
        .iter()
        .take(100)
        .map(|d| with_url(&app, json!(d), &d.pending.id))
        .collect();
    Json(json!({ "pending": pending, "decided": decided })).into_response()
}

/// `GET /api/v1/holds/{id}`: `{"state": "pending"|"decided", "request": ..., "may_decide":
/// bool, "refusal": why not or null}`.
pub(super) async fn show(
    State(app): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (who, _) = match caller(&app, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match app.ctx.approvals().show_for(&id, &who) {
        Ok(Ok(p)) => {
            let refusal = app
                .ctx
                .approvals()
                .may_decide(&id, &who)
                .err()
                .map(|e| e.to_string());
            Json(json!({
                "state": "pending",
                "request": with_url(&app, json!(p), &id),
                "may_decide": refusal.is_none(),
                "refusal": refusal,
            }))
            .into_response()
        }
        Ok(Err(d)) => Json(json!({
            "state": "decided",
            "request": with_url(&app, json!(d), &id),
            "may_decide": false,
            "refusal": null,
        }))
        .into_response(),
        Err(_) => error(
            StatusCode::NOT_FOUND,
            format!("no request {id} that you may see"),
        ),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /api/v1/holds/{id}/approve` and `.../deny` with `{"reason": "..."}` (optional).
pub(super) async fn decide(
    State(app): State<Shared>,
    Path((id, verb)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let approve = match verb.as_str() {
        "approve" => true,
        "deny" => false,
        _ => return error(StatusCode::NOT_FOUND, "use .../approve or .../deny"),
    };
    let (who, csrf) = match caller(&app, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Some(csrf) = csrf {
        let token = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if let Err(why) = app.same_site(&headers, token, &csrf) {
            return error(
                StatusCode::FORBIDDEN,
                format!("refused: {why} (send it in X-CSRF-Token)"),
            );
        }
    }
    let body: DecisionBody = if body.is_empty() {
        DecisionBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not {{\"reason\": \"...\"}}: {e}"),
                );
            }
        }
    };
    let reason = body
        .reason
        .map(|r| r.trim().chars().take(2000).collect::<String>())
        .filter(|r| !r.is_empty());
    match app.ctx.approvals().decide(&id, &who, approve, reason).await {
        Ok(r) => Json(json!(r)).into_response(),
        Err(e) => error(
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::FORBIDDEN),
            e.to_string(),
        ),
    }
}
