//! Who is signed in on the page, kept in the daemon's memory: a random session id in a
//! `__Host-` cookie (`Secure; HttpOnly; SameSite=Lax`), looked up by its SHA-256, with the
//! signed-in identity, a CSRF token for every form and API call that changes state, and an
//! end time. Sign-ins in progress (PKCE verifier, nonce, where to go after) are kept by
//! their `state` for ten minutes. A restart signs everyone out. Both maps are bounded.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use crate::approval::SignedIn;

/// The session cookie.
pub(super) const SESSION_COOKIE: &str = "__Host-interlock";
/// The cookie that ties a sign-in's callback to the browser that started it.
pub(super) const SIGNIN_COOKIE: &str = "__Host-interlock-signin";
/// How long a started sign-in may take.
pub(super) const SIGNIN_TTL: Duration = Duration::from_secs(600);
/// Most sessions kept (expired ones go first, then the oldest).
const MAX_SESSIONS: usize = 10_000;
/// Most sign-ins in progress (the oldest go first).
const MAX_SIGNINS: usize = 1_000;

/// A signed-in browser.
#[derive(Clone, Debug)]
pub(super) struct WebSession {
    pub(super) who: SignedIn,
    /// The token forms and API calls must echo.
    pub(super) csrf: String,
    pub(super) ends: SystemTime,
}

/// A sign-in waiting for the provider's callback.
pub(super) struct Pending {
    pub(super) verifier: String,
    pub(super) nonce: String,
    /// The page to show after sign-in (a local path).
    pub(super) next: String,
    started: Instant,
}

/// What a request's cookie says.
pub(super) enum Lookup {
    /// No cookie, or one the daemon does not know (e.g. from before a restart).
    None,
    /// A session whose time is over (removed now).
    Expired,
    Active(Box<WebSession>),
}

/// Sessions and sign-ins in progress.
#[derive(Default)]
pub(super) struct Store {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<[u8; 32], WebSession>,
    signins: HashMap<String, Pending>,
}

/// 32 random bytes, base64url.
pub(super) fn random_token() -> String {
    let mut b = [0u8; 32];
    if getrandom::fill(&mut b).is_err() {
        // Never seen in practice; without randomness no token may be issued.
        return String::new();
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn key(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

/// Compares two secrets in time independent of where they differ.
pub(super) fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

impl Store {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Signs `who` in for `lifetime`; returns the cookie value, or `None` without randomness.
    pub(super) fn create(&self, who: SignedIn, lifetime: Duration) -> Option<String> {
        let (id, csrf) = (random_token(), random_token());
        if id.is_empty() || csrf.is_empty() {
            return None;
        }
        let now = SystemTime::now();
        let mut st = self.state();
        if st.sessions.len() >= MAX_SESSIONS {
            st.sessions.retain(|_, s| s.ends > now);
        }
        if st.sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = st
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.ends)
                .map(|(k, _)| *k)
        {
            st.sessions.remove(&oldest);
        }
        st.sessions.insert(
            key(&id),
            WebSession {
                who,
                csrf,
                ends: now + lifetime,
            },
        );
        Some(id)
    }

    /// The session of a cookie value.
    pub(super) fn lookup(&self, cookie: Option<&str>) -> Lookup {
        let Some(c) = cookie.filter(|c| !c.is_empty()) else {
            return Lookup::None;
        };
        let k = key(c);
        let mut st = self.state();
        match st.sessions.get(&k) {
            None => Lookup::None,
            Some(s) if s.ends <= SystemTime::now() => {
                st.sessions.remove(&k);
                Lookup::Expired
            }
            Some(s) => Lookup::Active(Box::new(s.clone())),
        }
    }

    /// Signs a cookie's session out.
    pub(super) fn remove(&self, cookie: &str) {
        self.state().sessions.remove(&key(cookie));
    }

    /// Remembers a started sign-in under its `state`.
    pub(super) fn begin(&self, state: String, verifier: String, nonce: String, next: String) {
        let mut st = self.state();
        st.signins.retain(|_, p| p.started.elapsed() < SIGNIN_TTL);
        if st.signins.len() >= MAX_SIGNINS
            && let Some(oldest) = st
                .signins
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(k, _)| k.clone())
        {
            st.signins.remove(&oldest);
        }
        st.signins.insert(
            state,
            Pending {
                verifier,
                nonce,
                next,
                started: Instant::now(),
            },
        );
    }

    /// Takes the sign-in started with `state` (once), unless too old.
    pub(super) fn take(&self, state: &str) -> Option<Pending> {
        self.state()
            .signins
            .remove(state)
            .filter(|p| p.started.elapsed() < SIGNIN_TTL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> SignedIn {
        SignedIn {
            issuer: "https://idp".into(),
            subject: "u".into(),
            email: None,
            name: None,
            username: None,
            groups: vec![],
            claims: Default::default(),
        }
    }

    #[test]
    fn sessions_end_and_sign_ins_are_taken_once() {
        let s = Store::default();
        let id = s.create(who(), Duration::from_secs(60)).unwrap();
        assert!(matches!(s.lookup(Some(&id)), Lookup::Active(_)));
        assert!(matches!(s.lookup(Some("forged")), Lookup::None));
        assert!(matches!(s.lookup(None), Lookup::None));
        s.remove(&id);
        assert!(matches!(s.lookup(Some(&id)), Lookup::None));
        let gone = s.create(who(), Duration::ZERO).unwrap();
        assert!(matches!(s.lookup(Some(&gone)), Lookup::Expired));
        assert!(matches!(s.lookup(Some(&gone)), Lookup::None));
        s.begin("st".into(), "v".into(), "n".into(), "/".into());
        assert_eq!(s.take("st").unwrap().verifier, "v");
        assert!(s.take("st").is_none());
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
    }
}
