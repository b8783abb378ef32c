//! Caches that keep repeated connections from one job cheap: each process's
//! own allow-listed CI variables, and uid -> user name. A CI job opens many
//! connections under the same ancestors; without these, every connect would
//! re-read every ancestor's environment and the passwd file.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    time::SystemTime,
};

use super::{ci, users};

/// Per-process allow-listed CI variables. An entry is dropped when its pid
/// forks a new process or execs (new environment) and when the table
/// notices pid reuse; the whole cache is cleared when it reaches capacity.
pub(super) struct EnvCache {
    vars: HashMap<u32, BTreeMap<String, String>>,
    capacity: usize,
}

impl EnvCache {
    pub(super) fn new(capacity: usize) -> EnvCache {
        EnvCache {
            vars: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// `tgid` is another process or has a new environment now.
    pub(super) fn forget(&mut self, tgid: u32) {
        self.vars.remove(&tgid);
    }

    /// The allow-listed CI variables of the live process `tgid`, read once and cached;
    /// `None` when its environment cannot be read (then nothing is cached).
    pub(super) fn vars(&mut self, proc_root: &Path, tgid: u32) -> Option<BTreeMap<String, String>> {
        if let Some(vars) = self.vars.get(&tgid) {
            return Some(vars.clone());
        }
        let vars = ci::read_process_vars(proc_root, tgid).ok()?;
        if self.vars.len() >= self.capacity {
            self.vars.clear();
        }
        self.vars.insert(tgid, vars.clone());
        Some(vars)
    }
}

/// uid -> name, valid while the passwd file's modification time is unchanged.
#[derive(Default)]
pub(super) struct UserCache {
    names: HashMap<u32, Option<String>>,
    stamp: Option<SystemTime>,
}

impl UserCache {
    /// The name of `uid` in `passwd`; `None` when it has none or the file is unreadable.
    pub(super) fn name(&mut self, passwd: &Path, uid: u32) -> Option<String> {
        let stamp = std::fs::metadata(passwd).and_then(|m| m.modified()).ok();
        if stamp.is_none() || stamp != self.stamp {
            self.names.clear();
            self.stamp = stamp;
        }
        if let Some(name) = self.names.get(&uid) {
            return name.clone();
        }
        let name = users::user_name(passwd, uid).unwrap_or_else(|e| {
            tracing::debug!(error = %e, "passwd not readable");
            None
        });
        // Users come and go rarely; an unreadable file is retried next time.
        if stamp.is_some() {
            self.names.insert(uid, name.clone());
        }
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> crate::test_dir::TestDir {
        crate::test_dir::TestDir::new(&format!("interlock-cache-{name}"))
    }

    #[test]
    fn env_cache_reads_once_and_forgets_on_request() {
        let root = temp_dir("env");
        std::fs::create_dir_all(root.join("10")).unwrap();
        std::fs::write(root.join("10/environ"), b"GITHUB_RUN_ID=1\0SECRET=x\0").unwrap();
        let mut c = EnvCache::new(8);
        let ctx = c.vars(&root, 10).unwrap();
        assert_eq!(ctx.get("GITHUB_RUN_ID").map(String::as_str), Some("1"));
        assert!(!ctx.contains_key("SECRET"));

        // Cached: a changed file is not re-read until the pid is forgotten.
        std::fs::write(root.join("10/environ"), b"GITHUB_RUN_ID=2\0").unwrap();
        let run_id = |c: &mut EnvCache| c.vars(&root, 10).unwrap().get("GITHUB_RUN_ID").cloned();
        assert_eq!(run_id(&mut c).as_deref(), Some("1"));
        c.forget(10);
        assert_eq!(run_id(&mut c).as_deref(), Some("2"));
        // Unreadable environments are not cached.
        assert!(c.vars(&root, 99).is_none());
        assert!(!c.vars.contains_key(&99));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn env_cache_stays_bounded() {
        let root = temp_dir("bound");
        for pid in 0..10u32 {
            std::fs::create_dir_all(root.join(pid.to_string())).unwrap();
            std::fs::write(root.join(format!("{pid}/environ")), b"CI_JOB_ID=1\0").unwrap();
        }
        let mut c = EnvCache::new(4);
        for pid in 0..10u32 {
            c.vars(&root, pid);
            assert!(c.vars.len() <= 4);
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn user_cache_follows_passwd_changes() {
        let root = temp_dir("passwd");
        let passwd = root.join("passwd");
        std::fs::write(&passwd, "root:x:0:0::/root:/bin/sh\n").unwrap();
        let mut c = UserCache::default();
        assert_eq!(c.name(&passwd, 0).as_deref(), Some("root"));
        assert_eq!(c.name(&passwd, 1000), None);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(
            &passwd,
            "root:x:0:0::/root:/bin/sh\nci:x:1000:1000::/home/ci:/bin/sh\n",
        )
        .unwrap();
        // A new mtime invalidates (the sleep makes it differ on coarse clocks too).
        let t = SystemTime::now();
        std::fs::File::options()
            .write(true)
            .open(&passwd)
            .unwrap()
            .set_modified(t)
            .unwrap();
        assert_eq!(c.name(&passwd, 1000).as_deref(), Some("ci"));
        assert_eq!(c.name(&root.join("missing"), 0), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
