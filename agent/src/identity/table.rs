use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs;
use std::path::PathBuf;

use super::cache::{EnvCache, UserCache};
use super::ci::{self, EnvToken};
use super::error::IdentityError;
use super::exefile::{self, ExeFile, ExeTrust};
use super::job::{JobRootSpec, Link, find_job_root};
use super::process::{Ancestor, CiSource, ProcessIdentity, ProcessInfo, cap_argv};
use super::procfs;
use super::store::Store;

const DEFAULT_PASSWD: &str = "/etc/passwd";

/// How far up a flow's ancestry the trusted runner is looked for (ancestors beyond the
/// requested depth are searched but not listed).
const RUNNER_SEARCH_DEPTH: usize = 64;

/// A process lifecycle event, already decoded from the kernel's ring buffer by the `ebpf`
/// module. Thread creation and thread exit are not process events and must not be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessEvent {
    /// A new process was created (`sched_process_fork` with a new thread group).
    Fork {
        /// The new process.
        child_tgid: u32,
        /// The process that forked it.
        parent_tgid: u32,
        /// Real uid of the child.
        uid: u32,
        /// Real gid of the child.
        gid: u32,
        /// Kernel command name of the child.
        comm: String,
    },
    /// A process replaced its program (`sched_process_exec`).
    Exec {
        /// The process.
        tgid: u32,
        /// Real uid after exec.
        uid: u32,
        /// Real gid after exec.
        gid: u32,
        /// Kernel command name after exec.
        comm: String,
        /// The executed file, as passed to execve.
        filename: String,
        /// The new command line.
        argv: Vec<String>,
    },
    /// A whole process (thread group) exited.
    Exit {
        /// The process.
        tgid: u32,
    },
}

/// Who each process is: a bounded table fed by process events and seeded from /proc.
///
/// Never holds more than `capacity` entries. Exited processes stay (marked `exited`) so a
/// connection accepted after its process ended can still be attributed; when the table is
/// full, exited entries go first (earliest exit first), then the oldest inserted. Pid reuse is
/// handled by replacing an entry on `Fork`, and by comparing start times with /proc on lookup.
///
/// Methods that fall back to /proc do small blocking reads of procfs (and the passwd file).
pub struct ProcessTable {
    proc_root: PathBuf,
    passwd: PathBuf,
    store: Store,
    env: EnvCache,
    users: UserCache,
}

impl fmt::Debug for ProcessTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessTable")
            .field("proc_root", &self.proc_root)
            .field("passwd", &self.passwd)
            .field("capacity", &self.store.capacity())
            .field("len", &self.store.len())
            .finish_non_exhaustive()
    }
}

impl ProcessTable {
    /// An empty table reading processes under `proc_root` (normally `/proc`) and user names
    /// from `/etc/passwd`. A `capacity` of 0 is treated as 1.
    pub fn new(proc_root: PathBuf, capacity: usize) -> Self {
        Self {
            proc_root,
            passwd: PathBuf::from(DEFAULT_PASSWD),
            store: Store::new(capacity),
            env: EnvCache::new(capacity),
            users: UserCache::default(),
        }
    }

    /// Reads user names from `passwd` instead of `/etc/passwd`.
    pub fn with_passwd_path(mut self, passwd: PathBuf) -> Self {
        self.passwd = passwd;
        self
    }

    /// Inserts every process found under the proc root (each numeric directory), replacing
    /// entries for the same tgid. Returns how many were read; beyond `capacity` the oldest are
    /// evicted again. Processes that vanish or cannot be parsed meanwhile are skipped.
    ///
    /// # Errors
    /// [`IdentityError::Read`] when the proc root itself cannot be listed.
    pub fn seed_from_proc(&mut self) -> Result<usize, IdentityError> {
        let dir =
            fs::read_dir(&self.proc_root).map_err(|e| IdentityError::read(&self.proc_root, e))?;
        let mut tgids: Vec<u32> = dir
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
            .collect();
        tgids.sort_unstable();
        let mut seeded = 0;
        for tgid in tgids {
            match procfs::read_process(&self.proc_root, tgid) {
                Ok(info) => {
                    self.store.insert(info);
                    seeded += 1;
                }
                Err(e) if e.is_process_gone() => {}
                Err(e) => tracing::debug!(tgid, error = %e, "process skipped while seeding"),
            }
        }
        Ok(seeded)
    }

    /// The passwd name of `uid`; `None` when it has none or passwd is unreadable.
    pub fn user_name(&mut self, uid: u32) -> Option<String> {
        self.users.name(&self.passwd, uid)
    }

    /// Applies one process event.
    ///
    /// `Fork` inserts the child (replacing any entry with that tgid: the pid was reused),
    /// inheriting exe and argv from the parent entry if known; a fork whose child and parent
    /// tgid are equal, or whose child /proc shows another thread group, is a thread and is
    /// ignored (the kernel's fork tracepoint reports new threads too). `Exec` updates exe, argv, comm, uid and gid
    /// and keeps ppid; for an unknown (or exited) tgid it inserts a new entry whose ppid comes
    /// from /proc, or 0 if unreadable. `Exit` marks the entry exited; unknown tgids are ignored.
    pub fn apply(&mut self, ev: ProcessEvent) {
        match ev {
            ProcessEvent::Fork {
                child_tgid,
                parent_tgid,
                uid,
                gid,
                comm,
            } => {
                if child_tgid == parent_tgid
                    || procfs::read_tgid(&self.proc_root, child_tgid)
                        .is_some_and(|t| t != child_tgid)
                {
                    return;
                }
                self.env.forget(child_tgid);
                let (exe, argv) = self
                    .store
                    .get(parent_tgid)
                    .map(|parent| (parent.exe.clone(), parent.argv.clone()))
                    .unwrap_or_default();
                self.store.insert(ProcessInfo {
                    tgid: child_tgid,
                    ppid: parent_tgid,
                    uid,
                    gid,
                    comm,
                    exe,
                    argv,
                    start_ticks: None,
                    exited: false,
                    execs: Some(0),
                });
            }
            ProcessEvent::Exec {
                tgid,
                uid,
                gid,
                comm,
                filename,
                argv,
            } => {
                let argv = cap_argv(argv);
                self.env.forget(tgid);
                if let Some(info) = self.store.get_mut(tgid).filter(|p| !p.exited) {
                    info.uid = uid;
                    info.gid = gid;
                    info.comm = comm;
                    info.exe = Some(filename);
                    info.argv = argv;
                    info.execs = info.execs.map(|n| n.saturating_add(1));
                    return;
                }
                // Unknown, or exec under a pid we saw exit: its fork was missed.
                let stat = procfs::read_stat(&self.proc_root, tgid).ok();
                self.store.insert(ProcessInfo {
                    tgid,
                    ppid: stat.as_ref().map_or(0, |s| s.ppid),
                    uid,
                    gid,
                    comm,
                    exe: Some(filename),
                    argv,
                    start_ticks: stat.map(|s| s.start_ticks),
                    exited: false,
                    execs: None,
                });
            }
            ProcessEvent::Exit { tgid } => self.store.mark_exited(tgid),
        }
    }

    /// The table's entry for `tgid`, without touching /proc; `None` when not in the table.
    pub fn get(&self, tgid: u32) -> Option<&ProcessInfo> {
        self.store.get(tgid)
    }

    /// The process `tgid`: from the table when it is still the same process, else read from
    /// /proc and inserted. A table entry is replaced when /proc shows a process with another
    /// start time, or a live process under a pid the table saw exit (the pid was reused while
    /// events were missed). An entry whose /proc directory is gone is returned as is.
    /// `None` when the table does not know `tgid` and /proc has no readable process for it.
    pub fn lookup_or_read(&mut self, tgid: u32) -> Option<ProcessInfo> {
        let live = procfs::read_stat(&self.proc_root, tgid).ok();
        if let Some(info) = self.store.get_mut(tgid) {
            let same_process = match (&live, info.start_ticks) {
                (None, _) => true,
                (Some(stat), Some(ticks)) => stat.start_ticks == ticks,
                (Some(_), None) => !info.exited,
            };
            if same_process {
                if let Some(stat) = &live {
                    // Pin the start time so a later reuse of this pid is noticed.
                    info.start_ticks = Some(stat.start_ticks);
                    if info.exe.is_none() {
                        // Forked from a parent we never saw: /proc fills the gap.
                        info.exe = procfs::read_exe(&self.proc_root, tgid);
                        if info.argv.is_empty() {
                            info.argv = procfs::read_argv(&self.proc_root, tgid);
                        }
                    }
                }
                return Some(info.clone());
            }
        }
        match procfs::read_process(&self.proc_root, tgid) {
            Ok(info) => {
                // Another process than any we knew under this pid.
                self.env.forget(tgid);
                self.store.insert(info.clone());
                Some(info)
            }
            Err(e) => {
                if !e.is_process_gone() {
                    tracing::debug!(tgid, error = %e, "process not readable");
                }
                None
            }
        }
    }

    /// Ancestors of `tgid`, parent first, ending at tgid 1, at a process without a parent, or
    /// after `max_depth` entries. Unknown ancestors are read from /proc; one that cannot be
    /// found at all ends the chain as an entry with only its tgid. Empty when `tgid` itself is
    /// unknown and gone.
    pub fn ancestry(&mut self, tgid: u32, max_depth: usize) -> Vec<Ancestor> {
        match self.lookup_or_read(tgid) {
            Some(info) => self
                .walk_up(&info, max_depth)
                .into_iter()
                .map(|(a, ..)| a)
                .collect(),
            None => Vec::new(),
        }
    }

    /// Everything known about the process `tgid` (thread `pid`): table entry or /proc, ancestry
    /// up to `max_depth`, cgroup path, user name and CI context (see [`ProcessIdentity`] for
    /// what each field holds when unknown). Files under `/proc/<tgid>` are only read while the
    /// process is alive, so an exited process never borrows the cgroup or environment of a
    /// new process that reused its pid.
    pub fn identity(
        &mut self,
        tgid: u32,
        pid: u32,
        max_depth: usize,
        job: &JobRootSpec,
    ) -> ProcessIdentity {
        self.attribute(tgid, pid, max_depth, job).0
    }

    /// [`ProcessTable::identity`], and the job token found in the job root's environment
    /// under one of `job`'s token variables (`None` without a job root or such a variable).
    /// The CI context and the token come only from the job root: the child of the outermost
    /// trusted runner on the ancestry, alive, and exec'd at most once since that runner
    /// started it (see `job::find_job_root`).
    pub fn attribute(
        &mut self,
        tgid: u32,
        pid: u32,
        max_depth: usize,
        job: &JobRootSpec,
    ) -> (ProcessIdentity, Option<EnvToken>) {
        let Some(info) = self.lookup_or_read(tgid) else {
            return (ProcessIdentity::unknown(tgid, pid), None);
        };
        let mut walk = self.walk_up(&info, max_depth.max(RUNNER_SEARCH_DEPTH));
        let alive = !info.exited;
        let cgroup = if alive {
            procfs::read_cgroup(&self.proc_root, tgid)
        } else {
            None
        };
        let (exe_file, exe_trust) = self.exe_file(tgid, alive, info.exe.as_deref());
        for (a, alive, _) in &mut walk {
            (a.exe_file, a.exe_trust) = self.exe_file(a.tgid, *alive, a.exe.as_deref());
        }
        let chain: Vec<Link> = std::iter::once(Link {
            tgid,
            exe: info.exe.clone(),
            trust: exe_trust.clone(),
            alive,
            execs: info.execs,
        })
        .chain(walk.iter().map(|(a, alive, execs)| Link {
            tgid: a.tgid,
            exe: a.exe.clone(),
            trust: a.exe_trust.clone(),
            alive: *alive,
            execs: *execs,
        }))
        .collect();
        let (ci, ci_source, token) = self.job_context(job, &chain);
        walk.truncate(max_depth);
        let user = self.users.name(&self.passwd, info.uid);
        let identity = ProcessIdentity {
            pid,
            tgid,
            ppid: info.ppid,
            uid: info.uid,
            user,
            gid: info.gid,
            comm: info.comm,
            exe: info.exe,
            exe_file,
            exe_trust,
            argv: info.argv,
            ancestry: walk.into_iter().map(|(a, ..)| a).collect(),
            cgroup,
            ci,
            ci_source,
        };
        (identity, token)
    }

    /// The file process `tgid` runs and whether `exe` names it (`exefile.rs`); unknown once
    /// the process has exited (its /proc entry may be another process's by now).
    fn exe_file(&self, tgid: u32, alive: bool, exe: Option<&str>) -> (Option<ExeFile>, ExeTrust) {
        if !alive {
            let reason = format!("pid {tgid} has exited: the file it ran cannot be checked");
            return (None, ExeTrust::Unknown { reason });
        }
        exefile::inspect(&self.proc_root, tgid, exe)
    }

    /// The CI variables, their source and the job token of a chain.
    fn job_context(
        &mut self,
        job: &JobRootSpec,
        chain: &[Link],
    ) -> (BTreeMap<String, String>, CiSource, Option<EnvToken>) {
        let at = match find_job_root(job, chain) {
            Ok(at) => at,
            Err(why) => return (BTreeMap::new(), why, None),
        };
        let (Some(root), Some(runner)) = (chain.get(at), chain.get(at + 1)) else {
            return (BTreeMap::new(), CiSource::default(), None);
        };
        let Some(vars) = self.env.vars(&self.proc_root, root.tgid) else {
            let reason = format!(
                "the job root's (pid {}) environment cannot be read",
                root.tgid
            );
            return (BTreeMap::new(), CiSource::None { reason }, None);
        };
        let token = ci::read_token(&self.proc_root, root.tgid, job.token_vars())
            .ok()
            .flatten();
        let source = CiSource::JobRoot {
            runner_tgid: runner.tgid,
            runner_exe: runner.exe.clone().unwrap_or_default(),
            job_root_tgid: root.tgid,
            job_root_exe: root.exe.clone(),
        };
        (vars, source, token)
    }

    /// Number of entries, exited ones included.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// True when the table holds no entry.
    pub fn is_empty(&self) -> bool {
        self.store.len() == 0
    }

    /// The most entries the table keeps.
    pub fn capacity(&self) -> usize {
        self.store.capacity()
    }

    /// Ancestors of `info`, each with whether it is alive (so its /proc files are its own)
    /// and how many times it exec'd since its fork was seen.
    fn walk_up(
        &mut self,
        info: &ProcessInfo,
        max_depth: usize,
    ) -> Vec<(Ancestor, bool, Option<u32>)> {
        let mut out = Vec::new();
        // Guards against ppid cycles, which pid reuse with missed events can fake.
        let mut seen = HashSet::from([info.tgid]);
        let mut next = info.ppid;
        while out.len() < max_depth && next != 0 && seen.insert(next) {
            let Some(parent) = self.lookup_or_read(next) else {
                let unknown = Ancestor {
                    tgid: next,
                    exe: None,
                    argv: Vec::new(),
                    exe_file: None,
                    exe_trust: ExeTrust::default(),
                };
                out.push((unknown, false, None));
                break;
            };
            out.push((Ancestor::from(&parent), !parent.exited, parent.execs));
            if parent.tgid == 1 {
                break;
            }
            next = parent.ppid;
        }
        out
    }

    #[cfg(test)]
    pub(crate) fn queue_lens(&self) -> (usize, usize) {
        self.store.queue_lens()
    }
}
