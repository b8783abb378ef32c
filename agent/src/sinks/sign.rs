//! Standard Webhooks signing: `whsec_` secrets and `v1,` HMAC-SHA256
//! signatures over `"{id}.{timestamp}.{body}"`.

use std::path::Path;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use super::SinkError;

const PREFIX: &str = "whsec_";

/// A signing key (the bytes after the `whsec_` prefix, base64-decoded).
/// `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// Parses `whsec_<base64>`.
    ///
    /// # Errors
    /// The reason it is not such a secret (the secret itself is never quoted).
    pub fn parse(s: &str) -> Result<Secret, &'static str> {
        let b64 = s.strip_prefix(PREFIX).ok_or("missing `whsec_` prefix")?;
        let bytes = STANDARD
            .decode(b64)
            .map_err(|_| "the part after `whsec_` is not base64")?;
        if bytes.is_empty() {
            return Err("empty key");
        }
        Ok(Secret(bytes))
    }
}

/// Every secret of an endpoint; each signs every message (key rotation).
#[derive(Clone, Debug)]
pub struct Secrets(Vec<Secret>);

impl Secrets {
    /// Reads one `whsec_` secret per non-empty line of `path`.
    ///
    /// # Errors
    /// [`SinkError::SecretRead`], [`SinkError::SecretFormat`] (naming the
    /// line, never its content), [`SinkError::NoSecret`] for an empty file.
    pub fn load(path: &Path) -> Result<Secrets, SinkError> {
        let text = std::fs::read_to_string(path).map_err(|source| SinkError::SecretRead {
            path: path.to_owned(),
            source,
        })?;
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            out.push(Secret::parse(line).map_err(|why| SinkError::SecretFormat {
                path: path.to_owned(),
                line: i + 1,
                why,
            })?);
        }
        if out.is_empty() {
            return Err(SinkError::NoSecret(path.to_owned()));
        }
        Ok(Secrets(out))
    }

    /// The `webhook-signature` header value: `v1,<sig>` per secret,
    /// space-separated.
    pub fn signature(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        self.0
            .iter()
            .map(|s| sign(s, id, timestamp, body))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// One `v1,<base64 HMAC-SHA256>` signature.
pub fn sign(secret: &Secret, id: &str, timestamp: u64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; the error branch cannot happen.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&secret.0) else {
        return String::new();
    };
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_test_vector() {
        let s = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            sign(
                &s,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn several_secrets_give_several_signatures_and_stay_hidden() {
        let dir = crate::test_dir::TestDir::new("il-sign");
        let f = dir.join("secrets");
        std::fs::write(
            &f,
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n\nwhsec_c2Vjb25k\n",
        )
        .unwrap();
        let s = Secrets::load(&f).unwrap();
        let sig = s.signature("id", 1, b"{}");
        assert_eq!(sig.split(' ').count(), 2);
        assert!(sig.split(' ').all(|p| p.starts_with("v1,")));
        assert!(!format!("{s:?}").contains("MfKQ"));
        std::fs::write(&f, "whsec_b2s=\nnot-a-secret-xyz\n").unwrap();
        let e = Secrets::load(&f).unwrap_err().to_string();
        assert!(e.contains("line 2") && !e.contains("xyz"), "{e}");
        std::fs::write(&f, "\n").unwrap();
        assert!(matches!(Secrets::load(&f), Err(SinkError::NoSecret(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
