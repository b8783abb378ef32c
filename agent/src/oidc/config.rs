//! One trusted issuer, as the policy configures it (validated by the policy loader).

use std::{path::PathBuf, time::Duration};

use serde::Serialize;

/// A signature algorithm a job token may use. Only asymmetric ones: a shared secret would
/// let anyone who can verify also sign, and `none` is never accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Algorithm {
    /// Every algorithm interlock verifies.
    pub const ALL: [Algorithm; 9] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    /// The JOSE name (`RS256`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// The algorithm called `name`; `None` for unknown, symmetric (`HS*`) and `none`.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }

    pub(super) fn jose(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as J;
        match self {
            Algorithm::RS256 => J::RS256,
            Algorithm::RS384 => J::RS384,
            Algorithm::RS512 => J::RS512,
            Algorithm::PS256 => J::PS256,
            Algorithm::PS384 => J::PS384,
            Algorithm::PS512 => J::PS512,
            Algorithm::ES256 => J::ES256,
            Algorithm::ES384 => J::ES384,
            Algorithm::EdDSA => J::EdDSA,
        }
    }
}

/// Where an issuer's signing keys come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// The `jwks_uri` of the issuer's discovery document
    /// (`<issuer>/.well-known/openid-configuration`).
    Discovery,
    /// A JWKS file (air-gapped hosts), re-read on the same schedule.
    File(PathBuf),
}

/// A trusted issuer of job tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IssuerConfig {
    /// The policy's name for it (`oidc: { issuer: NAME }` in rules).
    pub name: String,
    /// The exact `iss` its tokens carry (an https URL; http only on loopback).
    pub issuer: String,
    /// Accepted `aud` values: a token must name at least one.
    pub audiences: Vec<String>,
    /// Accepted signature algorithms.
    pub algorithms: Vec<Algorithm>,
    pub keys: KeySource,
    /// Tolerance for `exp`, `nbf` and `iat` against this host's clock.
    #[serde(serialize_with = "secs")]
    pub clock_skew: Duration,
    /// How old cached keys may get before they are fetched again.
    #[serde(serialize_with = "secs")]
    pub refresh: Duration,
    /// The claim listing the subject's groups.
    pub groups_claim: String,
    /// Claims recorded besides [`RECORDED_CLAIMS`](super::RECORDED_CLAIMS).
    pub record_claims: Vec<String>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// Default tolerance for clock differences.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Default key refresh schedule.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);

/// Whether `url` may be fetched for keys: https, or http to a loopback host (test
/// providers; nothing leaves the machine).
pub(crate) fn fetchable(url: &reqwest::Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => url.host_str().is_some_and(|h| {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_asymmetric_algorithms_have_names() {
        assert_eq!(Algorithm::from_name("ES256"), Some(Algorithm::ES256));
        for refused in ["HS256", "none", "rs256", ""] {
            assert_eq!(Algorithm::from_name(refused), None, "{refused}");
        }
    }

    #[test]
    fn keys_come_over_https_or_loopback_http() {
        let ok = |u: &str| fetchable(&reqwest::Url::parse(u).unwrap());
        assert!(ok("https://token.actions.githubusercontent.com"));
        assert!(ok("http://127.0.0.5:8080/jwks"));
        assert!(ok("http://[::1]:9/x"));
        assert!(ok("http://localhost:3000"));
        assert!(!ok("http://gitlab.example.com"));
        assert!(!ok("http://10.0.0.1/jwks"));
        assert!(!ok("file:///etc/jwks.json"));
    }
}
