//! The real daemon under test or bench: start, restart, signal, read its events.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::{TestCgroup, interlock_bin, spawn_tied, tcp_policy, unique};

/// The directory `cargo xtask test` gives the tests for their records.
pub const RECORDS_ENV: &str = "INTERLOCK_TEST_RECORDS";

/// The running test's name: nextest says it; libtest names the thread.
fn test_name() -> Option<String> {
    std::env::var("NEXTEST_TEST_NAME").ok().or_else(|| {
        std::thread::current()
            .name()
            .filter(|n| *n != "main" && !n.starts_with("tokio"))
            .map(str::to_string)
    })
}

/// Options for a daemon under test.
#[derive(Clone)]
pub struct DaemonSpec {
    pub policy: String,
    pub scopes: Vec<String>,
    pub extra_args: Vec<String>,
}

impl DaemonSpec {
    /// One tcp target `svc` over `127.0.0.2:<port>` for each port, scoped to `cg`.
    pub fn tcp(cg: &TestCgroup, ports: &[u16], extra_args: &[&str]) -> DaemonSpec {
        let endpoints: Vec<(&str, u16)> = ports.iter().map(|p| ("127.0.0.2", *p)).collect();
        DaemonSpec {
            policy: tcp_policy("svc", &endpoints),
            scopes: vec![cg.scope().into()],
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// A daemon with `policy` (YAML text), scoped to `cg`.
    pub fn with_policy(cg: &TestCgroup, policy: &str, extra_args: &[&str]) -> DaemonSpec {
        DaemonSpec {
            policy: policy.to_string(),
            scopes: vec![cg.scope().into()],
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// What a CLI invocation printed and how it exited.
#[derive(Debug)]
pub struct CliOutput {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// The real `interlock run`, as a child process with its own instance name,
/// pins and state directory. Killed and detached on drop.
pub struct Daemon {
    pub instance: String,
    pub state_dir: PathBuf,
    spec: DaemonSpec,
    dir: PathBuf,
    child: Option<Child>,
    /// The `interlock` binary; [`interlock_bin`] unless [`Daemon::with_binary`] says.
    bin: Option<PathBuf>,
}

impl Daemon {
    pub fn start(spec: DaemonSpec) -> Result<Daemon> {
        let mut d = Daemon::prepare(spec)?;
        d.spawn()?;
        Ok(d)
    }

    /// A daemon with its own instance name, directory and policy file, not
    /// started yet (so a test can prepare its state directory first); start
    /// it with [`Daemon::spawn`].
    pub fn prepare(spec: DaemonSpec) -> Result<Daemon> {
        let instance = unique("t");
        let dir = std::env::temp_dir().join(format!("interlock-{instance}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("policy.yaml"), &spec.policy)?;
        Ok(Daemon {
            state_dir: dir.join("state"),
            instance,
            spec,
            dir,
            child: None,
            bin: None,
        })
    }

    /// Runs `bin` instead of [`interlock_bin`] (the bench runs the release build).
    pub fn with_binary(mut self, bin: &Path) -> Daemon {
        self.bin = Some(bin.to_path_buf());
        self
    }

    /// The `interlock` binary this daemon runs (and its CLI calls use).
    pub fn binary(&self) -> Result<PathBuf> {
        match &self.bin {
            Some(bin) => Ok(bin.clone()),
            None => interlock_bin(),
        }
    }

    /// The daemon's own directory (policy, state, log), removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The daemon's control socket.
    pub fn socket(&self) -> PathBuf {
        self.state_dir.join("control.sock")
    }

    /// The policy file the daemon was started with.
    pub fn policy_path(&self) -> PathBuf {
        self.dir.join("policy.yaml")
    }

    /// Replaces the policy file's content (atomically, as editors and
    /// config management do: write beside, rename over).
    pub fn write_policy(&self, text: &str) -> Result<()> {
        let tmp = self.dir.join("policy.yaml.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(tmp, self.policy_path())?;
        Ok(())
    }

    /// Runs `interlock ARGS --socket <this daemon's>` as the local `user`
    /// (with that user's groups), inside `cgroup` if given. The binary is
    /// copied where every user may execute it.
    pub fn cli_as(
        &self,
        user: &str,
        cgroup: Option<&TestCgroup>,
        args: &[&str],
    ) -> Result<CliOutput> {
        let bin = self.dir.join("interlock-cli");
        if !bin.exists() {
            std::fs::copy(self.binary()?, &bin)?;
        }
        let gid = std::fs::read_to_string("/etc/passwd")?
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.first() == Some(&user)).then(|| f.get(3).map(|g| g.to_string()))?
            })
            .with_context(|| format!("no user {user} in /etc/passwd"))?;
        let mut full: Vec<String> = vec![
            format!("--reuid={user}"),
            format!("--regid={gid}"),
            "--init-groups".into(),
            bin.display().to_string(),
        ];
        full.extend(args.iter().map(|s| s.to_string()));
        full.push("--socket".into());
        full.push(self.socket().display().to_string());
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        let setpriv = Path::new("/usr/bin/setpriv");
        let mut cmd = match cgroup {
            Some(cg) => cg.command(setpriv, &refs),
            None => {
                let mut c = Command::new(setpriv);
                c.args(&refs);
                c
            }
        };
        let out = cmd.output().context("run setpriv interlock")?;
        Ok(CliOutput {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Sends `signal` to the daemon without waiting.
    pub fn signal(&self, signal: i32) -> Result<()> {
        let pid = self.pid().context("daemon not running")?;
        // SAFETY: kill has no memory preconditions.
        if unsafe { libc::kill(pid as i32, signal) } != 0 {
            bail!("kill: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Changes the scopes used by the next [`Daemon::spawn`].
    pub fn set_scopes(&mut self, scopes: Vec<String>) {
        self.spec.scopes = scopes;
    }

    /// Starts the daemon process (again) and waits until it intercepts.
    pub fn spawn(&mut self) -> Result<()> {
        let _ = std::fs::remove_file(self.state_dir.join("runtime.json"));
        let mut cmd = self.command_in(None);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))?;
        cmd.stdout(Stdio::null()).stderr(log);
        self.child = Some(spawn_tied(cmd, libc::SIGKILL).context("spawn interlock")?);
        self.record();
        self.wait_ready()
    }

    /// The `interlock run` command for this daemon; with `cgroup`, it runs inside it.
    pub fn command_in(&self, cgroup: Option<&TestCgroup>) -> Command {
        let bin = self.binary().unwrap_or_default();
        let mut args: Vec<String> = vec![
            "run".into(),
            "--policy".into(),
            self.dir.join("policy.yaml").display().to_string(),
            "--instance".into(),
            self.instance.clone(),
            "--state-dir".into(),
            self.state_dir.display().to_string(),
        ];
        for s in &self.spec.scopes {
            args.push("--scope".into());
            args.push(s.clone());
        }
        args.extend(self.spec.extra_args.iter().cloned());
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = match cgroup {
            Some(cg) => cg.command(&bin, &arg_refs),
            None => {
                let mut c = Command::new(&bin);
                c.args(&arg_refs);
                c
            }
        };
        cmd.env(
            "RUST_LOG",
            std::env::var("INTERLOCK_TEST_LOG").unwrap_or_else(|_| "info".into()),
        );
        cmd
    }

    /// Replaces the running child with one started by `cmd` (e.g. inside a cgroup).
    pub fn spawn_with(&mut self, mut cmd: Command) -> Result<()> {
        let _ = std::fs::remove_file(self.state_dir.join("runtime.json"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))?;
        cmd.stdout(Stdio::null()).stderr(log);
        self.child = Some(spawn_tied(cmd, libc::SIGKILL)?);
        self.record();
        self.wait_ready()
    }

    /// Notes, for `cargo xtask test`, which test started this daemon and
    /// where its log is: a test killed by its time limit runs no `Drop`,
    /// and the runner then prints the log and detaches the instance.
    /// Only when `INTERLOCK_TEST_RECORDS` names a directory.
    fn record(&self) {
        let Some(dir) = std::env::var_os(RECORDS_ENV) else {
            return;
        };
        let line = serde_json::json!({
            "binary": std::env::var("NEXTEST_BINARY_ID").ok(),
            "test": test_name(),
            "pid": self.pid(),
            "instance": self.instance,
            "log": self.dir.join("daemon.log"),
            "cgroup_scopes": self.spec.scopes,
        });
        let path = Path::new(&dir).join("daemons.jsonl");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes()));
        if let Err(e) = written {
            eprintln!("cannot record the daemon in {}: {e}", path.display());
        }
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.state_dir.join("runtime.json").exists() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                bail!("interlock exited early ({status}); log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "interlock did not become ready in 30 s; log:\n{}",
            self.log()
        )
    }

    /// The daemon's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// The process id of the running daemon.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The listener address for `protocol` and family (`v4`: 127.0.0.1, else ::1).
    pub fn listener(&self, protocol: &str, v4: bool) -> Result<SocketAddr> {
        let rt: Value =
            serde_json::from_slice(&std::fs::read(self.state_dir.join("runtime.json"))?)?;
        let ls = rt["listeners"].as_array().context("no listeners")?;
        for l in ls {
            let a: SocketAddr = l["address"].as_str().context("address")?.parse()?;
            if l["protocol"] == protocol && a.is_ipv4() == v4 {
                return Ok(a);
            }
        }
        bail!("no {protocol} listener")
    }

    /// Sends `signal` and waits for exit (with a bound).
    pub fn signal_and_wait(&mut self, signal: i32) -> Result<std::process::ExitStatus> {
        let child = self.child.as_mut().context("not running")?;
        // SAFETY: kill with a pid we own and a valid signal number.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = child.try_wait()? {
                self.child = None;
                return Ok(st);
            }
            if Instant::now() > deadline {
                bail!("daemon did not exit after signal {signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every file under the daemon's directory (state dir: audit segments, events, spools,
    /// recordings, keys; its log; its policy) whose bytes contain `needle`. The invariant "no
    /// secret is written anywhere" is checked with this rather than with one file.
    pub fn files_containing(&self, needle: &str) -> Vec<PathBuf> {
        fn walk(dir: &Path, needle: &[u8], found: &mut Vec<PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
                if path.is_dir() {
                    walk(&path, needle, found);
                } else if std::fs::read(&path)
                    .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
                {
                    found.push(path);
                }
            }
        }
        let mut found = Vec::new();
        walk(&self.dir, needle.as_bytes(), &mut found);
        found
    }

    /// The JSONL sink's text, rotated files first (oldest to newest).
    pub fn events_text(&self) -> String {
        let base = self.state_dir.join("events.jsonl");
        let mut rotated: Vec<(u32, PathBuf)> = std::fs::read_dir(&self.state_dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter_map(|p| {
                        let n = p
                            .file_name()?
                            .to_str()?
                            .strip_prefix("events.jsonl.")?
                            .parse()
                            .ok()?;
                        Some((n, p))
                    })
                    .collect()
            })
            .unwrap_or_default();
        // events.jsonl.1 is the newest rotated file.
        rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
        let mut text = String::new();
        for (_, p) in rotated {
            text.push_str(&std::fs::read_to_string(p).unwrap_or_default());
        }
        text.push_str(&std::fs::read_to_string(base).unwrap_or_default());
        text
    }

    /// Every event logged so far.
    pub fn events(&self) -> Vec<Value> {
        let text = self.events_text();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Every event in the audit segments (the record of truth; checkpoints
    /// left out), in log order, with their chain fields.
    pub fn audit_events(&self) -> Vec<Value> {
        let dir = self.state_dir.join("audit");
        let mut segs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("segment-"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        segs.sort();
        segs.iter()
            .flat_map(|p| {
                std::fs::read_to_string(p)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .filter(|v| v["type"] != "checkpoint")
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Runs `interlock ARGS` as root (the daemon's own user) and returns
    /// what it printed.
    pub fn cli(&self, args: &[&str]) -> Result<CliOutput> {
        let out = Command::new(self.binary()?).args(args).output()?;
        Ok(CliOutput {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Counts the events of one type without parsing every line, which
    /// matters for tests that produce hundreds of thousands of them.
    pub fn count_events(&self, ty: &str) -> u64 {
        let needle = format!("\"type\":\"{ty}\"");
        self.events_text()
            .lines()
            .filter(|l| l.contains(&needle))
            .count() as u64
    }

    /// Waits (up to 10 s) until `pred` holds for the events, returns them.
    pub fn wait_events(&self, what: &str, pred: impl Fn(&[Value]) -> bool) -> Result<Vec<Value>> {
        self.wait_events_for(Duration::from_secs(10), what, pred)
    }

    /// As [`Daemon::wait_events`], up to 60 s, for steps that start many processes.
    pub fn wait_events_long(
        &self,
        what: &str,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Result<Vec<Value>> {
        self.wait_events_for(Duration::from_secs(60), what, pred)
    }

    fn wait_events_for(
        &self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Result<Vec<Value>> {
        let deadline = Instant::now() + limit;
        loop {
            let ev = self.events();
            if pred(&ev) {
                return Ok(ev);
            }
            if Instant::now() > deadline {
                // Only the tail: a long test has hundreds of thousands of events.
                let tail = &ev[ev.len().saturating_sub(20)..];
                let log = self.log();
                let from = (log.len().saturating_sub(8000)..log.len())
                    .find(|i| log.is_char_boundary(*i))
                    .unwrap_or(log.len());
                let log_tail = &log[from..];
                bail!(
                    "timed out waiting for {what}; {} events, the last {}: {tail:#?}\nlog (end):\n{log_tail}",
                    ev.len(),
                    tail.len()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `interlock detach` for this instance and returns its stdout.
    pub fn detach(&self) -> Result<String> {
        let out = Command::new(self.binary()?)
            .args(["detach", "--instance", &self.instance, "--pin-root"])
            .arg(self.pin_root())
            .output()?;
        if !out.status.success() {
            bail!("detach failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The directory of every instance's pins (`--pin-root`, if the spec gives one).
    pub fn pin_root(&self) -> PathBuf {
        let args = &self.spec.extra_args;
        args.iter()
            .position(|a| a == "--pin-root")
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/sys/fs/bpf/interlock"))
    }

    /// The pin directory of this instance.
    pub fn pin_dir(&self) -> PathBuf {
        self.pin_root().join(&self.instance)
    }

    /// Number of entries in one of this instance's pinned maps (via bpftool).
    pub fn map_entries(&self, map: &str) -> Result<usize> {
        let path = self.pin_dir().join("maps").join(map);
        let out = Command::new("bpftool")
            .args(["--json", "map", "dump", "pinned"])
            .arg(&path)
            .output()?;
        if !out.status.success() {
            bail!(
                "bpftool map dump {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: Value = serde_json::from_slice(&out.stdout)?;
        Ok(v.as_array().map(Vec::len).unwrap_or(0))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.detach();
        // State dirs can reach a gigabyte (the 100k test); set
        // INTERLOCK_TEST_KEEP to keep them for a look after a failure.
        if std::env::var_os("INTERLOCK_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
