//! Verifying a job token against the trusted issuers.

use std::{
    collections::HashSet,
    sync::{Arc, OnceLock},
    time::{Duration, SystemTime},
};

use base64::Engine as _;
use serde_json::{Map, Value};

use super::{
    IssuerConfig, JobIdentity, TokenError, TokenSource,
    claims::claim_strings,
    config::Algorithm,
    keys::{IssuerKeys, Shared, key_allows, shown},
};

/// Longest token accepted.
const MAX_TOKEN: usize = 16 * 1024;
/// How long a key fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The trusted issuers of one policy, with their key caches.
pub struct Verifier {
    issuers: Vec<Shared>,
    client: OnceLock<Result<reqwest::Client, String>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.issuers.iter().map(|i| &i.config.name))
            .finish()
    }
}

impl Verifier {
    /// A verifier for `issuers` (nothing is fetched until a token needs it).
    pub fn new(issuers: Vec<IssuerConfig>) -> Verifier {
        Verifier {
            issuers: issuers
                .into_iter()
                .map(|c| Arc::new(IssuerKeys::new(c)))
                .collect(),
            client: OnceLock::new(),
        }
    }

    /// The issuers, in policy order.
    pub fn issuers(&self) -> impl Iterator<Item = &IssuerConfig> {
        self.issuers.iter().map(|i| &i.config)
    }

    /// The issuer configured under `name`.
    pub fn issuer_named(&self, name: &str) -> Option<&IssuerConfig> {
        self.issuers().find(|i| i.name == name)
    }

    fn client(&self) -> Result<&reqwest::Client, TokenError> {
        self.client
            .get_or_init(|| {
                reqwest::Client::builder()
                    .timeout(FETCH_TIMEOUT)
                    // A redirect could lead off https; issuers publish final URLs.
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|reason| TokenError::Keys {
                issuer: "(all)".into(),
                reason: reason.clone(),
            })
    }

    /// Verifies `token` (signature, `iss`, `aud`, `exp`, `nbf`, `iat` with the issuer's clock
    /// skew, algorithm) and returns its identity.
    ///
    /// # Errors
    /// Why the token is refused; the message never contains the token.
    pub async fn verify(
        &self,
        token: &str,
        source: TokenSource,
    ) -> Result<JobIdentity, TokenError> {
        let token = token.trim();
        if token.len() > MAX_TOKEN {
            return Err(TokenError::Malformed(format!(
                "longer than {MAX_TOKEN} bytes"
            )));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| TokenError::Malformed("no valid JOSE header".into()))?;
        let iss = unverified_issuer(token)?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .ok_or_else(|| TokenError::UnknownIssuer(shown(&iss)))?;
        let config = &issuer.config;
        let alg = Algorithm::ALL
            .into_iter()
            .find(|a| a.jose() == header.alg)
            .filter(|a| config.algorithms.contains(a))
            .ok_or_else(|| TokenError::Algorithm {
                issuer: config.name.clone(),
                alg: format!("{:?}", header.alg),
                allowed: config
                    .algorithms
                    .iter()
                    .map(|a| a.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let key = issuer
            .key_for(header.kid.as_deref(), self.client()?)
            .await?;
        if !key_allows(key.alg, alg) {
            return Err(TokenError::Algorithm {
                issuer: config.name.clone(),
                alg: alg.name().into(),
                allowed: format!("{:?} (the key's own)", key.alg),
            });
        }
        let mut validation = jsonwebtoken::Validation::new(alg.jose());
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&config.audiences);
        validation.leeway = config.clock_skew.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.required_spec_claims = ["exp", "iss", "aud", "sub"]
            .into_iter()
            .map(String::from)
            .collect::<HashSet<_>>();
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| TokenError::from_jwt(&e, &config.name, &config.audiences))?;
        identity(config, data.claims, source, now_secs())
    }

    /// The identity `claims` would give if a token carrying them verified, for `policy
    /// explain --oidc-claims`: the issuer is the one whose `iss` the claims name.
    ///
    /// # Errors
    /// No trusted issuer has that `iss`, or `sub`/`exp` are missing.
    pub fn explain_identity(&self, claims: Map<String, Value>) -> Result<JobIdentity, TokenError> {
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| TokenError::MissingClaim("iss".into()))?;
        let config = self
            .issuers()
            .find(|i| i.issuer == iss)
            .ok_or_else(|| TokenError::UnknownIssuer(shown(iss)))?;
        let now = claims
            .get("iat")
            .and_then(Value::as_u64)
            .unwrap_or_else(now_secs);
        identity(config, claims, TokenSource::PostgresPassword, now)
    }
}

/// The identity of verified `claims` from `config`'s issuer; checks `iat` against `now`.
fn identity(
    config: &IssuerConfig,
    claims: Map<String, Value>,
    source: TokenSource,
    now: u64,
) -> Result<JobIdentity, TokenError> {
    if let Some(iat) = claims.get("iat").and_then(Value::as_u64)
        && iat > now.saturating_add(config.clock_skew.as_secs())
    {
        return Err(TokenError::IssuedInFuture);
    }
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or_else(|| TokenError::MissingClaim("sub".into()))?
        .to_string();
    let expires = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
    let groups = claims
        .get(&config.groups_claim)
        .map(claim_strings)
        .unwrap_or_default();
    Ok(JobIdentity {
        issuer: config.name.clone(),
        iss: config.issuer.clone(),
        sub,
        groups,
        claims,
        expires,
        source,
        record_claims: config.record_claims.clone(),
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The `iss` of a token whose signature is not checked yet, to pick the issuer's keys.
fn unverified_issuer(token: &str) -> Result<String, TokenError> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| TokenError::Malformed("no payload".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed("payload is not base64url".into()))?;
    let claims: Map<String, Value> = serde_json::from_slice(&bytes)
        .map_err(|_| TokenError::Malformed("payload is not a JSON object".into()))?;
    claims
        .get("iss")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| TokenError::MissingClaim("iss".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::KeySource;

    fn issuer(name: &str, iss: &str) -> IssuerConfig {
        IssuerConfig {
            name: name.into(),
            issuer: iss.into(),
            audiences: vec!["interlock".into()],
            algorithms: vec![Algorithm::RS256, Algorithm::ES256],
            keys: KeySource::File("/nonexistent/jwks.json".into()),
            clock_skew: Duration::from_secs(30),
            refresh: Duration::from_secs(3600),
            groups_claim: "groups".into(),
            record_claims: vec![],
        }
    }

    fn unsigned(claims: &Value, alg: &str) -> String {
        let b = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        let header = serde_json::json!({"alg": alg, "typ": "JWT", "kid": "k"});
        format!("{}.{}.c2ln", b(&header), b(claims))
    }

    #[tokio::test]
    async fn refusals_name_the_reason_and_never_the_token() {
        let v = Verifier::new(vec![issuer("gh", "https://gh.example")]);
        let cases = [
            ("garbage", "not a signed JWT".to_string()),
            (
                &*unsigned(&serde_json::json!({"iss": "https://evil\n"}), "RS256"),
                "issuer `https://evil\\n` is not one the policy trusts".into(),
            ),
            (
                &*unsigned(&serde_json::json!({"iss": "https://gh.example"}), "HS256"),
                "algorithm HS256".into(),
            ),
            (
                &*unsigned(&serde_json::json!({"iss": "https://gh.example"}), "RS256"),
                "keys are unavailable: cannot read /nonexistent/jwks.json".into(),
            ),
        ];
        for (token, needle) in cases {
            let e = v
                .verify(token, TokenSource::PostgresPassword)
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains(&needle), "{e} / {needle}");
            assert!(!e.contains("c2ln"), "{e}");
        }
    }

    /// A P-256 key as PKCS#8 PEM (for signing) and its public JWK with `kid`.
    fn es256_key(kid: &str) -> (String, Value) {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = pair.public_key_raw(); // 0x04 || x || y
        let b = |s: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
                                     "x": b(&raw[1..33]), "y": b(&raw[33..65])});
        (pair.serialize_pem(), jwk)
    }

    fn sign(pem: &str, kid: &str, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.into());
        let key = jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    /// The whole path with keys from a file (air-gapped hosts): a good token verifies; each
    /// broken claim is refused for its own reason; a key added to the file (a rotation) is
    /// found on its first use.
    #[tokio::test]
    async fn tokens_verify_against_a_jwks_file() {
        let dir = crate::test_dir::TestDir::new("il-jwks");
        let file = dir.join("jwks.json");
        let (pem, jwk) = es256_key("one");
        std::fs::write(&file, serde_json::json!({"keys": [jwk]}).to_string()).unwrap();
        let mut cfg = issuer("file", "https://ci.example");
        cfg.keys = KeySource::File(file.clone());
        let v = Verifier::new(vec![cfg]);
        let now = now_secs();
        let claims = |extra: Value| {
            let mut c = serde_json::json!({"iss": "https://ci.example", "aud": "interlock",
                "sub": "job", "exp": now + 600, "iat": now, "groups": ["sre"]});
            for (k, val) in extra.as_object().cloned().unwrap() {
                c[k] = val;
            }
            c
        };
        let ok = v
            .verify(
                &sign(&pem, "one", &claims(serde_json::json!({}))),
                TokenSource::SshPassword,
            )
            .await
            .unwrap();
        assert_eq!(
            (ok.sub.as_str(), ok.groups.clone()),
            ("job", vec!["sre".to_string()])
        );
        for (extra, want) in [
            (serde_json::json!({"exp": now - 100}), TokenError::Expired),
            (
                serde_json::json!({"nbf": now + 600}),
                TokenError::NotYetValid,
            ),
            (
                serde_json::json!({"iat": now + 600}),
                TokenError::IssuedInFuture,
            ),
        ] {
            let t = sign(&pem, "one", &claims(extra.clone()));
            let e = v.verify(&t, TokenSource::SshPassword).await.unwrap_err();
            assert_eq!(e, want, "{extra}");
        }
        let t = sign(&pem, "one", &claims(serde_json::json!({"aud": "other"})));
        let e = v.verify(&t, TokenSource::SshPassword).await.unwrap_err();
        assert!(matches!(e, TokenError::Audience { .. }), "{e}");
        let (other_pem, _) = es256_key("one");
        let t = sign(&other_pem, "one", &claims(serde_json::json!({})));
        let e = v.verify(&t, TokenSource::SshPassword).await.unwrap_err();
        assert_eq!(e, TokenError::Signature("file".into()));
        // Rotation: a second key appears in the file.
        let (pem2, jwk2) = es256_key("two");
        let (_, jwk1) = (pem.clone(), serde_json::from_str::<Value>(&std::fs::read_to_string(&file).unwrap()).unwrap()["keys"][0].clone());
        std::fs::write(&file, serde_json::json!({"keys": [jwk1, jwk2]}).to_string()).unwrap();
        let t = sign(&pem2, "two", &claims(serde_json::json!({})));
        assert!(v.verify(&t, TokenSource::SshPassword).await.is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn explained_identities_check_iat_and_need_sub() {
        let v = Verifier::new(vec![issuer("gl", "https://gitlab.example")]);
        let claims = |extra: Value| {
            let mut m = serde_json::json!({"iss": "https://gitlab.example", "exp": 100})
                .as_object()
                .cloned()
                .unwrap();
            m.extend(extra.as_object().cloned().unwrap());
            m
        };
        let id = v
            .explain_identity(claims(serde_json::json!({"sub": "s", "groups": ["sre"]})))
            .unwrap();
        assert_eq!(
            (id.issuer.as_str(), id.groups.clone()),
            ("gl", vec!["sre".to_string()])
        );
        assert!(v.explain_identity(claims(serde_json::json!({}))).is_err());
        let future = identity(
            &issuer("gl", "x"),
            claims(serde_json::json!({"sub": "s", "iat": 1000})),
            TokenSource::SshPassword,
            900,
        );
        assert_eq!(future.unwrap_err(), TokenError::IssuedInFuture);
    }
}
