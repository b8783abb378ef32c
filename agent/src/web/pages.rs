//! The HTML pages: the list of requests the signed-in approver may see, one request with the
//! approve/deny form, and the sign-in page. Plain server-rendered HTML (askama templates,
//! escaped by default) with one stylesheet and no scripts, so everything works with
//! JavaScript disabled and on a phone. A browser without a live session is sent to sign in
//! and comes back to the page it asked for.

use askama::Template;
use axum::{
    Form,
    extract::{Path, Query, State, rejection::FormRejection},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use serde::Deserialize;

use super::{
    app::{Shared, local_path, see_other},
    sessions::{Lookup, WebSession},
    view::{DecidedView, HoldView},
};
use crate::approval::{ApprovalError, Approver, Channel};

/// The header every page shows: who is signed in, and the sign-out form's token.
pub(super) struct Header {
    pub(super) who: Option<String>,
    pub(super) csrf: String,
}

impl Header {
    fn of(s: &WebSession) -> Header {
        Header {
            who: Some(crate::text::escape_controls(&s.who.display()).into_owned()),
            csrf: s.csrf.clone(),
        }
    }

    fn nobody() -> Header {
        Header {
            who: None,
            csrf: String::new(),
        }
    }
}

#[derive(Template)]
#[template(path = "web/list.html")]
struct ListPage {
    header: Header,
    pending: Vec<HoldView>,
    decided: Vec<DecidedView>,
}

#[derive(Template)]
#[template(path = "web/detail.html")]
struct DetailPage {
    header: Header,
    h: HoldView,
    decided: Option<DecidedView>,
    /// Why this approver may not decide (shown instead of the form).
    refusal: Option<String>,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "web/signin.html")]
pub(super) struct SignInPage {
    pub(super) header: Header,
    pub(super) provider: String,
    pub(super) start: String,
    pub(super) notice: Option<String>,
    pub(super) error: Option<String>,
}

#[derive(Template)]
#[template(path = "web/message.html")]
struct MessagePage {
    header: Header,
    title: String,
    message: String,
}

/// A rendered template with `status`.
pub(super) fn html(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(body) => (status, Html(body)).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "approvals page template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

fn message(status: StatusCode, header: Header, title: &str, text: String) -> Response {
    html(
        status,
        &MessagePage {
            header,
            title: title.into(),
            message: text,
        },
    )
}

/// The sign-in page for a browser that wanted `next`.
pub(super) fn sign_in_page(
    app: &Shared,
    status: StatusCode,
    next: &str,
    notice: Option<String>,
    error: Option<String>,
) -> Response {
    let next = if local_path(next) { next } else { "/" };
    let start = format!("/auth/start?next={}", urlencode(next));
    html(
        status,
        &SignInPage {
            header: Header::nobody(),
            provider: app.signin.issuer().to_string(),
            start,
            notice,
            error,
        },
    )
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The live session, or the response that sends the browser to sign in.
fn session_or_sign_in(
    app: &Shared,
    headers: &HeaderMap,
    next: &str,
) -> Result<WebSession, Box<Response>> {
    let notice = match app.session(headers) {
        Lookup::Active(s) => return Ok(*s),
        Lookup::Expired => Some("Your session has expired. Sign in again to continue.".into()),
        Lookup::None => None,
    };
    Err(Box::new(sign_in_page(
        app,
        StatusCode::UNAUTHORIZED,
        next,
        notice,
        None,
    )))
}

/// `GET /`: what the approver may see.
pub(super) async fn list(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let s = match session_or_sign_in(&app, &headers, "/") {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let who = Approver::SignedIn(s.who.clone(), Channel::Web);
    let (pending, decided) = app.ctx.approvals().visible(&who);
    html(
        StatusCode::OK,
        &ListPage {
            header: Header::of(&s),
            pending: pending.iter().map(HoldView::of).collect(),
            decided: decided.iter().take(20).map(DecidedView::of).collect(),
        },
    )
}

/// The detail page of `id` for `s`, with `error` shown above the request.
fn detail_page(
    app: &Shared,
    s: &WebSession,
    id: &str,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let who = Approver::SignedIn(s.who.clone(), Channel::Web);
    match app.ctx.approvals().show_for(id, &who) {
        Ok(found) => {
            let (h, decided, refusal) = match &found {
                Ok(p) => (
                    HoldView::of(p),
                    None,
                    app.ctx
                        .approvals()
                        .may_decide(id, &who)
                        .err()
                        .map(|e| e.to_string()),
                ),
                Err(d) => (HoldView::of(&d.pending), Some(DecidedView::of(d)), None),
            };
            html(
                status,
                &DetailPage {
                    header: Header::of(s),
                    h,
                    decided,
                    refusal,
                    error,
                },
            )
        }
        // The same answer whether it does not exist or is not theirs to see.
        Err(_) => message(
            StatusCode::NOT_FOUND,
            Header::of(s),
            "Not found",
            format!("There is no request {id} that you may see."),
        ),
    }
}

/// `GET /holds/{id}`.
pub(super) async fn detail(
    State(app): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let s = match session_or_sign_in(&app, &headers, &format!("/holds/{id}")) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    detail_page(&app, &s, &id, StatusCode::OK, None)
}

/// The approve/deny form.
#[derive(Deserialize)]
pub(super) struct DecideForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    decision: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// Longest reason kept.
const MAX_REASON: usize = 2000;

/// `POST /holds/{id}/decide`.
pub(super) async fn decide(
    State(app): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: Result<Form<DecideForm>, FormRejection>,
) -> Response {
    let s = match session_or_sign_in(&app, &headers, &format!("/holds/{id}")) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Ok(Form(form)) = form else {
        return detail_page(
            &app,
            &s,
            &id,
            StatusCode::BAD_REQUEST,
            Some("The form could not be read; nothing was decided.".into()),
        );
    };
    if let Err(why) = app.same_site(&headers, form.csrf.as_deref(), &s.csrf) {
        return detail_page(
            &app,
            &s,
            &id,
            StatusCode::FORBIDDEN,
            Some(format!(
                "Refused: {why}. Nothing was decided; use the buttons on this page."
            )),
        );
    }
    let approve = match form.decision.as_deref() {
        Some("approve") => true,
        Some("deny") => false,
        _ => {
            return detail_page(
                &app,
                &s,
                &id,
                StatusCode::BAD_REQUEST,
                Some("Choose approve or deny.".into()),
            );
        }
    };
    let reason = form
        .reason
        .map(|r| r.trim().chars().take(MAX_REASON).collect::<String>())
        .filter(|r| !r.is_empty());
    let who = Approver::SignedIn(s.who.clone(), Channel::Web);
    match app.ctx.approvals().decide(&id, &who, approve, reason).await {
        Ok(_) => see_other(&format!("/holds/{id}")),
        Err(e) => {
            let status = match &e {
                ApprovalError::NotFound(_) => StatusCode::NOT_FOUND,
                ApprovalError::AlreadyDecided { .. } => StatusCode::CONFLICT,
                _ => StatusCode::FORBIDDEN,
            };
            detail_page(&app, &s, &id, status, Some(format!("Refused: {e}")))
        }
    }
}

/// Query of the sign-in page.
#[derive(Deserialize)]
pub(super) struct SignInQuery {
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    signed_out: Option<String>,
}

/// `GET /signin`.
pub(super) async fn sign_in(State(app): State<Shared>, Query(q): Query<SignInQuery>) -> Response {
    let notice = q.signed_out.map(|_| "You are signed out.".to_string());
    sign_in_page(
        &app,
        StatusCode::OK,
        q.next.as_deref().unwrap_or("/"),
        notice,
        None,
    )
}

/// `GET /static/app.css`.
pub(super) async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../static/app.css"),
    )
        .into_response()
}

/// Any other path.
pub(super) async fn not_found() -> Response {
    message(
        StatusCode::NOT_FOUND,
        Header::nobody(),
        "Not found",
        "There is no such page.".into(),
    )
}
