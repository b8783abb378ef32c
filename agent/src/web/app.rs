//! The page's shared state and the pieces every handler uses: reading the session cookie,
//! checking CSRF tokens and the request's origin, setting cookies, and the security headers
//! on every response.

use std::sync::Arc;

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::{
    WebError,
    sessions::{Lookup, SESSION_COOKIE, Store, same_secret},
    signin::SignInClient,
};
use crate::{context::AppContext, oidc::Verifier, policy::WebPolicy};

/// What every handler shares.
pub(super) struct App {
    pub(super) ctx: AppContext,
    pub(super) policy: WebPolicy,
    pub(super) signin: SignInClient,
    pub(super) store: Store,
    /// Verifies bots' bearer tokens, when the policy allows them.
    pub(super) api: Option<Verifier>,
    /// `scheme://host[:port]` of the page's URL, for the Origin check.
    pub(super) origin: String,
}

/// Shared by the router.
pub(super) type Shared = Arc<App>;

impl App {
    /// The page's state for `policy` under `ctx`.
    ///
    /// # Errors
    /// The sign-in client cannot be built.
    pub(super) fn new(ctx: AppContext, policy: WebPolicy) -> Result<App, WebError> {
        let signin = SignInClient::new(
            policy.sign_in.clone(),
            policy.redirect_url(),
            policy.four_eyes.clone(),
        )?;
        let api = policy.api.as_ref().map(|a| {
            Verifier::new(vec![crate::oidc::IssuerConfig {
                name: "sign-in".into(),
                issuer: policy.sign_in.issuer.clone(),
                audiences: vec![a.audience.clone()],
                algorithms: vec![crate::oidc::Algorithm::RS256, crate::oidc::Algorithm::ES256],
                keys: crate::oidc::KeySource::Discovery,
                clock_skew: crate::oidc::DEFAULT_CLOCK_SKEW,
                refresh: crate::oidc::DEFAULT_REFRESH,
                groups_claim: policy.sign_in.groups_claim.clone(),
                record_claims: Vec::new(),
            }])
        });
        let origin = policy.url.origin().ascii_serialization();
        Ok(App {
            ctx,
            signin,
            store: Store::default(),
            api,
            origin,
            policy,
        })
    }

    /// The session the request's cookie names.
    pub(super) fn session(&self, headers: &HeaderMap) -> Lookup {
        self.store
            .lookup(cookie(headers, SESSION_COOKIE).as_deref())
    }

    /// Whether a state-changing request comes from the page itself: its CSRF token matches
    /// the session's, and its Origin (when the browser sends one) is the page's.
    pub(super) fn same_site(
        &self,
        headers: &HeaderMap,
        token: Option<&str>,
        csrf: &str,
    ) -> Result<(), &'static str> {
        if let Some(o) = headers.get(header::ORIGIN)
            && o.as_bytes() != self.origin.as_bytes()
        {
            return Err("the request came from another site (Origin)");
        }
        match token {
            None | Some("") => Err("the CSRF token is missing"),
            Some(t) if same_secret(t, csrf) => Ok(()),
            Some(_) => Err("the CSRF token is wrong"),
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A `Set-Cookie` value: `__Host-` cookies are `Secure`, `Path=/` and host-only; the
/// browser's scripts never see them (`HttpOnly`); `SameSite=Lax` sends them on top-level
/// navigations from other sites (a link in a chat, the provider's redirect back) and on
/// nothing else. `max_age`: seconds (0 deletes it); `None`: until the browser closes (the
/// daemon ends the session itself, and can then say so).
pub(super) fn set_cookie(name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let age = max_age
        .map(|a| format!("; Max-Age={a}"))
        .unwrap_or_default();
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax{age}"
    ))
    .unwrap_or_else(|_| {
        HeaderValue::from_static(
            "__Host-interlock=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0",
        )
    })
}

/// Whether `next` is a path on this page (not another site, not a scheme-relative URL).
pub(super) fn local_path(next: &str) -> bool {
    next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control)
        && next.len() <= 512
}

/// A 303 to `to` (after a form or sign-in step).
pub(super) fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Security headers on every response: no framing, no scripts, styles and forms only from
/// the page itself, no caching of pages that show requests, no referrer to other sites.
pub(super) async fn secure_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    // Not `no-referrer`: browsers then send `Origin: null` with the page's own forms.
    set(h, header::REFERRER_POLICY, "same-origin");
    set(h, header::STRICT_TRANSPORT_SECURITY, "max-age=31536000");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, header::CACHE_CONTROL, "no-store");
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert!(local_path("/holds/0123456789ab"));
        assert!(local_path("/"));
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/\\evil",
            "holds",
            "/a\nb",
        ] {
            assert!(!local_path(bad), "{bad}");
        }
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-interlock=xyz"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&h, "b").as_deref(), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
        let c = set_cookie(SESSION_COOKIE, "v", Some(60));
        let c = c.to_str().unwrap();
        for part in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(c.contains(part), "{c}");
        }
    }
}
