//! SSH scenarios against the rig's real sshd ((the shared `interlock_harness::Sshd`)), with the real OpenSSH
//! clients inside the bench cgroup: an scp upload and download of one large file, and the
//! round trip of `ssh host true` over a new connection and over a multiplexed one. The
//! subject's clients reach sshd through the daemon's SSH proxy (the kernel redirects them),
//! which injects the key, decides each exec and sftp operation and records them; they trust
//! interlock's SSH CA (`interlock ca export --ssh`). The baseline's connect directly and pin
//! sshd's host key. Both sides use the same client key, options and cipher negotiation.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::pg::percentile;
use super::rig::Rig;
use super::scenario::{Better, Measurement, Metric, Scenario, metric};
use interlock_harness::{Daemon, Sshd};

const SCP_METRICS: &[Metric] = &[
    metric("up_mbps", "scp upload", "MB/s", Better::Higher),
    metric("down_mbps", "scp download", "MB/s", Better::Higher),
];

const EXEC_METRICS: &[Metric] = &[
    metric(
        "new_p50_ms",
        "ssh host true, new connection, p50",
        "ms",
        Better::Lower,
    ),
    metric(
        "new_p99_ms",
        "ssh host true, new connection, p99",
        "ms",
        Better::Lower,
    ),
    metric(
        "mux_p50_ms",
        "ssh host true over a ControlMaster, p50",
        "ms",
        Better::Lower,
    ),
    metric(
        "mux_p99_ms",
        "ssh host true over a ControlMaster, p99",
        "ms",
        Better::Lower,
    ),
];

/// `scp` of one `mib` MiB file of random bytes up to sshd, then back down.
pub(crate) struct Scp {
    pub(crate) mib: u64,
    /// Quick mode: the file is smaller than the full run's 256 MiB.
    pub(crate) quick: bool,
}

impl Scenario for Scp {
    fn name(&self) -> &'static str {
        "ssh-scp"
    }

    fn title(&self) -> &'static str {
        "scp of one large file up, then down (OpenSSH's default sftp mode; subject: through \
         the SSH proxy, every sftp operation decided and recorded)"
    }

    fn params(&self) -> Value {
        json!({
            "file_mib": self.mib,
            "note": if self.quick { "quick mode: 32 MiB instead of the full run's 256 MiB" } else { "full size" },
            "tool": "scp -q (sftp protocol)",
            "cipher": "negotiated by the OpenSSH client (its default order)",
            "mb": "10^6 bytes",
        })
    }

    fn metrics(&self) -> &'static [Metric] {
        SCP_METRICS
    }

    fn measure(&self, rig: &Rig, daemon: Option<&Daemon>) -> Result<Measurement> {
        let ssh = rig.ssh();
        let source = payload(rig, self.mib)?;
        let known_hosts = known_hosts(rig, daemon)?;
        let local = rig.fresh_dir("scp")?;
        let remote = ssh.dir.join("remote").join("upload.bin");
        let down = local.join("download.bin");
        let target = |path: &Path| format!("root@{}:{}", ssh.addr.ip(), path.display());
        let bytes = self.mib * 1024 * 1024;
        let up_secs = timed_scp(
            rig,
            ssh,
            &known_hosts,
            &source.display().to_string(),
            &target(&remote),
        )?;
        expect_size(&remote, bytes)?;
        let down_secs = timed_scp(
            rig,
            ssh,
            &known_hosts,
            &target(&remote),
            &down.display().to_string(),
        )?;
        expect_size(&down, bytes)?;
        fs::remove_file(&remote).ok();
        fs::remove_dir_all(&local).ok();
        if let Some(daemon) = daemon {
            expect_commands(daemon)?;
        }
        #[allow(clippy::cast_precision_loss)]
        let mb = bytes as f64 / 1e6;
        Ok(Measurement {
            values: vec![("up_mbps", mb / up_secs), ("down_mbps", mb / down_secs)],
            errors: 0,
            first_error: None,
            raw: json!({ "bytes": bytes, "up_secs": up_secs, "down_secs": down_secs }),
        })
    }
}

/// `count` sequential `ssh host true` over new connections, then `count` over one
/// ControlMaster connection (a new session channel each, decided by the proxy each).
pub(crate) struct Exec {
    pub(crate) count: u64,
}

impl Scenario for Exec {
    fn name(&self) -> &'static str {
        "ssh-exec"
    }

    fn title(&self) -> &'static str {
        "`ssh host true` round trip: a new connection each (key exchange, auth, exec), and \
         over one multiplexed ControlMaster connection (a new channel each)"
    }

    fn params(&self) -> Value {
        json!({ "commands": self.count, "command": "true", "mux": "ControlMaster=yes, ControlPersist" })
    }

    fn metrics(&self) -> &'static [Metric] {
        EXEC_METRICS
    }

    fn measure(&self, rig: &Rig, daemon: Option<&Daemon>) -> Result<Measurement> {
        let ssh = rig.ssh();
        let known_hosts = known_hosts(rig, daemon)?;
        let dir = rig.fresh_dir("ssh-exec")?;
        let host = format!("root@{}", ssh.addr.ip());
        let base = |extra: &[&str]| {
            let mut args = vec!["-p".to_owned(), ssh.addr.port().to_string()];
            args.extend(client_options(ssh, &known_hosts));
            args.extend(extra.iter().map(|s| (*s).to_owned()));
            args
        };
        let run = |args: &[String]| -> Result<Duration> {
            let mut cmd = rig.in_cgroup(Path::new("/usr/bin/ssh"), args);
            cmd.stdin(Stdio::null());
            let started = Instant::now();
            let out = cmd.output().context("cannot start ssh")?;
            let took = started.elapsed();
            if !out.status.success() {
                bail!(
                    "`ssh {}` failed ({}): {}{}",
                    args.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim(),
                    String::from_utf8_lossy(&out.stdout).trim()
                );
            }
            Ok(took)
        };
        // A failed command is counted and reported, like loadgen's operations.
        let (mut errors, mut first_error) = (0u64, None::<String>);
        let mut timed = |args: &[String], into: &mut Vec<f64>| match run(args) {
            Ok(d) => into.push(d.as_secs_f64() * 1e3),
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(format!("{e:#}"));
            }
        };
        let mut new = Vec::new();
        let mut one = base(&[]);
        one.extend([host.clone(), "true".to_owned()]);
        run(&one)?; // warm-up: caches, the daemon's first certificate
        for _ in 0..self.count {
            timed(&one, &mut new);
        }
        let control = format!("ControlPath={}", dir.join("mux").display());
        let mut master = base(&[
            "-o",
            "ControlMaster=yes",
            "-o",
            &control,
            "-o",
            "ControlPersist=yes",
            "-N",
            "-f",
        ]);
        master.push(host.clone());
        run(&master)?;
        let mut over_mux = base(&["-o", "ControlMaster=no", "-o", &control]);
        over_mux.extend([host.clone(), "true".to_owned()]);
        let mut mux = Vec::new();
        for _ in 0..self.count {
            timed(&over_mux, &mut mux);
        }
        let mut exit = base(&["-o", &control, "-O", "exit"]);
        exit.push(host);
        run(&exit).context("cannot stop the ControlMaster")?;
        fs::remove_dir_all(&dir).ok();
        if let Some(daemon) = daemon {
            expect_commands(daemon)?;
        }
        let (Some(new_p50), Some(new_p99), Some(mux_p50), Some(mux_p99)) = (
            percentile(&mut new, 0.50),
            percentile(&mut new, 0.99),
            percentile(&mut mux, 0.50),
            percentile(&mut mux, 0.99),
        ) else {
            bail!("no command was timed");
        };
        Ok(Measurement {
            values: vec![
                ("new_p50_ms", new_p50),
                ("new_p99_ms", new_p99),
                ("mux_p50_ms", mux_p50),
                ("mux_p99_ms", mux_p99),
            ],
            errors,
            first_error,
            raw: json!({ "new_ms": new, "mux_ms": mux }),
        })
    }
}

/// The client's known_hosts: sshd's own key (baseline), or interlock's CA (subject).
fn known_hosts(rig: &Rig, daemon: Option<&Daemon>) -> Result<PathBuf> {
    let ssh = rig.ssh();
    let Some(daemon) = daemon else {
        return direct_known_hosts(ssh);
    };
    let mut export = Command::new(rig.interlock());
    export
        .args(["ca", "export", "--ssh", "--hosts"])
        .arg(format!("[{}]:*", ssh.addr.ip()))
        .arg("--state-dir")
        .arg(&daemon.state_dir);
    let out = export
        .stdin(Stdio::null())
        .output()
        .context("cannot run interlock ca export")?;
    if !out.status.success() {
        bail!(
            "interlock ca export --ssh failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    known_hosts_with(ssh, "known_hosts-ca", &String::from_utf8_lossy(&out.stdout))
}

/// The file scp moves: `mib` MiB of random bytes, written once per rig.
fn payload(rig: &Rig, mib: u64) -> Result<PathBuf> {
    let path = rig.scratch().join(format!("payload-{mib}m.bin"));
    if path.exists() {
        return Ok(path);
    }
    let mut cmd = Command::new("head");
    cmd.args(["-c", &format!("{}", mib * 1024 * 1024), "/dev/urandom"]);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .context("cannot run head")?;
    if !out.status.success() {
        bail!("head -c {mib}M /dev/urandom failed");
    }
    fs::write(&path, out.stdout).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// One `scp -q from to` inside the cgroup, timed around the whole process.
fn timed_scp(rig: &Rig, ssh: &Sshd, known_hosts: &Path, from: &str, to: &str) -> Result<f64> {
    let mut args = vec![
        "-q".to_owned(),
        "-P".to_owned(),
        ssh.addr.port().to_string(),
    ];
    args.extend(client_options(ssh, known_hosts));
    args.extend([from.to_owned(), to.to_owned()]);
    let mut cmd = rig.in_cgroup(Path::new("/usr/bin/scp"), &args);
    cmd.stdin(Stdio::null());
    let started = Instant::now();
    let out = cmd.output().context("cannot start scp")?;
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "scp {from} {to} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(secs)
}

fn expect_size(path: &Path, bytes: u64) -> Result<()> {
    let len = fs::metadata(path)
        .with_context(|| format!("{} is missing after scp", path.display()))?
        .len();
    if len != bytes {
        bail!("{} has {len} bytes after scp, not {bytes}", path.display());
    }
    Ok(())
}

/// The subject really was proxied: the daemon recorded commands.
fn expect_commands(daemon: &Daemon) -> Result<()> {
    // Events reach the log within 100 ms.
    std::thread::sleep(Duration::from_millis(300));
    if daemon.count_events("command") == 0 {
        bail!("the daemon recorded no SSH command: the client was not proxied");
    }
    Ok(())
}

/// A known_hosts file pinning sshd's own host key (the baseline's clients).
fn direct_known_hosts(ssh: &Sshd) -> Result<PathBuf> {
    let line = format!(
        "[{}]:{} {}",
        ssh.addr.ip(),
        ssh.addr.port(),
        ssh.host_public_key
    );
    known_hosts_with(ssh, "known_hosts-direct", &line)
}

/// A known_hosts file `name` in sshd's directory holding `line`.
fn known_hosts_with(ssh: &Sshd, name: &str, line: &str) -> Result<PathBuf> {
    let path = ssh.dir.join(name);
    fs::write(&path, format!("{}\n", line.trim()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// The OpenSSH client options of both sides: the key sshd authorizes, `known_hosts` pinned
/// strictly, nothing from the user's or the system's configuration, no prompt.
fn client_options(ssh: &Sshd, known_hosts: &Path) -> Vec<String> {
    [
        "-F",
        "/dev/null",
        "-i",
        &ssh.client_key.display().to_string(),
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        &format!("UserKnownHostsFile={}", known_hosts.display()),
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}
