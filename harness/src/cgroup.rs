//! Scope cgroups for tests, and running the test client inside one.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{cgroup2_mount, unique};

/// A fresh cgroup under the cgroup v2 root, removed on drop.
pub struct TestCgroup {
    path: PathBuf,
    /// Relative to the mount, as `interlock run --scope` takes it.
    scope: String,
}

impl TestCgroup {
    pub fn new(name: &str) -> Result<TestCgroup> {
        let mount = cgroup2_mount().context("no cgroup v2 mount")?;
        let scope = unique(&format!("interlock-test-{name}"));
        let path = mount.join(&scope);
        std::fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        Ok(TestCgroup {
            path,
            scope: format!("/{scope}"),
        })
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Freezes (or thaws) every process in this cgroup with the cgroup v2
    /// freezer and waits (up to 10 s) until the kernel reports it done.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        let want = if frozen { "1" } else { "0" };
        std::fs::write(self.path.join("cgroup.freeze"), want)
            .with_context(|| format!("write cgroup.freeze in {}", self.path.display()))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let line = format!("frozen {want}");
        while std::time::Instant::now() < deadline {
            let events = std::fs::read_to_string(self.path.join("cgroup.events"))?;
            if events.lines().any(|l| l == line) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!("{} did not reach `{line}` in 10 s", self.path.display())
    }

    /// A command that runs `program args...` inside this cgroup.
    pub fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut c = Command::new("/bin/sh");
        c.arg("-c")
            .arg("echo $$ > \"$0\" && exec \"$@\"")
            .arg(self.path.join("cgroup.procs"))
            .arg(program)
            .args(args);
        c
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Processes may take a moment to leave after exiting.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The test client binary, built by cargo beside the test executables
/// (`target/<profile>/testclient`; tests run from `target/<profile>/deps/`).
pub fn testclient() -> PathBuf {
    test_bin("testclient")
}

/// A helper binary of this crate (`src/bin/<name>.rs`), built by cargo
/// beside the test executables.
pub fn test_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    profile_dir.join(name)
}

/// Runs the test client inside `cg` and returns its output line.
pub fn client_in(cg: &TestCgroup, args: &[&str], envs: &[(&str, &str)]) -> Result<String> {
    let out = cg
        .command(&testclient(), args)
        .envs(envs.iter().copied())
        .output()?;
    output_line(out)
}

/// Runs the test client outside any test cgroup.
pub fn client_outside(args: &[&str]) -> Result<String> {
    output_line(Command::new(testclient()).args(args).output()?)
}

fn output_line(out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "testclient failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
