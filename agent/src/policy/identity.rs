//! The policy's `identity:` section: which runner programs are trusted (CI context comes only
//! from the process such a runner started), which variables of that process hold a job token,
//! and which OpenID issuers sign job tokens. Also the `oidc:` rule condition.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use serde::Deserialize;

use super::{rule::Pattern, scalar::parse_str};
use crate::{
    identity::JobRootSpec,
    oidc::{Algorithm, IssuerConfig, KeySource, Verifier},
};

/// The validated `identity:` section.
#[derive(Clone, Debug, Default)]
pub struct IdentityPolicy {
    /// Runner globs and token variables, for the process table.
    pub job: JobRootSpec,
    /// The runner globs as written.
    pub runners: Vec<String>,
    /// Trusted issuers and their key caches.
    pub verifier: Arc<VerifierSlot>,
}

/// The verifier of a policy (a newtype so `Policy` can stay `Clone` and `Debug`).
#[derive(Debug)]
pub struct VerifierSlot(pub Verifier);

impl Default for VerifierSlot {
    fn default() -> Self {
        VerifierSlot(Verifier::new(Vec::new()))
    }
}

/// `identity:` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    /// Globs over the executables of trusted CI runners.
    #[serde(default)]
    pub(super) runners: Vec<String>,
    /// Variables of the job root's environment that hold a job token.
    #[serde(default)]
    pub(super) token_env: Vec<String>,
    #[serde(default)]
    pub(super) issuers: Vec<RawIssuer>,
    /// Whether a runner's path must name a root-owned file at a root-controlled path, the
    /// one the process runs (default: yes).
    #[serde(default)]
    pub(super) trusted_exe: Option<bool>,
}

/// One string or a list of them.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// One issuer as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIssuer {
    pub(super) name: String,
    pub(super) issuer: String,
    pub(super) audience: OneOrMany,
    #[serde(default)]
    pub(super) algorithms: Vec<AlgorithmName>,
    #[serde(default)]
    pub(super) jwks_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub(super) clock_skew: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub(super) refresh: Option<Duration>,
    #[serde(default)]
    pub(super) groups_claim: Option<String>,
    #[serde(default)]
    pub(super) record_claims: Vec<String>,
}

/// An algorithm name, checked where it is written.
pub(super) struct AlgorithmName(Algorithm);

impl<'de> Deserialize<'de> for AlgorithmName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, |s| {
            Algorithm::from_name(s).map(AlgorithmName).ok_or_else(|| {
                format!(
                    "algorithm `{s}` is not accepted for job tokens (asymmetric only: {})",
                    Algorithm::ALL.map(Algorithm::name).join(", ")
                )
            })
        })
    }
}

fn de_opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    parse_str(d, |s| {
        humantime::parse_duration(s)
            .map(Some)
            .map_err(|_| format!("`{s}` is not a duration such as `30s` or `1h`"))
    })
}

/// Where in `identity:` a problem is, and what it is.
pub(super) type Problem = (Vec<super::locate::Step<'static>>, String);

impl RawIdentity {
    /// Validates the section.
    pub(super) fn validate(self) -> Result<IdentityPolicy, Problem> {
        use super::locate::Step::{Index, Key};
        let job = JobRootSpec::new(&self.runners, self.token_env.clone())
            .map_err(|m| (vec![Key("identity"), Key("runners")], m))?
            .any_file(self.trusted_exe == Some(false));
        if let Some((i, v)) = self
            .token_env
            .iter()
            .enumerate()
            .find(|(_, v)| v.is_empty() || v.contains('='))
        {
            return Err((
                vec![Key("identity"), Key("token_env"), Index(i)],
                format!("`{v}` is not an environment variable name"),
            ));
        }
        let mut issuers: Vec<IssuerConfig> = Vec::new();
        for (i, raw) in self.issuers.into_iter().enumerate() {
            let at = |k: &'static str| vec![Key("identity"), Key("issuers"), Index(i), Key(k)];
            let name = raw.name.trim().to_string();
            if name.is_empty() {
                return Err((at("name"), format!("issuer #{} has an empty name", i + 1)));
            }
            if issuers.iter().any(|o| o.name == name) {
                return Err((at("name"), format!("issuer `{name}` is defined twice")));
            }
            if issuers.iter().any(|o| o.issuer == raw.issuer) {
                return Err((
                    at("issuer"),
                    format!("issuer URL `{}` is configured twice", raw.issuer),
                ));
            }
            let keys = match raw.jwks_file {
                Some(f) => KeySource::File(f),
                None => {
                    let url = format!(
                        "{}/.well-known/openid-configuration",
                        raw.issuer.trim_end_matches('/')
                    );
                    let ok =
                        reqwest::Url::parse(&url).is_ok_and(|u| crate::oidc::fetchable_url(&u));
                    if !ok {
                        return Err((
                            at("issuer"),
                            format!(
                                "issuer `{name}`: `{}` is not an https URL (http only on loopback); give `jwks_file` to use keys from a file",
                                raw.issuer
                            ),
                        ));
                    }
                    KeySource::Discovery
                }
            };
            let audiences = raw.audience.into_vec();
            if audiences.is_empty() || audiences.iter().any(String::is_empty) {
                return Err((
                    at("audience"),
                    format!(
                        "issuer `{name}`: `audience` names no audience; tokens for any audience would be accepted"
                    ),
                ));
            }
            let algorithms = if raw.algorithms.is_empty() {
                vec![Algorithm::RS256, Algorithm::ES256]
            } else {
                raw.algorithms.into_iter().map(|a| a.0).collect()
            };
            issuers.push(IssuerConfig {
                name,
                issuer: raw.issuer,
                audiences,
                algorithms,
                keys,
                clock_skew: raw.clock_skew.unwrap_or(crate::oidc::DEFAULT_CLOCK_SKEW),
                refresh: raw
                    .refresh
                    .filter(|d| !d.is_zero())
                    .unwrap_or(crate::oidc::DEFAULT_REFRESH),
                groups_claim: raw.groups_claim.unwrap_or_else(|| "groups".into()),
                record_claims: raw.record_claims,
            });
        }
        Ok(IdentityPolicy {
            job,
            runners: self.runners,
            verifier: Arc::new(VerifierSlot(Verifier::new(issuers))),
        })
    }
}

/// A rule's `oidc:` condition: the session has a verified job token and its claims match.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcCondition {
    /// The policy's issuer name.
    #[serde(default)]
    pub issuer: Option<String>,
    /// A glob over `sub`.
    #[serde(default)]
    pub sub: Option<Pattern>,
    /// Claim -> glob over its value (any element, for an array claim); the claim must be set.
    #[serde(default)]
    pub claims: BTreeMap<String, Pattern>,
    /// Any of these groups (the issuer's groups claim).
    #[serde(default)]
    pub groups: Vec<String>,
}

impl OidcCondition {
    /// `Ok` when `job` satisfies the condition; otherwise why not.
    pub fn check(&self, job: &crate::oidc::JobIdentity) -> Result<(), String> {
        if let Some(i) = &self.issuer
            && *i != job.issuer
        {
            return Err(format!(
                "the job token is from issuer `{}`, not `{i}`",
                job.issuer
            ));
        }
        if let Some(p) = &self.sub
            && !p.is_match(&job.sub)
        {
            return Err(format!(
                "token subject `{}` does not match `{}`",
                job.sub,
                p.as_str()
            ));
        }
        for (claim, p) in &self.claims {
            let values = job
                .claims
                .get(claim)
                .map(crate::oidc::claim_strings)
                .unwrap_or_default();
            if values.is_empty() {
                return Err(format!("the job token has no `{claim}` claim"));
            }
            if !values.iter().any(|v| p.is_match(v)) {
                return Err(format!(
                    "token claim {claim}={values:?} does not match `{}`",
                    p.as_str()
                ));
            }
        }
        if !self.groups.is_empty() && !job.groups.iter().any(|g| self.groups.contains(g)) {
            return Err(format!(
                "token groups {:?} include none of {:?}",
                job.groups, self.groups
            ));
        }
        Ok(())
    }
}
