//! A verified job identity: all its claims (for rules), and the part of it records carry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Claims recorded when a token has them: identifiers of the repository, project, pipeline,
/// job, ref, environment, trigger and actor as GitHub, GitLab and Buildkite issue them.
/// Issuers add more with `record_claims`. `sub`, `iss`, `aud` and the groups are recorded
/// apart.
pub const RECORDED_CLAIMS: &[&str] = &[
    // GitHub Actions
    "repository",
    "repository_owner",
    "repository_id",
    "ref",
    "ref_type",
    "ref_protected",
    "sha",
    "environment",
    "event_name",
    "workflow",
    "workflow_ref",
    "job_workflow_ref",
    "run_id",
    "run_attempt",
    "actor",
    "runner_environment",
    // GitLab CI
    "namespace_path",
    "project_path",
    "project_id",
    "pipeline_id",
    "pipeline_source",
    "job_id",
    "user_login",
    "user_email",
    "environment_protected",
    "deployment_tier",
    // Buildkite
    "organization_slug",
    "pipeline_slug",
    "build_number",
    "build_branch",
    "build_tag",
    "step_key",
];

/// Where a flow's token came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum TokenSource {
    /// A variable of the job root's environment (its name).
    JobRootEnv { variable: String },
    /// The PostgreSQL client's password.
    PostgresPassword,
    /// The SSH client's password.
    SshPassword,
    /// A bearer token on the approvals page's API (a bot deciding held requests).
    ApprovalApi,
}

/// A verified token's identity, as rules see it: every claim.
#[derive(Clone, Debug, PartialEq)]
pub struct JobIdentity {
    /// The policy's name of the issuer.
    pub issuer: String,
    /// `iss`.
    pub iss: String,
    /// `sub`.
    pub sub: String,
    /// The groups claim's values.
    pub groups: Vec<String>,
    /// Every claim of the token.
    pub claims: serde_json::Map<String, Value>,
    /// `exp`, seconds since the epoch.
    pub expires: u64,
    pub source: TokenSource,
    /// Claims this issuer records (beyond [`RECORDED_CLAIMS`]).
    pub(super) record_claims: Vec<String>,
}

/// What records carry of a job token: the verified identity, or why the presented token was
/// refused (never the token).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobTokenView {
    pub source: TokenSource,
    /// The policy's issuer name; absent when the token was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The recorded claims (see [`RECORDED_CLAIMS`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, Value>,
    /// `exp` as seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// Why the token was refused; absent when it verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl JobIdentity {
    /// The record of this identity: issuer, subject, groups and the recorded claims.
    pub fn view(&self) -> JobTokenView {
        let claims = self
            .claims
            .iter()
            .filter(|(k, _)| {
                RECORDED_CLAIMS.contains(&k.as_str()) || self.record_claims.contains(k)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        JobTokenView {
            source: self.source.clone(),
            issuer: Some(self.issuer.clone()),
            iss: Some(self.iss.clone()),
            sub: Some(self.sub.clone()),
            groups: self.groups.clone(),
            claims,
            expires: Some(self.expires),
            error: None,
        }
    }
}

impl JobTokenView {
    /// The record of a refused token.
    pub fn refused(source: TokenSource, error: &super::TokenError) -> JobTokenView {
        JobTokenView {
            source,
            issuer: None,
            iss: None,
            sub: None,
            groups: Vec::new(),
            claims: BTreeMap::new(),
            expires: None,
            error: Some(error.to_string()),
        }
    }
}

/// A claim's values as strings rules can match: a string as is, a number or boolean as
/// JSON writes it, each scalar element of an array; empty for objects and null.
pub fn claim_strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Bool(_) | Value::Number(_) => vec![v.to_string()],
        Value::Array(items) => items
            .iter()
            .filter(|i| !i.is_array())
            .flat_map(claim_strings)
            .collect(),
        Value::Null | Value::Object(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn claims_become_strings_for_rules() {
        assert_eq!(claim_strings(&json!("main")), vec!["main"]);
        assert_eq!(claim_strings(&json!(true)), vec!["true"]);
        assert_eq!(claim_strings(&json!(42)), vec!["42"]);
        assert_eq!(
            claim_strings(&json!(["sre", 7, ["nested"], {"o": 1}])),
            vec!["sre", "7"]
        );
        assert!(claim_strings(&json!(null)).is_empty());
    }

    #[test]
    fn records_carry_only_allow_listed_claims() {
        let claims = json!({"sub": "s", "ref": "refs/heads/main", "secret_thing": "x", "extra": 1});
        let id = JobIdentity {
            issuer: "gh".into(),
            iss: "https://i".into(),
            sub: "s".into(),
            groups: vec!["sre".into()],
            claims: claims.as_object().cloned().unwrap_or_default(),
            expires: 10,
            source: TokenSource::PostgresPassword,
            record_claims: vec!["extra".into()],
        };
        let v = id.view();
        assert_eq!(
            v.claims.keys().collect::<Vec<_>>(),
            vec!["extra", "ref"],
            "{v:?}"
        );
        let text = serde_json::to_string(&v).unwrap();
        assert!(!text.contains("secret_thing"), "{text}");
    }
}
