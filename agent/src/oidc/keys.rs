//! One issuer's signing keys: fetched from its discovery document's `jwks_uri` (or read from
//! a file), cached, fetched again when older than the refresh schedule and when a token names
//! a key id the cache does not have (a key rotation), at most once a second and once per
//! unknown key id every 30 seconds, so tokens with made-up key ids cannot make interlock
//! hammer the issuer.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use jsonwebtoken::{
    DecodingKey,
    jwk::{AlgorithmParameters, Jwk, PublicKeyUse},
};
use serde_json::Value;

use super::{
    IssuerConfig, KeySource, TokenError,
    config::{Algorithm, fetchable},
};

/// Least time between two fetches caused by unknown key ids.
const FORCED_GAP: Duration = Duration::from_secs(1);
/// Least time between two fetches for the same unknown key id.
const SAME_KID_GAP: Duration = Duration::from_secs(30);
/// Largest discovery document or JWKS accepted.
const MAX_DOCUMENT: usize = 1024 * 1024;

/// A verification key and the algorithm its JWK pins, if it does.
#[derive(Clone)]
pub(super) struct Key {
    pub(super) key: DecodingKey,
    pub(super) alg: Option<jsonwebtoken::Algorithm>,
}

#[derive(Default)]
struct State {
    /// By key id; a key without `kid` is stored under "".
    keys: HashMap<String, Key>,
    fetched: Option<Instant>,
    last_forced: Option<Instant>,
    missed: HashMap<String, Instant>,
}

/// The key cache of one issuer.
pub(super) struct IssuerKeys {
    pub(super) config: IssuerConfig,
    // A tokio lock held across the fetch on purpose: concurrent verifications of one issuer
    // share one fetch instead of each starting their own.
    state: tokio::sync::Mutex<State>,
}

impl IssuerKeys {
    pub(super) fn new(config: IssuerConfig) -> IssuerKeys {
        IssuerKeys {
            config,
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    /// The key a token with `kid` is signed with.
    ///
    /// # Errors
    /// [`TokenError::Keys`] when no keys could ever be had, [`TokenError::UnknownKey`] when
    /// the (refreshed) keys have none with that id.
    pub(super) async fn key_for(
        &self,
        kid: Option<&str>,
        client: &reqwest::Client,
    ) -> Result<Key, TokenError> {
        let mut st = self.state.lock().await;
        let stale = st
            .fetched
            .is_none_or(|at| at.elapsed() >= self.config.refresh);
        if stale {
            self.refresh(&mut st, client).await?;
        }
        let wanted = kid.unwrap_or_default();
        if let Some(k) = pick(&st.keys, kid) {
            return Ok(k);
        }
        // A key id the cache does not have: the issuer may have rotated its keys.
        let may_fetch = st.last_forced.is_none_or(|at| at.elapsed() >= FORCED_GAP)
            && st
                .missed
                .get(wanted)
                .is_none_or(|at| at.elapsed() >= SAME_KID_GAP);
        if may_fetch && !stale {
            st.last_forced = Some(Instant::now());
            self.refresh(&mut st, client).await?;
            if let Some(k) = pick(&st.keys, kid) {
                return Ok(k);
            }
        }
        if st.missed.len() > 1024 {
            st.missed.clear();
        }
        st.missed.insert(wanted.to_string(), Instant::now());
        Err(TokenError::UnknownKey {
            issuer: self.config.name.clone(),
            kid: shown(wanted),
        })
    }

    /// Fetches the keys; on failure keeps the keys it has (and says so), or fails when it
    /// has none.
    async fn refresh(&self, st: &mut State, client: &reqwest::Client) -> Result<(), TokenError> {
        match fetch(&self.config, client).await {
            Ok(keys) => {
                tracing::info!(issuer = %self.config.name, keys = keys.len(), "job token keys fetched");
                st.keys = keys;
                st.fetched = Some(Instant::now());
                Ok(())
            }
            Err(reason) if st.keys.is_empty() => Err(TokenError::Keys {
                issuer: self.config.name.clone(),
                reason,
            }),
            Err(reason) => {
                tracing::warn!(issuer = %self.config.name, %reason, "job token keys not refreshed; the cached ones stay");
                Ok(())
            }
        }
    }
}

/// A key id as shown in errors: it came from an unverified token.
pub(super) fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_default).collect();
    if s.chars().count() > 80 {
        out.push_str("...");
    }
    out
}

fn pick(keys: &HashMap<String, Key>, kid: Option<&str>) -> Option<Key> {
    match kid {
        Some(k) => keys.get(k).cloned(),
        // Without a key id, only an issuer with a single key is unambiguous.
        None if keys.len() == 1 => keys.values().next().cloned(),
        None => None,
    }
}

async fn fetch(
    config: &IssuerConfig,
    client: &reqwest::Client,
) -> Result<HashMap<String, Key>, String> {
    let body = match &config.keys {
        KeySource::File(path) => tokio::fs::read(path)
            .await
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        KeySource::Discovery => {
            let url = format!(
                "{}/.well-known/openid-configuration",
                config.issuer.trim_end_matches('/')
            );
            let doc: Value = serde_json::from_slice(&get(client, &url).await?)
                .map_err(|e| format!("discovery document {url} is not JSON: {e}"))?;
            // OpenID Connect Discovery 1.0, 4.3: the document must name the same issuer.
            if doc.get("issuer").and_then(Value::as_str) != Some(config.issuer.as_str()) {
                return Err(format!(
                    "discovery document {url} names another issuer than `{}`",
                    config.issuer
                ));
            }
            let jwks = doc
                .get("jwks_uri")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("discovery document {url} has no jwks_uri"))?;
            get(client, jwks).await?
        }
    };
    parse_jwks(&body)
}

async fn get(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    if !fetchable(&parsed) {
        return Err(format!(
            "{url}: keys are only fetched over https (or http on loopback)"
        ));
    }
    let resp = client
        .get(parsed)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", resp.status()));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT as u64)
    {
        return Err(format!("GET {url}: larger than {MAX_DOCUMENT} bytes"));
    }
    let body = resp.bytes().await.map_err(|e| format!("GET {url}: {e}"))?;
    if body.len() > MAX_DOCUMENT {
        return Err(format!("GET {url}: larger than {MAX_DOCUMENT} bytes"));
    }
    Ok(body.to_vec())
}

/// The signing keys of a JWKS document. Encryption keys, symmetric keys and keys of types
/// jsonwebtoken does not know are skipped (an issuer may publish more than interlock uses).
pub(super) fn parse_jwks(body: &[u8]) -> Result<HashMap<String, Key>, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let list = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("JWKS has no `keys` array")?;
    let mut keys = HashMap::new();
    for v in list {
        let Ok(jwk) = serde_json::from_value::<Jwk>(v.clone()) else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption))
            || matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_))
        {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let alg = jwk
            .common
            .key_algorithm
            .and_then(|a| a.to_string().parse::<jsonwebtoken::Algorithm>().ok());
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        keys.insert(kid, Key { key, alg });
    }
    if keys.is_empty() {
        return Err("JWKS holds no signing key interlock can use".into());
    }
    Ok(keys)
}

/// Whether a key whose JWK pins `pinned` may verify a token signed with `alg`.
pub(super) fn key_allows(pinned: Option<jsonwebtoken::Algorithm>, alg: Algorithm) -> bool {
    pinned.is_none_or(|p| p == alg.jose())
}

/// Shared so a reloaded policy with the same issuer settings could keep the keys.
pub(super) type Shared = Arc<IssuerKeys>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_keeps_signing_keys_only() {
        let doc = serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "EC", "crv": "P-256", "use": "enc", "kid": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "sig", "alg": "ES256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "weird", "kid": "unknown"}
        ]});
        let keys = parse_jwks(doc.to_string().as_bytes()).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["sig"]);
        assert!(key_allows(keys["sig"].alg, Algorithm::ES256));
        assert!(!key_allows(keys["sig"].alg, Algorithm::RS256));
        assert!(parse_jwks(b"{\"keys\": []}").is_err());
        assert!(parse_jwks(b"nope").is_err());
    }

    #[test]
    fn shown_key_ids_are_bounded_and_escaped() {
        assert_eq!(shown("k1"), "k1");
        assert_eq!(shown("a\nb"), "a\\nb");
        assert!(shown(&"x".repeat(500)).len() < 100);
    }
}
