//! Time-boxed grants (`grant: 1h`): once a human approves, the same rule on the same target
//! passes without asking for the same CI job until the grant ends. They are keyed on the job
//! — its verified job token's issuer, subject and run, or the runner-rooted CI context's run
//! identifiers — never on a uid or cgroup, which every job of a runner shares. A request
//! whose job cannot be identified gets no timed grant: its approval covers that request only.

use std::time::SystemTime;

use super::types::Requester;
use crate::oidc::claim_strings;

/// Job token claims that tell one run of a job from the next (GitHub `run_id` and
/// `run_attempt`, GitLab `pipeline_id` and `job_id`, Buildkite `build_number` and `job_id`).
const RUN_CLAIMS: &[&str] = &[
    "run_id",
    "run_attempt",
    "pipeline_id",
    "job_id",
    "build_number",
];

/// CI variables each of which alone names one job run (GitHub run, GitLab job, Buildkite
/// job, Jenkins build, CircleCI build); the key is the whole CI context when one is present.
const RUN_VARIABLES: &[&str] = &[
    "GITHUB_RUN_ID",
    "CI_JOB_ID",
    "BUILDKITE_JOB_ID",
    "BUILD_ID",
    "CIRCLE_BUILD_NUM",
];

/// The job a request came from, as grants key it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum JobKey {
    /// A verified job token: issuer URL, subject and the run claims it has.
    Token {
        iss: String,
        sub: String,
        run: Vec<(String, Vec<String>)>,
    },
    /// The runner-rooted CI context (every captured variable).
    Ci(Vec<(String, String)>),
}

impl JobKey {
    /// The job of `r`, if it can be told apart from other jobs: a verified token with at
    /// least one run claim, else a CI context with a run identifier.
    pub(crate) fn of(r: &Requester) -> Option<JobKey> {
        if let Some(job) = r.job.as_ref().filter(|j| j.error.is_none())
            && let (Some(iss), Some(sub)) = (&job.iss, &job.sub)
        {
            let run: Vec<(String, Vec<String>)> = RUN_CLAIMS
                .iter()
                .filter_map(|c| {
                    let v = job.claims.get(*c).map(claim_strings).unwrap_or_default();
                    (!v.is_empty()).then(|| (c.to_string(), v))
                })
                .collect();
            if !run.is_empty() {
                return Some(JobKey::Token {
                    iss: iss.clone(),
                    sub: sub.clone(),
                    run,
                });
            }
        }
        if RUN_VARIABLES
            .iter()
            .any(|v| r.ci.get(*v).is_some_and(|x| !x.is_empty()))
        {
            return Some(JobKey::Ci(
                r.ci.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            ));
        }
        None
    }
}

/// A time-boxed grant: the same rule and target pass for the same job until `until`.
#[derive(Debug)]
pub(super) struct TimedGrant {
    pub(super) rule: String,
    pub(super) target: String,
    pub(super) job: JobKey,
    pub(super) until: SystemTime,
}

impl TimedGrant {
    /// Whether this grant covers `rule` on `target` for `job`.
    pub(super) fn covers(&self, rule: &str, target: &str, job: &JobKey) -> bool {
        self.rule == rule && self.target == target && self.job == *job
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::oidc::{JobTokenView, TokenSource};

    fn requester(ci: &[(&str, &str)], job: Option<JobTokenView>) -> Requester {
        Requester {
            uid: 1001,
            user: Some("ci".into()),
            tgid: 1,
            exe: None,
            cgroup: Some("/runner".into()),
            ci: ci
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            job,
        }
    }

    fn token(claims: serde_json::Value) -> JobTokenView {
        JobTokenView {
            source: TokenSource::PostgresPassword,
            issuer: Some("gh".into()),
            iss: Some("https://token.actions.githubusercontent.com".into()),
            sub: Some("repo:o/r:ref:refs/heads/main".into()),
            groups: vec![],
            claims: claims
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
            expires: None,
            error: None,
        }
    }

    #[test]
    fn jobs_are_told_apart_by_run_not_by_uid_or_cgroup() {
        // Same uid, same cgroup, two runs: two keys.
        let a = JobKey::of(&requester(&[("GITHUB_RUN_ID", "1")], None)).unwrap();
        let b = JobKey::of(&requester(&[("GITHUB_RUN_ID", "2")], None)).unwrap();
        assert_ne!(a, b);
        // The same token subject in two runs: two keys.
        let t1 = JobKey::of(&requester(&[], Some(token(json!({"run_id": "7"}))))).unwrap();
        let t2 = JobKey::of(&requester(&[], Some(token(json!({"run_id": "8"}))))).unwrap();
        assert_ne!(t1, t2);
        assert_eq!(
            t1,
            JobKey::of(&requester(&[], Some(token(json!({"run_id": "7"}))))).unwrap()
        );
        // The token wins over the CI context.
        assert!(matches!(
            JobKey::of(&requester(
                &[("CI_JOB_ID", "5")],
                Some(token(json!({"job_id": 5})))
            )),
            Some(JobKey::Token { .. })
        ));
    }

    #[test]
    fn no_job_identity_no_key() {
        assert_eq!(JobKey::of(&requester(&[], None)), None);
        // CI context without a run identifier.
        assert_eq!(
            JobKey::of(&requester(&[("GITHUB_REPOSITORY", "o/r")], None)),
            None
        );
        // A token without run claims, or a refused one, falls back to the CI context.
        assert_eq!(
            JobKey::of(&requester(&[], Some(token(json!({"actor": "a"}))))),
            None
        );
        let mut refused = token(json!({"run_id": "7"}));
        refused.error = Some("expired".into());
        assert!(matches!(
            JobKey::of(&requester(&[("CI_JOB_ID", "9")], Some(refused))),
            Some(JobKey::Ci(_))
        ));
    }
}
