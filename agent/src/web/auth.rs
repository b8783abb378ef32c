//! Signing in and out. `/auth/start` sends the browser to the provider with a fresh PKCE
//! challenge, `state` and `nonce`, and ties the sign-in to this browser with a cookie;
//! `/auth/callback` accepts only the `state` that browser started (so nobody can sign a
//! victim in as themselves), exchanges the code and verifies the ID token, then starts a
//! session; `/auth/signout` (a form with the CSRF token) ends it.

use axum::{
    Form,
    extract::{Query, State, rejection::FormRejection},
    http::{HeaderMap, StatusCode, header},
    response::Response,
};
use serde::Deserialize;
use tracing::{info, warn};

use super::{
    app::{Shared, cookie, local_path, see_other, set_cookie},
    pages::sign_in_page,
    sessions::{Lookup, SESSION_COOKIE, SIGNIN_COOKIE, SIGNIN_TTL, same_secret},
};

/// Query of `/auth/start`.
#[derive(Deserialize)]
pub(super) struct StartQuery {
    #[serde(default)]
    next: Option<String>,
}

/// `GET /auth/start`.
pub(super) async fn start(State(app): State<Shared>, Query(q): Query<StartQuery>) -> Response {
    let next = q
        .next
        .filter(|n| local_path(n))
        .unwrap_or_else(|| "/".into());
    match app.signin.start().await {
        Ok(s) => {
            app.store.begin(s.state.clone(), s.verifier, s.nonce, next);
            let mut r = see_other(&s.url);
            r.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(SIGNIN_COOKIE, &s.state, Some(SIGNIN_TTL.as_secs())),
            );
            r
        }
        Err(e) => {
            warn!(error = %e, "approvals page: cannot start a sign-in");
            sign_in_page(
                &app,
                StatusCode::BAD_GATEWAY,
                &next,
                None,
                Some(format!("The sign-in could not start: {e}")),
            )
        }
    }
}

/// What the provider sends back.
#[derive(Deserialize)]
pub(super) struct Callback {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// `GET /auth/callback`.
pub(super) async fn callback(
    State(app): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let fail = |status: StatusCode, why: String| {
        let mut r = sign_in_page(&app, status, "/", None, Some(why));
        r.headers_mut()
            .append(header::SET_COOKIE, set_cookie(SIGNIN_COOKIE, "", Some(0)));
        r
    };
    if let Some(e) = q.error {
        let detail = q.error_description.unwrap_or_default();
        return fail(
            StatusCode::UNAUTHORIZED,
            format!("The provider refused the sign-in: {e} {detail}"),
        );
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return fail(
            StatusCode::BAD_REQUEST,
            "The provider's answer has no code or state.".into(),
        );
    };
    // The state must be the one this browser started (its cookie), not one an attacker
    // started and got this browser to complete.
    let mine = cookie(&headers, SIGNIN_COOKIE).unwrap_or_default();
    if mine.is_empty() || !same_secret(&mine, &state) {
        return fail(
            StatusCode::BAD_REQUEST,
            "This sign-in was not started in this browser (or took too long). Sign in again."
                .into(),
        );
    }
    let Some(pending) = app.store.take(&state) else {
        return fail(
            StatusCode::BAD_REQUEST,
            "This sign-in is unknown or took too long. Sign in again.".into(),
        );
    };
    let who = match app
        .signin
        .finish(code, pending.verifier, pending.nonce)
        .await
    {
        Ok(w) => w,
        Err(e) => {
            warn!(error = %e, "approvals page: sign-in failed");
            return fail(StatusCode::UNAUTHORIZED, e.to_string());
        }
    };
    if who.subject.is_empty() {
        return fail(
            StatusCode::UNAUTHORIZED,
            "The ID token names no subject.".into(),
        );
    }
    info!(issuer = %who.issuer, subject = %who.subject, "approvals page: signed in");
    let Some(id) = app.store.create(who, app.policy.session) else {
        return fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "No randomness for a session id.".into(),
        );
    };
    let mut r = see_other(&pending.next);
    let h = r.headers_mut();
    h.append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, &id, None));
    h.append(header::SET_COOKIE, set_cookie(SIGNIN_COOKIE, "", Some(0)));
    r
}

/// The sign-out form.
#[derive(Deserialize)]
pub(super) struct SignOutForm {
    #[serde(default)]
    csrf: Option<String>,
}

/// `POST /auth/signout`.
pub(super) async fn sign_out(
    State(app): State<Shared>,
    headers: HeaderMap,
    form: Result<Form<SignOutForm>, FormRejection>,
) -> Response {
    let token = form.ok().and_then(|Form(f)| f.csrf);
    if let Lookup::Active(s) = app.session(&headers) {
        if app.same_site(&headers, token.as_deref(), &s.csrf).is_err() {
            return see_other("/");
        }
        if let Some(c) = cookie(&headers, SESSION_COOKIE) {
            app.store.remove(&c);
        }
    }
    let mut r = see_other("/signin?signed_out=1");
    r.headers_mut()
        .append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", Some(0)));
    r
}
