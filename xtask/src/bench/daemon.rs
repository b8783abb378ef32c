//! The release daemon during one subject run: started, waited for until it intercepts,
//! stopped, and detached (its programs outlive it by design). Dropping a `Daemon` that was
//! not stopped kills and detaches it, so an error never leaves programs attached.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Where `interlock run` pins each instance's programs and maps.
pub(crate) const PIN_ROOT: &str = "/sys/fs/bpf/interlock";
/// How long the daemon may take to load, attach and write runtime.json.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Quiet time after readiness and after detaching, so neither the daemon's start-up work nor
/// the kernel's release of its programs overlaps a measurement.
const SETTLE: Duration = Duration::from_millis(150);
/// How long SIGTERM gets before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `interlock run` child.
pub(crate) struct Daemon {
    child: Option<Child>,
    interlock: PathBuf,
    instance: String,
    state_dir: PathBuf,
    log: PathBuf,
    detached: bool,
}

impl Daemon {
    /// Spawns `cmd` (an `interlock run` command) with stderr to `log` and waits until
    /// `<state_dir>/runtime.json` appears. Fails if the daemon exits or is not ready in 30 s.
    pub(crate) fn start(
        mut cmd: Command,
        interlock: &Path,
        instance: &str,
        state_dir: &Path,
        log: &Path,
    ) -> Result<Daemon> {
        let log_file =
            File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", interlock.display()))?;
        let mut daemon = Daemon {
            child: Some(child),
            interlock: interlock.to_owned(),
            instance: instance.to_owned(),
            state_dir: state_dir.to_owned(),
            log: log.to_owned(),
            detached: false,
        };
        daemon.wait_ready()?;
        thread::sleep(SETTLE);
        Ok(daemon)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let runtime = self.state_dir.join("runtime.json");
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if runtime.exists() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "interlock exited early ({status}); its log:\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
        bail!(
            "interlock did not write {} within {} s; its log:\n{}",
            runtime.display(),
            READY_TIMEOUT.as_secs(),
            self.log_tail()
        )
    }

    /// Number of `session_started` events in the daemon's event log so far.
    pub(crate) fn sessions_started(&self) -> usize {
        self.events_of_type("session_started")
    }

    /// Number of events of type `kind` in the daemon's event log so far.
    pub(crate) fn events_of_type(&self, kind: &str) -> usize {
        let text = fs::read_to_string(self.state_dir.join("events.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| event["type"] == kind)
            .count()
    }

    /// The daemon's process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM (SIGKILL after 20 s), then `interlock detach`, then a check that the pins are gone.
    pub(crate) fn stop(mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let pid = libc::pid_t::try_from(child.id()).context("daemon pid out of range")?;
            // SAFETY: kill with the pid of our own unreaped child and a valid signal number.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + STOP_TIMEOUT;
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    eprintln!("warning: interlock ignored SIGTERM for 20 s; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        self.detached = true;
        detach(&self.interlock, &self.instance)?;
        let pins = Path::new(PIN_ROOT).join(&self.instance);
        if pins.exists() {
            bail!("{} still exists after `interlock detach`", pins.display());
        }
        thread::sleep(SETTLE);
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.detached
            && let Err(err) = detach(&self.interlock, &self.instance)
        {
            eprintln!("warning: {err:#}: interlock's programs may still be attached");
        }
    }
}

/// `interlock detach --instance NAME`, quietly (its list of removed pins is not shown).
pub(crate) fn detach(interlock: &Path, instance: &str) -> Result<()> {
    let out = Command::new(interlock)
        .args(["detach", "--instance", instance])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {}", interlock.display()))?;
    if !out.status.success() {
        bail!(
            "`interlock detach --instance {instance}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
