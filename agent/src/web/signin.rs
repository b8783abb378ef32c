//! Sign-in with the organisation's OpenID provider: the authorization code flow with PKCE
//! (S256), `state` and `nonce`, through the `openidconnect` crate, which also verifies the
//! ID token (signature against the provider's published keys, issuer, audience, expiry,
//! nonce). The verified token's claims then say who signed in: subject, e-mail (only when the
//! provider vouches for it, unless the policy says otherwise), name, user name and groups.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use base64::Engine as _;
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse as _,
    core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata},
};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use super::error::WebError;
use crate::{
    approval::SignedIn,
    oidc::claim_strings,
    policy::{FourEyesPair, SignIn},
};

/// How long the provider's discovery document (and keys) are reused.
const METADATA_TTL: Duration = Duration::from_secs(600);
/// How long a call to the provider may take.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(15);

/// A sign-in started: what the callback needs to finish it.
pub(super) struct Started {
    /// Where to send the browser.
    pub(super) url: String,
    /// The `state` parameter (also the sign-in cookie's value).
    pub(super) state: String,
    pub(super) verifier: String,
    pub(super) nonce: String,
}

/// The provider client.
pub(super) struct SignInClient {
    config: SignIn,
    redirect: String,
    four_eyes: Vec<FourEyesPair>,
    http: reqwest::Client,
    /// The discovery document, fetched on first use and again after [`METADATA_TTL`]. A tokio
    /// lock held across the fetch, so concurrent sign-ins make one request.
    metadata: Mutex<Option<(Instant, CoreProviderMetadata)>>,
}

impl SignInClient {
    /// A client for `config`, whose callback is `redirect`.
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub(super) fn new(
        config: SignIn,
        redirect: String,
        four_eyes: Vec<FourEyesPair>,
    ) -> Result<SignInClient, WebError> {
        let http = reqwest::Client::builder()
            .timeout(PROVIDER_TIMEOUT)
            // Following redirects would let a provider's answer send us anywhere.
            .redirect(reqwest::redirect::Policy::none())
            // Sign-ins are rare: a fresh connection each time, never one the provider may
            // have closed while it sat idle in a pool.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| WebError::Provider(e.to_string()))?;
        Ok(SignInClient {
            config,
            redirect,
            four_eyes,
            http,
            metadata: Mutex::new(None),
        })
    }

    /// The provider's issuer URL.
    pub(super) fn issuer(&self) -> &str {
        &self.config.issuer
    }

    async fn metadata(&self) -> Result<CoreProviderMetadata, WebError> {
        let mut cached = self.metadata.lock().await;
        if let Some((at, m)) = cached.as_ref()
            && at.elapsed() < METADATA_TTL
        {
            return Ok(m.clone());
        }
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| WebError::Provider(format!("issuer URL: {e}")))?;
        let m = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| WebError::Provider(format!("discovery: {}", chain(&e))))?;
        *cached = Some((Instant::now(), m.clone()));
        Ok(m)
    }

    /// Forgets the discovery document (the provider may have rotated its keys).
    async fn forget_metadata(&self) {
        *self.metadata.lock().await = None;
    }

    fn secret(&self) -> Result<Option<ClientSecret>, WebError> {
        match &self.config.client_secret {
            None => Ok(None),
            Some(r) => {
                let s = r.resolve().map_err(|e| WebError::Secret(e.to_string()))?;
                let s = String::from_utf8(s.expose().to_vec())
                    .map_err(|_| WebError::Secret("the client secret is not UTF-8".into()))?;
                Ok(Some(ClientSecret::new(s)))
            }
        }
    }

    fn redirect_url(&self) -> Result<RedirectUrl, WebError> {
        RedirectUrl::new(self.redirect.clone())
            .map_err(|e| WebError::Provider(format!("redirect URL: {e}")))
    }

    /// Starts a sign-in: the provider's authorization URL with a fresh PKCE challenge,
    /// `state` and `nonce`.
    ///
    /// # Errors
    /// The provider's discovery document cannot be had; the client secret cannot be read.
    pub(super) async fn start(&self) -> Result<Started, WebError> {
        let client = CoreClient::from_provider_metadata(
            self.metadata().await?,
            ClientId::new(self.config.client_id.clone()),
            self.secret()?,
        )
        .set_redirect_uri(self.redirect_url()?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for s in &self.config.scopes {
            request = request.add_scope(Scope::new(s.clone()));
        }
        let (url, state, nonce) = request.url();
        Ok(Started {
            url: url.to_string(),
            state: state.secret().clone(),
            verifier: verifier.secret().clone(),
            nonce: nonce.secret().clone(),
        })
    }

    /// Finishes a sign-in: exchanges `code` (with the PKCE verifier) for tokens and verifies
    /// the ID token against `nonce`. Returns who signed in.
    ///
    /// # Errors
    /// The exchange failed or the ID token was missing or did not verify.
    pub(super) async fn finish(
        &self,
        code: String,
        verifier: String,
        nonce: String,
    ) -> Result<SignedIn, WebError> {
        let client = CoreClient::from_provider_metadata(
            self.metadata().await?,
            ClientId::new(self.config.client_id.clone()),
            self.secret()?,
        )
        .set_redirect_uri(self.redirect_url()?);
        let tokens = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| WebError::Provider(format!("token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| WebError::SignIn(format!("the code exchange failed: {}", chain(&e))))?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| WebError::SignIn("the provider returned no ID token".into()))?;
        if let Err(e) = id_token.claims(&client.id_token_verifier(), &Nonce::new(nonce)) {
            // Perhaps keys the cached document does not list yet: next sign-in refetches.
            self.forget_metadata().await;
            return Err(WebError::SignIn(format!(
                "the ID token did not verify: {}",
                chain(&e)
            )));
        }
        // Verified above over these very bytes: its payload is the claims to read.
        let claims = payload(&id_token.to_string())?;
        Ok(signed_in(
            &claims,
            &self.config.groups_claim,
            self.config.require_verified_email,
            &self.four_eyes,
        ))
    }
}

/// The claims of a compact JWT (already verified).
fn payload(jwt: &str) -> Result<Map<String, Value>, WebError> {
    let part = jwt
        .split('.')
        .nth(1)
        .ok_or_else(|| WebError::SignIn("the ID token is not a JWT".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| WebError::SignIn("the ID token's payload is not base64url".into()))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| WebError::SignIn("the ID token's payload is not a JSON object".into()))
}

/// Who verified `claims` (an ID token's, or a bearer token's) say signed in. The e-mail
/// counts only with `email_verified: true` when `require_verified` (then an unverified one is
/// neither matched against `oidc_emails` nor compared for four eyes).
pub(super) fn signed_in(
    claims: &Map<String, Value>,
    groups_claim: &str,
    require_verified: bool,
    four_eyes: &[FourEyesPair],
) -> SignedIn {
    let text = |k: &str| {
        claims
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let verified = match claims.get("email_verified") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    };
    let email_counts = verified || !require_verified;
    let mut four: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in four_eyes {
        if p.approver == "email" && !email_counts {
            continue;
        }
        let v = claims
            .get(&p.approver)
            .map(claim_strings)
            .unwrap_or_default();
        if !v.is_empty() {
            four.insert(p.approver.clone(), v);
        }
    }
    SignedIn {
        issuer: text("iss").unwrap_or_default(),
        subject: text("sub").unwrap_or_default(),
        email: text("email").filter(|_| email_counts),
        name: text("name"),
        username: text("preferred_username"),
        groups: claims
            .get(groups_claim)
            .map(claim_strings)
            .unwrap_or_default(),
        claims: four,
    }
}

/// An error with its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::policy::default_four_eyes;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn only_a_verified_email_counts_unless_the_policy_says_so() {
        let c = claims(json!({
            "iss": "https://idp", "sub": "u1", "email": "Alice@Corp.example",
            "preferred_username": "alice", "groups": ["sre", "dev"], "name": "Alice"
        }));
        let s = signed_in(&c, "groups", true, &default_four_eyes());
        assert_eq!(s.email, None);
        assert!(!s.claims.contains_key("email"));
        assert_eq!(s.claims.get("preferred_username").unwrap(), &["alice"]);
        assert_eq!(s.groups, ["sre", "dev"]);
        assert_eq!(s.display(), "alice");
        let s = signed_in(&c, "groups", false, &default_four_eyes());
        assert_eq!(s.email.as_deref(), Some("Alice@Corp.example"));
        let mut v = c.clone();
        v.insert("email_verified".into(), json!(true));
        let s = signed_in(&v, "roles", true, &default_four_eyes());
        assert_eq!(s.email.as_deref(), Some("Alice@Corp.example"));
        assert!(s.groups.is_empty(), "another groups claim");
    }

    #[test]
    fn a_jwt_payload_is_read() {
        let p = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"x"}"#);
        assert_eq!(payload(&format!("h.{p}.s")).unwrap()["sub"], "x");
        assert!(payload("nodots").is_err());
        assert!(payload("h.!!.s").is_err());
    }
}
