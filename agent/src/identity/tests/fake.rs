//! A fake `/proc` tree in a fresh temporary directory, removed on drop.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT: AtomicU64 = AtomicU64::new(0);

pub(crate) struct FakeProc {
    root: PathBuf,
}

impl FakeProc {
    pub(crate) fn new() -> io::Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let root =
            std::env::temp_dir().join(format!("interlock-identity-{}-{n}", std::process::id()));
        if root.exists() {
            fs::remove_dir_all(&root)?;
        }
        fs::create_dir_all(&root)?;
        Ok(Self { root })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// A process with defaults: comm `p<tgid>`, uid/gid 1000, start time `tgid * 10`, exe
    /// `/usr/bin/p<tgid>`, argv `p<tgid> --run`, cgroup `/ci/p<tgid>`, empty environment.
    pub(crate) fn process(&self, tgid: u32, ppid: u32) -> io::Result<FakeProcess> {
        let dir = self.root.join(tgid.to_string());
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        let p = FakeProcess { dir, tgid };
        let comm = format!("p{tgid}");
        p.stat(&comm, ppid, u64::from(tgid) * 10)?
            .ids(1000, 1000)?
            .exe(&format!("/usr/bin/{comm}"))?
            .cmdline(&[&comm, "--run"])?
            .cgroup(&format!("0::/ci/{comm}\n"))?
            .environ(b"")?;
        Ok(p)
    }

    /// Makes a process disappear, as if it exited and was reaped.
    pub(crate) fn remove(&self, tgid: u32) -> io::Result<()> {
        fs::remove_dir_all(self.root.join(tgid.to_string()))
    }

    /// Writes a file at the root (e.g. a passwd file) and returns its path.
    pub(crate) fn file(&self, name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
        let path = self.root.join(name);
        fs::write(&path, bytes)?;
        Ok(path)
    }
}

impl Drop for FakeProc {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

pub(crate) struct FakeProcess {
    dir: PathBuf,
    tgid: u32,
}

impl FakeProcess {
    pub(crate) fn stat(&self, comm: &str, ppid: u32, start_ticks: u64) -> io::Result<&Self> {
        let line = format!(
            "{} ({comm}) S {ppid} 1 1 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 {start_ticks} 0 0\n",
            self.tgid
        );
        fs::write(self.dir.join("stat"), line)?;
        Ok(self)
    }

    pub(crate) fn ids(&self, uid: u32, gid: u32) -> io::Result<&Self> {
        let status = format!(
            "Name:\tx\nTgid:\t{0}\nPid:\t{0}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n\
             Gid:\t{gid}\t{gid}\t{gid}\t{gid}\nGroups:\t\n",
            self.tgid
        );
        fs::write(self.dir.join("status"), status)?;
        Ok(self)
    }

    pub(crate) fn exe(&self, target: &str) -> io::Result<&Self> {
        let link = self.dir.join("exe");
        if link.symlink_metadata().is_ok() {
            fs::remove_file(&link)?;
        }
        symlink(target, link)?;
        Ok(self)
    }

    pub(crate) fn cmdline(&self, argv: &[&str]) -> io::Result<&Self> {
        let mut bytes = Vec::new();
        for arg in argv {
            bytes.extend_from_slice(arg.as_bytes());
            bytes.push(0);
        }
        fs::write(self.dir.join("cmdline"), bytes)?;
        Ok(self)
    }

    pub(crate) fn cgroup(&self, text: &str) -> io::Result<&Self> {
        fs::write(self.dir.join("cgroup"), text)?;
        Ok(self)
    }

    pub(crate) fn environ(&self, bytes: &[u8]) -> io::Result<&Self> {
        fs::write(self.dir.join("environ"), bytes)?;
        Ok(self)
    }
}
