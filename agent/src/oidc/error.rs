//! Why a job token was not accepted. Every message is safe to show the client and to record:
//! it names claims, issuers and key ids, never the token.

/// A refused job token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the job token is not a signed JWT ({0})")]
    Malformed(String),
    #[error("the job token's issuer `{0}` is not one the policy trusts")]
    UnknownIssuer(String),
    #[error(
        "the job token uses algorithm {alg}, which issuer `{issuer}` is not allowed (allowed: {allowed})"
    )]
    Algorithm {
        issuer: String,
        alg: String,
        allowed: String,
    },
    #[error("the job token's key `{kid}` is not among issuer `{issuer}`'s keys")]
    UnknownKey { issuer: String, kid: String },
    #[error("the job token's signature does not verify with issuer `{0}`'s key")]
    Signature(String),
    #[error("the job token has expired")]
    Expired,
    #[error("the job token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the job token was issued in the future (iat)")]
    IssuedInFuture,
    #[error("the job token's audience is not one issuer `{issuer}` is configured for ({expected})")]
    Audience { issuer: String, expected: String },
    #[error("the job token's issuer does not match")]
    Issuer,
    #[error("the job token has no `{0}` claim")]
    MissingClaim(String),
    #[error("issuer `{issuer}`'s keys are unavailable: {reason}")]
    Keys { issuer: String, reason: String },
    #[error("this target requires a job token and none was presented")]
    Missing,
    #[error("the job token was not asked for: {0}")]
    NotAsked(String),
}

impl TokenError {
    /// Maps a jsonwebtoken validation error for issuer `issuer` with audiences `aud`.
    pub(super) fn from_jwt(e: &jsonwebtoken::errors::Error, issuer: &str, aud: &[String]) -> Self {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.kind() {
            K::ExpiredSignature => TokenError::Expired,
            K::ImmatureSignature => TokenError::NotYetValid,
            K::InvalidAudience => TokenError::Audience {
                issuer: issuer.to_string(),
                expected: aud.join(", "),
            },
            K::InvalidIssuer => TokenError::Issuer,
            K::InvalidSignature => TokenError::Signature(issuer.to_string()),
            K::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
            K::InvalidAlgorithm => TokenError::Algorithm {
                issuer: issuer.to_string(),
                alg: "of another key type".into(),
                allowed: "the key's own".into(),
            },
            // Base64 and JSON errors print fragments of their input: only the kind is named.
            K::Base64(_) => TokenError::Malformed("bad base64".into()),
            K::Json(_) => TokenError::Malformed("bad JSON".into()),
            K::Utf8(_) => TokenError::Malformed("bad UTF-8".into()),
            other => TokenError::Malformed(format!("{other:?}")),
        }
    }
}
