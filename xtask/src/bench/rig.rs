//! The bench's fixed surroundings for one run, built from the shared fixtures
//! (`interlock-harness`, the same the integration tests use): a scratch directory with the
//! policies, a fresh scope cgroup, two loopback echo servers (one a policy target, one not),
//! PostgreSQL and sshd, and the way to run `loadgen` inside the cgroup. Dropping the rig
//! removes what it created.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use interlock_harness::postgres::{DATABASE, ROLE};
use interlock_harness::{ByteEcho, Daemon, DaemonSpec, PgServer, Policy, Sshd, TestCgroup};
use serde::Deserialize;

use super::scenario::DaemonPolicy;
use crate::util::{self, Workspace};

/// Where the bench's PostgreSQL listens.
const PG_ADDRESS: &str = "127.0.0.5";
/// Where the bench's sshd listens.
const SSH_ADDRESS: &str = "127.0.0.40";
/// Enough for the connection-count scenarios.
const PG_MAX_CONNECTIONS: u32 = 1_100;
/// pgbench's data set: scale 1 (100 000 accounts).
const PGBENCH_SCALE: &str = "1";
/// sshd settings for back-to-back connections and a mux master.
const SSHD_EXTRA: &str = "MaxStartups 100:30:200\nMaxSessions 100\nUseDNS no";
/// Quiet time after readiness and after detaching, so neither the daemon's start-up work nor
/// the kernel's release of its programs overlaps a measurement.
const SETTLE: Duration = Duration::from_millis(150);

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
    /// Not a policy target.
    plain: SocketAddr,
    /// The policy's tcp target.
    target: SocketAddr,
    /// The policy's postgres target. Stopped before the scratch directory goes.
    pg: PgServer,
    /// The policy's ssh target, with a directory for scp's uploads.
    ssh: Sshd,
    /// The two policies' text, checked with `interlock policy check`.
    standard: String,
    masking: String,
    /// Names of the directories handed out by [`Rig::fresh_dir`].
    runs: std::cell::Cell<u32>,
    // Dropped after the fields above, in this order: the cgroup, then the directory.
    cgroup: TestCgroup,
    dir: tempfile::TempDir,
}

impl Rig {
    /// Creates the scratch directory, cgroup, servers and policies.
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
        let dir = interlock_harness::scratch("interlock-bench")
            .context("cannot create the bench's scratch directory")?;
        let cgroup = TestCgroup::new("bench")?;
        let plain = ByteEcho::start_default("127.0.0.2:0")?.addr;
        let target = ByteEcho::start_default("127.0.0.2:0")?.addr;
        eprintln!("bench: starting PostgreSQL 15 on {PG_ADDRESS}");
        let pg = start_pg().context("cannot start the bench's PostgreSQL")?;
        eprintln!("bench: starting sshd on {SSH_ADDRESS}");
        let ssh =
            Sshd::start_with(SSH_ADDRESS, SSHD_EXTRA).context("cannot start the bench's sshd")?;
        fs::create_dir_all(ssh.dir.join("remote"))?;
        let password = pg.password_file()?;
        let standard = Policy::new()
            .tcp("bench", &[target])
            .postgres("bench-pg", &pg, &password)
            .ssh("bench-ssh", &ssh);
        let masking = standard.clone().rules(
            "  - name: bench-mask\n    match: { target: [bench-pg] }\n    action: mask\n    mask: { detectors: [email] }\n",
        );
        let (standard, masking) = (standard.yaml(), masking.yaml());
        for (name, text) in [("policy.yaml", &standard), ("policy-mask.yaml", &masking)] {
            let path = dir.path().join(name);
            fs::write(&path, text).context("cannot write the bench policy")?;
            let mut check = Command::new(&interlock);
            check.args(["policy", "check"]).arg(&path);
            run_quiet(&mut check).context("the bench policy does not validate")?;
        }
        Ok(Rig {
            interlock,
            loadgen,
            plain,
            target,
            pg,
            ssh,
            standard,
            masking,
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
    pub(crate) fn ssh(&self) -> &Sshd {
        &self.ssh
    }

    /// The release `interlock` binary.
    pub(crate) fn interlock(&self) -> &Path {
        &self.interlock
    }

    /// The scratch directory (removed with the rig).
    pub(crate) fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// A release binary of the workspace (a bench helper from `tests/src/bin`).
    pub(crate) fn helper(&self, name: &str) -> PathBuf {
        self.loadgen.with_file_name(name)
    }

    /// A new empty directory in the scratch directory, named after `prefix`.
    pub(crate) fn fresh_dir(&self, prefix: &str) -> Result<PathBuf> {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let path = self.dir.path().join(format!("{prefix}-{n}"));
        fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(path)
    }

    /// `program args...`, started inside the bench cgroup.
    pub(crate) fn in_cgroup(&self, program: &Path, args: &[String]) -> Command {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cgroup.command(program, &args)
    }

    /// How every subject run starts the daemon, for the bench's log.
    pub(crate) fn daemon_summary(&self) -> String {
        format!(
            "{} run --policy {} --scope {} --drain-secs 0 (a fresh instance and state directory per run)",
            self.interlock.display(),
            self.dir.path().join("policy.yaml").display(),
            self.cgroup.scope(),
        )
    }

    /// Starts the daemon with the cgroup as its scope and waits until it intercepts.
    pub(crate) fn start_daemon(&self, policy: DaemonPolicy) -> Result<Daemon> {
        let text = match policy {
            DaemonPolicy::Masking => &self.masking,
            DaemonPolicy::Standard | DaemonPolicy::NoDaemon => &self.standard,
        };
        let spec = DaemonSpec {
            policy: text.clone(),
            scopes: vec![self.cgroup.scope().to_owned()],
            extra_args: vec!["--drain-secs".into(), "0".into()],
        };
        let mut daemon = Daemon::prepare(spec)?.with_binary(&self.interlock);
        daemon.spawn()?;
        thread::sleep(SETTLE);
        Ok(daemon)
    }

    /// Runs `loadgen args...` inside the cgroup and parses its result line.
    pub(crate) fn loadgen(&self, args: &[String]) -> Result<LoadgenResult> {
        let mut cmd = self.in_cgroup(&self.loadgen, args);
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

/// SIGTERM, then `interlock detach`, then a check that the pins are gone: a subject run ends
/// with no program attached, so the next baseline measures none.
pub(crate) fn stop_daemon(mut daemon: Daemon) -> Result<()> {
    daemon.signal_and_wait(libc::SIGTERM)?;
    daemon.detach()?;
    if daemon.pin_dir().exists() {
        bail!(
            "{} still exists after `interlock detach`",
            daemon.pin_dir().display()
        );
    }
    thread::sleep(SETTLE);
    Ok(())
}

/// The bench's PostgreSQL: the shared fixture's server with room for the connection scenarios
/// and durability off (the bench measures interlock, not fsync), and pgbench's tables.
fn start_pg() -> Result<PgServer> {
    let pg = PgServer::start_configured(
        PG_ADDRESS,
        PG_MAX_CONNECTIONS,
        &["synchronous_commit=off", "shared_buffers=64MB"],
    )?;
    let mut init = Command::new("pgbench");
    init.args(["-i", "-q", "-s", PGBENCH_SCALE, "-U", ROLE])
        .arg("-h")
        .arg(&pg.dir)
        .args(["-p", &pg.addr.port().to_string(), DATABASE]);
    run_quiet(&mut init).context("pgbench -i failed")?;
    Ok(pg)
}

/// Runs `cmd` with no input; fails with its stderr if it fails.
pub(crate) fn run_quiet(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{}`", util::render(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            util::render(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
