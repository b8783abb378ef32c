//! The job a flow belongs to: the trusted runner on its ancestry and the process that runner
//! started (the job's root), whose environment is the only one CI variables and job tokens
//! are read from. A job's own descendants can set any variable they like; the runner set the
//! job root's.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::exefile::ExeTrust;
use super::process::CiSource;

/// Which programs are trusted CI runners, and which variables of a job root's environment
/// hold a job token. Built from the policy (`identity.runners`, `identity.token_env`).
#[derive(Clone, Debug, Default)]
pub struct JobRootSpec {
    runners: Option<GlobSet>,
    token_vars: Vec<String>,
    /// Whether a path matching a runner glob must also pass the file check
    /// (`identity.trusted_exe`, on unless the policy turns it off).
    any_file: bool,
}

impl JobRootSpec {
    /// Runners by globs over executable paths (`*` does not cross `/`, `**` does). A process
    /// only counts as a runner when its path is trusted to name the file it runs
    /// ([`ExeTrust::Trusted`]), unless [`JobRootSpec::any_file`] says otherwise.
    ///
    /// # Errors
    /// The glob that does not compile, with why.
    pub fn new(runners: &[String], token_vars: Vec<String>) -> Result<JobRootSpec, String> {
        let runners = if runners.is_empty() {
            None
        } else {
            let mut set = GlobSetBuilder::new();
            for r in runners {
                let glob = GlobBuilder::new(r)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| format!("invalid glob `{r}`: {e}"))?;
                set.add(glob);
            }
            Some(
                set.build()
                    .map_err(|e| format!("runner globs do not compile: {e}"))?,
            )
        };
        Ok(JobRootSpec {
            runners,
            token_vars,
            any_file: false,
        })
    }

    /// Lets any file at a matching path count as a runner (`identity.trusted_exe: false`):
    /// then a job that copies a program to a matching path is a runner too.
    pub fn any_file(mut self, any: bool) -> JobRootSpec {
        self.any_file = any;
        self
    }

    /// A spec under which every process's parent counts as its runner: for unit tests of
    /// environment handling only.
    #[cfg(test)]
    pub(crate) fn trusting_parent() -> JobRootSpec {
        JobRootSpec {
            runners: GlobSetBuilder::new()
                .add(globset::Glob::new("**").unwrap())
                .build()
                .ok(),
            token_vars: Vec::new(),
            any_file: true,
        }
    }

    /// The variables a job token is read from.
    pub fn token_vars(&self) -> &[String] {
        &self.token_vars
    }

    /// Whether `exe` is a trusted runner.
    pub fn is_runner(&self, exe: &str) -> bool {
        self.runners.as_ref().is_some_and(|r| r.is_match(exe))
    }

    /// Whether any runner is configured.
    pub fn has_runners(&self) -> bool {
        self.runners.is_some()
    }
}

/// One process of a flow's chain (the process itself first, then its ancestors), as far as
/// finding the job root needs it.
#[derive(Clone)]
pub(super) struct Link {
    pub(super) tgid: u32,
    pub(super) exe: Option<String>,
    pub(super) trust: ExeTrust,
    pub(super) alive: bool,
    pub(super) execs: Option<u32>,
}

/// The job root of `chain`, or why there is none. The runner is the **outermost** process
/// whose executable is a runner: a job cannot put itself above the runner that started it,
/// while it can start a program of any name below it.
pub(super) fn find_job_root(spec: &JobRootSpec, chain: &[Link]) -> Result<usize, CiSource> {
    let none = |reason: String| CiSource::None { reason };
    if !spec.has_runners() {
        return Err(none(
            "the policy names no trusted runner (identity.runners)".into(),
        ));
    }
    let named = |l: &Link| l.exe.as_deref().is_some_and(|e| spec.is_runner(e));
    let runner = chain
        .iter()
        .rposition(|l| named(l) && (spec.any_file || l.trust.is_trusted()));
    let Some(runner) = runner else {
        // A path that only looks like a runner's says why it does not count.
        if let Some(why) = chain
            .iter()
            .rev()
            .filter(|l| named(l))
            .find_map(|l| l.trust.why_not())
        {
            return Err(none(format!(
                "no trusted runner: a process named like one does not count: {why}"
            )));
        }
        return Err(none(format!(
            "no trusted runner among the process and its {} known ancestors",
            chain.len().saturating_sub(1)
        )));
    };
    let Some(root_at) = runner.checked_sub(1) else {
        return Err(none("the connecting process is itself a runner".into()));
    };
    let root = chain
        .get(root_at)
        .ok_or_else(|| none("no job root".into()))?;
    if !root.alive {
        return Err(none(format!(
            "the job root (pid {}) has exited; its environment is gone",
            root.tgid
        )));
    }
    match root.execs {
        Some(0 | 1) => Ok(root_at),
        Some(n) => Err(none(format!(
            "the job root (pid {}) exec'd {n} times since the runner started it: its environment may be the job's own",
            root.tgid
        ))),
        None => Err(none(format!(
            "the job root's (pid {}) start was not seen (it started before interlock, or its records were lost)",
            root.tgid
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(tgid: u32, exe: &str, execs: Option<u32>) -> Link {
        Link {
            tgid,
            exe: Some(exe.into()),
            trust: ExeTrust::Trusted,
            alive: true,
            execs,
        }
    }

    #[test]
    fn the_outermost_runner_child_is_the_job_root() {
        let spec = JobRootSpec::new(&["**/Runner.Worker".into()], vec![]).unwrap();
        let chain = [
            link(40, "/usr/bin/psql", Some(1)),
            link(31, "/tmp/Runner.Worker", Some(1)), // a job's fake runner
            link(30, "/bin/bash", Some(1)),
            link(20, "/opt/runner/bin/Runner.Worker", None),
            link(1, "/sbin/init", None),
        ];
        assert_eq!(find_job_root(&spec, &chain).unwrap(), 2);
    }

    #[test]
    fn a_runner_whose_file_is_not_trusted_is_no_runner() {
        let spec = JobRootSpec::new(&["**/gitlab-runner".into()], vec![]).unwrap();
        let mut fake = link(31, "/tmp/x/gitlab-runner", None);
        fake.trust = ExeTrust::Untrusted {
            reason: "directory /tmp is writable by group or others".into(),
        };
        let chain = [
            link(40, "/usr/bin/psql", Some(1)),
            fake,
            link(1, "/sbin/init", None),
        ];
        match find_job_root(&spec, &chain) {
            Err(CiSource::None { reason }) => {
                assert!(reason.contains("/tmp is writable"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // The real runner above the fake one still counts.
        let mut chain = chain.to_vec();
        chain.insert(2, link(20, "/usr/bin/gitlab-runner", None));
        chain.insert(2, link(21, "/bin/bash", Some(1)));
        assert_eq!(find_job_root(&spec, &chain).unwrap(), 2);
        // Opted out: the path alone decides.
        let spec = spec.any_file(true);
        assert_eq!(find_job_root(&spec, &chain[..2]).unwrap(), 0);
    }

    #[test]
    fn no_runner_no_context_and_the_reason() {
        let none = JobRootSpec::default();
        let chain = [link(40, "/usr/bin/psql", Some(1))];
        let why = |r: Result<usize, CiSource>| match r {
            Err(CiSource::None { reason }) => reason,
            other => panic!("{other:?}"),
        };
        assert!(why(find_job_root(&none, &chain)).contains("names no trusted runner"));
        let spec = JobRootSpec::new(&["**/gitlab-runner".into()], vec![]).unwrap();
        assert!(why(find_job_root(&spec, &chain)).contains("no trusted runner among"));
        let runner_itself = [link(9, "/usr/bin/gitlab-runner", None)];
        assert!(why(find_job_root(&spec, &runner_itself)).contains("itself a runner"));
        let reexec = [
            link(40, "/usr/bin/psql", Some(2)),
            link(9, "/usr/bin/gitlab-runner", None),
        ];
        assert!(why(find_job_root(&spec, &reexec)).contains("exec'd 2 times"));
        let unseen = [
            link(40, "/usr/bin/psql", None),
            link(9, "/usr/bin/gitlab-runner", None),
        ];
        assert!(why(find_job_root(&spec, &unseen)).contains("was not seen"));
        let mut gone = link(40, "/usr/bin/psql", Some(1));
        gone.alive = false;
        let exited = [gone, link(9, "/usr/bin/gitlab-runner", None)];
        assert!(why(find_job_root(&spec, &exited)).contains("has exited"));
        assert!(JobRootSpec::new(&["[".into()], vec![]).is_err());
    }
}
