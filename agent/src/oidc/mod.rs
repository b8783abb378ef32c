//! Job tokens: the short-lived OpenID Connect tokens CI platforms sign for each job (GitHub
//! Actions `id-token: write`, GitLab `id_tokens:`, Buildkite OIDC), verified against the
//! issuers a policy trusts. This module owns issuer settings, the JWKS cache (discovery or a
//! file; refreshed on a schedule and on an unknown `kid`), verification (signature, `iss`,
//! `aud`, `exp`, `nbf`, `iat`, with the configured clock skew) and the verified identity that
//! rules match and records carry.
//!
//! A token is a bearer credential: it is never logged, recorded, put in an error or kept
//! beyond its verification.

mod claims;
mod config;
mod error;
mod keys;
mod verify;

pub use claims::{JobIdentity, JobTokenView, RECORDED_CLAIMS, TokenSource, claim_strings};
pub use config::{Algorithm, DEFAULT_CLOCK_SKEW, DEFAULT_REFRESH, IssuerConfig, KeySource};
pub use error::TokenError;
pub use verify::Verifier;

/// Whether keys may be fetched from `url`: https, or http to a loopback host.
pub fn fetchable_url(url: &reqwest::Url) -> bool {
    config::fetchable(url)
}

/// A job token as a client presented it: `Debug` is redacted and the text is overwritten
/// when dropped.
pub struct BearerToken(String);

impl BearerToken {
    /// Wraps `token`.
    pub fn new(token: String) -> BearerToken {
        BearerToken(token)
    }

    /// The token, for the verifier.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl Drop for BearerToken {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.fill(0);
        std::hint::black_box(&bytes);
    }
}

/// What a client did about the job token a target asks for.
#[derive(Debug)]
pub enum Presented {
    /// The client sent this token.
    Token(TokenSource, BearerToken),
    /// interlock did not ask for it, and why (e.g. the leg has no TLS); the session is
    /// refused with that reason.
    NotAsked { source: TokenSource, why: String },
}
