//! The bench's fixed surroundings for one run: a scratch directory with the policy, a fresh
//! scope cgroup, two loopback echo servers (one a policy target, one not) and the way to run
//! `loadgen` inside the cgroup. Dropping the rig removes what it created.

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::daemon::{self, Daemon};
use super::pgserver::{self, PgServer};
use super::scenario::DaemonPolicy;
use super::sshserver::{self, SshServer};
use crate::util::{self, Workspace};

/// Threads accepting on each echo server: enough that a connection the daemon keeps open a
/// little longer never delays the next one.
const ECHO_WORKERS: usize = 4;

/// What `loadgen` prints: one JSON line per invocation.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub(crate) struct LoadgenResult {
    pub(crate) count: u64,
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) total_secs: f64,
    pub(crate) rate_per_sec: f64,
    pub(crate) latency_us: Latency,
    /// The rest of the line (operation, address...), kept for the raw record.
    #[serde(flatten)]
    pub(crate) other: serde_json::Map<String, serde_json::Value>,
}

/// Latency percentiles of the successful operations; `None` when none succeeded.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub(crate) struct Latency {
    pub(crate) p50: Option<f64>,
    pub(crate) p90: Option<f64>,
    pub(crate) p99: Option<f64>,
    pub(crate) max: Option<f64>,
}

/// Everything a scenario needs; the daemon itself is started per subject run.
pub(crate) struct Rig {
    interlock: PathBuf,
    loadgen: PathBuf,
    instance: String,
    /// Not a policy target.
    plain: SocketAddr,
    /// The policy's tcp target.
    target: SocketAddr,
    /// The policy's postgres target. Stopped before the scratch directory goes.
    pg: PgServer,
    /// The policy's ssh target. Stopped before the scratch directory goes.
    ssh: SshServer,
    /// Names of the directories handed out by [`Rig::fresh_dir`].
    runs: std::cell::Cell<u32>,
    // Dropped after the fields above, in this order: the cgroup, then the directory.
    cgroup: Cgroup,
    dir: ScratchDir,
}

impl Rig {
    /// Creates the scratch directory, cgroup, servers and policy for instance `bench-<pid>`.
    pub(crate) fn new(ws: &Workspace) -> Result<Rig> {
        let release = ws.target_dir().join("release");
        let interlock = ws.interlock_bin(true);
        let loadgen = release.join("loadgen");
        for bin in [
            &interlock,
            &loadgen,
            &release.join("pgconns"),
            &release.join("eventbench"),
        ] {
            if !bin.is_file() {
                bail!("{} is missing after the release build", bin.display());
            }
        }
        let id = std::process::id();
        let dir = ScratchDir::create(std::env::temp_dir().join(format!("interlock-bench-{id}")))?;
        let cgroup = Cgroup::create(&format!("interlock-bench-{id}"))?;
        let plain = start_echo("127.0.0.2:0")?;
        let target = start_echo("127.0.0.2:0")?;
        eprintln!("bench: starting PostgreSQL 15 on {}", pgserver::ADDRESS);
        let pg = PgServer::start(&dir.path).context("cannot start the bench's PostgreSQL")?;
        eprintln!("bench: starting sshd on {}", sshserver::ADDRESS);
        let ssh = SshServer::start(&dir.path).context("cannot start the bench's sshd")?;
        for (file, masking) in [(STANDARD_POLICY, false), (MASKING_POLICY, true)] {
            let path = dir.path.join(file);
            let mut text = policy(target, pg.addr(), pg.password_file(), masking);
            text = with_ssh_target(&text, &ssh);
            fs::write(&path, text).context("cannot write the bench policy")?;
            let mut check = Command::new(&interlock);
            check.args(["policy", "check"]).arg(&path);
            pgserver::run_quiet(&mut check).context("the bench policy does not validate")?;
        }
        Ok(Rig {
            interlock,
            loadgen,
            instance: format!("bench-{id}"),
            plain,
            target,
            pg,
            ssh,
            runs: std::cell::Cell::new(0),
            cgroup,
            dir,
        })
    }

    /// The echo server that no policy rule matches.
    pub(crate) fn plain_server(&self) -> SocketAddr {
        self.plain
    }

    /// The echo server the policy intercepts.
    pub(crate) fn target_server(&self) -> SocketAddr {
        self.target
    }

    /// The bench's PostgreSQL server.
    pub(crate) fn pg(&self) -> &PgServer {
        &self.pg
    }

    /// The bench's sshd.
    pub(crate) fn ssh(&self) -> &SshServer {
        &self.ssh
    }

    /// The release `interlock` binary.
    pub(crate) fn interlock(&self) -> &Path {
        &self.interlock
    }

    /// The scratch directory (removed with the rig).
    pub(crate) fn scratch(&self) -> &Path {
        &self.dir.path
    }

    /// A release binary of the workspace (a bench helper from `tests/src/bin`).
    pub(crate) fn helper(&self, name: &str) -> PathBuf {
        self.loadgen.with_file_name(name)
    }

    /// A new empty directory in the scratch directory, named after `prefix`.
    pub(crate) fn fresh_dir(&self, prefix: &str) -> Result<PathBuf> {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let path = self.dir.path.join(format!("{prefix}-{n}"));
        fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(path)
    }

    /// `program args...`, started inside the bench cgroup.
    pub(crate) fn in_cgroup(&self, program: &Path, args: &[String]) -> Command {
        self.cgroup.command(program, args)
    }

    /// `interlock run` for this rig, as it is started for every subject run (standard policy).
    pub(crate) fn daemon_command(&self) -> Command {
        self.daemon_command_with(DaemonPolicy::Standard)
    }

    fn daemon_command_with(&self, policy: DaemonPolicy) -> Command {
        let file = match policy {
            DaemonPolicy::Masking => MASKING_POLICY,
            DaemonPolicy::Standard | DaemonPolicy::NoDaemon => STANDARD_POLICY,
        };
        let mut cmd = Command::new(&self.interlock);
        cmd.arg("run")
            .arg("--policy")
            .arg(self.dir.path.join(file))
            .args(["--instance", &self.instance, "--scope", &self.cgroup.scope])
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(["--drain-secs", "0"])
            // The daemon's default log level, whatever the caller's environment says.
            .env_remove("RUST_LOG");
        cmd
    }

    /// Starts the daemon with the cgroup as its scope and waits until it intercepts.
    pub(crate) fn start_daemon(&self, policy: DaemonPolicy) -> Result<Daemon> {
        let state = self.state_dir();
        if state.exists() {
            fs::remove_dir_all(&state)
                .with_context(|| format!("cannot clear {}", state.display()))?;
        }
        Daemon::start(
            self.daemon_command_with(policy),
            &self.interlock,
            &self.instance,
            &state,
            &self.dir.path.join("daemon.log"),
        )
    }

    /// The subject daemon's state directory (its SSH CA, its events).
    pub(crate) fn state_dir(&self) -> PathBuf {
        self.dir.path.join("state")
    }

    /// Runs `loadgen args...` inside the cgroup and parses its result line.
    pub(crate) fn loadgen(&self, args: &[String]) -> Result<LoadgenResult> {
        let mut cmd = self.cgroup.command(&self.loadgen, args);
        cmd.stdin(Stdio::null());
        let out = cmd
            .output()
            .with_context(|| format!("cannot start {}", self.loadgen.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "`{}` failed ({}): {}",
                util::render(&cmd),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let line = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line)
            .with_context(|| format!("loadgen printed {line:?}, not a result line"))
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // A subject run detaches when it ends; this covers a run cut short by a panic.
        if Path::new(daemon::PIN_ROOT).join(&self.instance).exists()
            && let Err(err) = daemon::detach(&self.interlock, &self.instance)
        {
            eprintln!("warning: {err:#}");
        }
    }
}

const STANDARD_POLICY: &str = "policy.yaml";
const MASKING_POLICY: &str = "policy-mask.yaml";

/// A policy with two targets: `target`, relayed as plain tcp, and the PostgreSQL server `pg`
/// (credentials injected from `password_file`, upstream TLS off as on the baseline).
/// `masking` adds a mask rule with the email detector on every statement to `pg`.
fn policy(target: SocketAddr, pg: SocketAddr, password_file: &Path, masking: bool) -> String {
    let mut text = format!(
        "version: 1\ntargets:\n  - name: bench\n    protocol: tcp\n    match:\n      - {{ address: \"{}\", port: {} }}\n\
         \x20 - name: bench-pg\n    protocol: postgres\n    match:\n      - {{ address: \"{}\", port: {} }}\n\
         \x20   upstream:\n      user: {}\n      password: {{ file: \"{}\" }}\n      tls: disable\n",
        target.ip(),
        target.port(),
        pg.ip(),
        pg.port(),
        pgserver::ROLE,
        password_file.display(),
    );
    if masking {
        text.push_str(
            "rules:\n  - name: bench-mask\n    match: { target: [bench-pg] }\n    action: mask\n    mask: { detectors: [email] }\n",
        );
    }
    text
}

/// `policy` with an `ssh` target for `ssh`: interlock logs in as root with the key sshd
/// authorizes and pins sshd's host key. The target is listed before any `rules:`.
fn with_ssh_target(policy: &str, ssh: &SshServer) -> String {
    let target = format!(
        "  - name: bench-ssh\n    protocol: ssh\n    match:\n      - {{ address: \"{}\", port: {} }}\n\
         \x20   upstream:\n      user: root\n      key: {{ file: \"{}\" }}\n      host_key: \"{}\"\n",
        ssh.addr().ip(),
        ssh.addr().port(),
        ssh.client_key().display(),
        ssh.host_public_key(),
    );
    match policy.find("rules:\n") {
        Some(at) => format!("{}{target}{}", &policy[..at], &policy[at..]),
        None => format!("{policy}{target}"),
    }
}

/// A directory removed with everything in it on drop.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn create(path: PathBuf) -> Result<ScratchDir> {
        fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(ScratchDir { path })
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_dir_all(&self.path) {
            eprintln!("warning: cannot remove {}: {err}", self.path.display());
        }
    }
}

/// A fresh cgroup directly under the cgroup v2 mount, removed on drop.
struct Cgroup {
    path: PathBuf,
    /// Relative to the mount, as `interlock run --scope` takes it.
    scope: String,
}

impl Cgroup {
    fn create(name: &str) -> Result<Cgroup> {
        let mounts = fs::read_to_string("/proc/mounts").context("cannot read /proc/mounts")?;
        let mount = cgroup2_mount(&mounts)
            .context("no cgroup2 filesystem is mounted (none in /proc/mounts)")?;
        let path = mount.join(name);
        fs::create_dir(&path)
            .with_context(|| format!("cannot create cgroup {}", path.display()))?;
        Ok(Cgroup {
            path,
            scope: format!("/{name}"),
        })
    }

    /// `program args...`, moved into this cgroup by a shell before it execs.
    fn command(&self, program: &Path, args: &[String]) -> Command {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg("echo $$ > \"$0\" && exec \"$@\"")
            .arg(self.path.join("cgroup.procs"))
            .arg(program)
            .args(args);
        cmd
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Exited processes can take a moment to leave the cgroup.
        for _ in 0..100 {
            if fs::remove_dir(&self.path).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "warning: cannot remove cgroup {}: remove it with `rmdir`",
            self.path.display()
        );
    }
}

/// The mount point of the first `cgroup2` entry of a /proc/mounts text.
fn cgroup2_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let target = fields.nth(1)?;
        (fields.next()? == "cgroup2").then(|| PathBuf::from(target))
    })
}

/// A TCP server on `addr` that writes back whatever it reads, until the peer closes.
/// Its threads live as long as xtask.
fn start_echo(addr: &str) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr).with_context(|| format!("cannot bind {addr}"))?;
    let local = listener.local_addr()?;
    for _ in 0..ECHO_WORKERS {
        let listener = listener.try_clone()?;
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                echo(stream);
            }
        });
    }
    Ok(local)
}

fn echo(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        match buf.get(..n) {
            Some(data) if n > 0 => {
                if stream.write_all(data).is_err() {
                    return;
                }
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount() {
        let mounts = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            cgroup2_mount(mounts),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount("proc /proc proc rw 0 0\n"), None);
    }

    #[test]
    fn policy_targets_the_given_endpoints() {
        let p = policy(
            "127.0.0.2:4567".parse().unwrap(),
            "127.0.0.5:5433".parse().unwrap(),
            Path::new("/tmp/pw"),
            false,
        );
        assert!(p.contains("protocol: tcp"));
        assert!(p.contains("{ address: \"127.0.0.2\", port: 4567 }"));
        assert!(p.contains("  - name: bench-pg\n    protocol: postgres\n"));
        assert!(p.contains("{ address: \"127.0.0.5\", port: 5433 }"));
        assert!(p.contains("password: { file: \"/tmp/pw\" }"));
        assert!(!p.contains("rules:"));
        let m = policy(
            "127.0.0.2:4567".parse().unwrap(),
            "127.0.0.5:5433".parse().unwrap(),
            Path::new("/tmp/pw"),
            true,
        );
        assert!(m.contains("action: mask"));
        assert!(m.contains("detectors: [email]"));
    }

    #[test]
    fn echo_server_echoes() {
        let addr = start_echo("127.0.0.1:0").unwrap();
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
    }

    #[test]
    fn parses_a_loadgen_line() {
        let line = r#"{"count":3,"ok":2,"errors":1,"first_error":"refused","total_secs":0.5,
            "rate_per_sec":4.0,"latency_us":{"p50":1.5,"p90":2.0,"p99":2.0,"max":2.0},"op":"connect"}"#;
        let r: LoadgenResult = serde_json::from_str(line).unwrap();
        assert_eq!((r.count, r.ok, r.errors), (3, 2, 1));
        assert_eq!(r.latency_us.p50, Some(1.5));
        assert_eq!(serde_json::to_value(&r).unwrap()["op"], "connect");
    }
}
