//! The requester as rules see it ([`Subject`]), and which of its identity
//! facts interlock could not establish ([`Fact`]). A fact that cannot be
//! established is never read as "does not match": block and approval rules
//! that name it apply, allow rules do not (policies/README.md, "Unknown
//! identity facts").

use std::{collections::BTreeMap, sync::Arc};

use serde::Serialize;

use crate::{
    identity::{CiSource, ExeTrust, ProcessIdentity},
    oidc::JobIdentity,
};

/// An identity fact a rule condition reads, when it may be unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Fact {
    /// The executable (`exe:`).
    Exe,
    /// The command line (`argv:`).
    Argv,
    /// The ancestors' executables, up to pid 1 (`ancestor_exe:`).
    Ancestry,
    /// The cgroup-v2 path (`cgroup:`).
    Cgroup,
}

impl Fact {
    /// The condition that reads this fact, as policy files write it.
    pub fn condition(self) -> &'static str {
        match self {
            Fact::Exe => "exe",
            Fact::Argv => "argv",
            Fact::Ancestry => "ancestor_exe",
            Fact::Cgroup => "cgroup",
        }
    }
}

/// The requester, as rules see it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Subject {
    pub uid: u32,
    pub user: Option<String>,
    pub exe: Option<String>,
    /// Whether `exe` names the file the process runs in a way a non-root user cannot fake.
    pub exe_trust: ExeTrust,
    pub argv: Vec<String>,
    pub ancestor_exes: Vec<String>,
    /// The same for each of `ancestor_exes` (same order); a missing entry is unknown.
    pub ancestor_trust: Vec<ExeTrust>,
    pub cgroup: Option<String>,
    /// The runner-rooted CI context (empty without a trusted runner).
    pub ci: BTreeMap<String, String>,
    /// Why there is no CI context, when there is none: `ci:` conditions
    /// are then unknown.
    pub ci_unavailable: Option<String>,
    /// Facts interlock could not establish, with why. uid and user come
    /// from the kernel's record of the connect and are always known.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: BTreeMap<Fact, String>,
    /// The verified job token's identity, if the session has one.
    #[serde(skip)]
    pub job: Option<Arc<JobIdentity>>,
    /// SSH: the login, once the client authenticated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_login: Option<SshLogin>,
}

/// An SSH login: the user the client asked for and the one interlock logs
/// in upstream as (`None` when the target refuses the asked one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SshLogin {
    pub requested: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

impl Subject {
    /// Why `fact` is unknown, if it is.
    pub fn unknown(&self, fact: Fact) -> Option<&str> {
        self.unknown.get(&fact).map(String::as_str)
    }

    /// Each known ancestor executable with whether its path is trusted (`None`: not
    /// checked, so unknown).
    pub fn ancestors(&self) -> impl Iterator<Item = (&str, Option<&ExeTrust>)> {
        self.ancestor_exes
            .iter()
            .enumerate()
            .map(|(i, a)| (a.as_str(), self.ancestor_trust.get(i)))
    }
}

impl From<&ProcessIdentity> for Subject {
    fn from(p: &ProcessIdentity) -> Subject {
        Subject {
            uid: p.uid,
            user: p.user.clone(),
            exe: p.exe.clone(),
            exe_trust: p.exe_trust.clone(),
            argv: p.argv.clone(),
            ancestor_exes: p.ancestry.iter().filter_map(|a| a.exe.clone()).collect(),
            ancestor_trust: p
                .ancestry
                .iter()
                .filter(|a| a.exe.is_some())
                .map(|a| a.exe_trust.clone())
                .collect(),
            cgroup: p.cgroup.clone(),
            ci: p.ci.clone(),
            ci_unavailable: match &p.ci_source {
                CiSource::None { reason } => Some(reason.clone()),
                CiSource::JobRoot { .. } => None,
            },
            unknown: unknown_facts(p),
            job: None,
            ssh_login: None,
        }
    }
}

/// The facts of `p` the process table could not establish. The process
/// table keeps exited processes it saw (exe, argv, parent), but files
/// under /proc are only read while the process lives, so a connecting
/// process that exited before the daemon looked it up (a forked child
/// connecting on its parent's socket) has no cgroup.
fn unknown_facts(p: &ProcessIdentity) -> BTreeMap<Fact, String> {
    let mut out = BTreeMap::new();
    let pid = p.tgid;
    if p.exe.is_none() {
        out.insert(
            Fact::Exe,
            format!("the executable of pid {pid} is unknown (it exited before interlock saw it)"),
        );
        if p.argv.is_empty() {
            out.insert(
                Fact::Argv,
                format!("the command line of pid {pid} is unknown"),
            );
        }
    }
    // The chain is whole when it reaches pid 1 with every executable known;
    // it ends early at an ancestor that is gone and was never seen, or at
    // the depth limit, and an ancestor beyond may be anything.
    let gap = p.ancestry.iter().find(|a| a.exe.is_none()).map(|a| a.tgid);
    let whole = match p.ancestry.last() {
        Some(last) => last.tgid == 1 && gap.is_none(),
        None => p.ppid == 0 && p.exe.is_some(),
    };
    if !whole {
        let why = match gap {
            Some(t) => format!("ancestor pid {t} of pid {pid} is unknown"),
            None if p.ancestry.is_empty() => format!("the parent of pid {pid} is unknown"),
            None => format!(
                "the ancestry of pid {pid} does not reach pid 1 within {} ancestors",
                p.ancestry.len()
            ),
        };
        out.insert(Fact::Ancestry, why);
    }
    if p.cgroup.is_none() {
        out.insert(
            Fact::Cgroup,
            format!(
                "the cgroup of pid {pid} cannot be read (it exited before interlock looked it up)"
            ),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Ancestor;

    fn known() -> ProcessIdentity {
        let mut p = ProcessIdentity::unknown(40, 40);
        p.ppid = 30;
        p.uid = 1000;
        p.exe = Some("/usr/bin/psql".into());
        p.argv = vec!["psql".into()];
        p.cgroup = Some("/ci/job".into());
        p.ancestry = vec![
            Ancestor {
                tgid: 30,
                exe: Some("/bin/sh".into()),
                argv: vec![],
                exe_file: None,
                exe_trust: ExeTrust::Trusted,
            },
            Ancestor {
                tgid: 1,
                exe: Some("/sbin/init".into()),
                argv: vec![],
                exe_file: None,
                exe_trust: ExeTrust::Trusted,
            },
        ];
        p
    }

    #[test]
    fn a_process_seen_whole_has_no_unknown_facts() {
        assert!(Subject::from(&known()).unknown.is_empty());
    }

    #[test]
    fn an_exited_process_has_no_cgroup() {
        let mut p = known();
        p.cgroup = None;
        let s = Subject::from(&p);
        assert_eq!(
            s.unknown.keys().copied().collect::<Vec<_>>(),
            [Fact::Cgroup]
        );
        assert!(
            s.unknown(Fact::Cgroup)
                .unwrap_or_default()
                .contains("pid 40")
        );
    }

    #[test]
    fn a_process_never_seen_is_unknown_in_every_fact() {
        let s = Subject::from(&ProcessIdentity::unknown(40, 40));
        assert_eq!(
            s.unknown.keys().copied().collect::<Vec<_>>(),
            [Fact::Exe, Fact::Argv, Fact::Ancestry, Fact::Cgroup]
        );
        assert!(s.ci_unavailable.is_some());
    }

    #[test]
    fn a_broken_or_cut_ancestry_is_unknown() {
        let mut gap = known();
        if let Some(a) = gap.ancestry.first_mut() {
            a.exe = None;
        }
        let why = Subject::from(&gap).unknown.remove(&Fact::Ancestry);
        assert!(why.unwrap_or_default().contains("ancestor pid 30"));
        let mut cut = known();
        cut.ancestry.pop();
        let why = Subject::from(&cut).unknown.remove(&Fact::Ancestry);
        assert!(why.unwrap_or_default().contains("does not reach pid 1"));
    }
}
