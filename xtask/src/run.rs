//! `cargo xtask run`: build, run the daemon as root in the foreground, detach afterwards.
//!
//! Ctrl-C, SIGTERM or SIGHUP at any point leave no daemon behind: xtask
//! records the first one it gets (`stop`), forwards SIGTERM to the child of
//! the moment (the build, then the daemon) and waits for it; a build so
//! interrupted never goes on to start a daemon. Each child also gets
//! SIGTERM should xtask itself be killed (PR_SET_PDEATHSIG).

use std::os::unix::process::{CommandExt as _, ExitStatusExt};
use std::process::{Command, ExitCode, ExitStatus};
use std::time::Duration;

use anyhow::{Result, bail};

use crate::util::{self, Workspace};
use crate::{build_cmd, setup};

const DEFAULT_POLICY: &str = "policies/default.yaml";

/// Options of `cargo xtask run`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Build and run the release binary.
    #[arg(long)]
    release: bool,
    /// Extra arguments for `interlock run` (after `--`).
    #[arg(last = true)]
    args: Vec<String>,
}

pub(crate) fn cmd(args: &Args, ws: &Workspace) -> Result<ExitCode> {
    if !util::is_root() {
        bail!(
            "`cargo xtask run` needs root to load interlock's eBPF programs: run it as root (xtask never calls sudo)"
        );
    }
    stop::install();
    setup::ensure_setup(ws)?;

    let bin = ws.interlock_bin(args.release);
    let mut daemon = Command::new(&bin);
    daemon
        .current_dir(ws.root())
        .args(["run", "--policy", DEFAULT_POLICY])
        .args(&args.args);
    let outcome = build_then_run(&mut build_cmd::command(ws, args.release), &mut daemon)?;
    let code = match outcome {
        Outcome::BuildFailed(status) => bail!("the build failed ({status}); no daemon started"),
        Outcome::Stopped(signal) => {
            eprintln!("stopped by signal {signal} before the daemon started; none was started");
            return Ok(ExitCode::from(signal_byte(signal)));
        }
        Outcome::Ran(status) => exit_byte(status),
    };

    let mut detach = Command::new(&bin);
    detach.current_dir(ws.root()).arg("detach");
    if let Some(instance) = instance_arg(&args.args) {
        detach.args(["--instance", instance]);
    }
    match util::run(&mut detach) {
        Ok(()) => {
            eprintln!("ran `interlock detach`: this host is left clean")
        }
        Err(err) => eprintln!("warning: {err:#}: interlock's programs may still be attached"),
    }
    Ok(ExitCode::from(code))
}

/// How `build_then_run` ended.
#[derive(Debug)]
enum Outcome {
    /// The build did not succeed.
    BuildFailed(ExitStatus),
    /// A stop signal came before the daemon was started (none was).
    Stopped(i32),
    /// The daemon ran and exited so.
    Ran(ExitStatus),
}

/// Runs `build`, then, unless it failed or a stop signal came, `daemon`;
/// each until it exits, each sent SIGTERM once a stop signal comes.
fn build_then_run(build: &mut Command, daemon: &mut Command) -> Result<Outcome> {
    if let Some(signal) = stop::received() {
        return Ok(Outcome::Stopped(signal));
    }
    let status = supervise(build)?;
    // Checked after the build however it ended: an interrupted cargo may
    // still exit 0 (it had nothing left to do), and must not go on.
    if let Some(signal) = stop::received() {
        return Ok(Outcome::Stopped(signal));
    }
    if !status.success() {
        return Ok(Outcome::BuildFailed(status));
    }
    Ok(Outcome::Ran(supervise(daemon)?))
}

/// How often a supervised child and the stop flag are looked at.
const POLL: Duration = Duration::from_millis(20);

/// Runs `cmd` until it exits, sending it SIGTERM (once) when a stop signal
/// comes, also one that came before it started.
fn supervise(cmd: &mut Command) -> Result<ExitStatus> {
    eprintln!("$ {}", util::render(cmd));
    let parent = std::process::id();
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // xtask died before the prctl: nobody would stop this child.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::other("xtask exited"));
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow::anyhow!("could not start `{}`: {e}", util::render(cmd)))?;
    let mut forwarded = false;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if !forwarded && stop::received().is_some() {
            forwarded = true;
            // The daemon drains on SIGTERM, and ignores a second signal
            // (e.g. the terminal's SIGINT it got too).
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: kill with our own child's pid.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        std::thread::sleep(POLL);
    }
}

/// The signals that stop `cargo xtask run`.
mod stop {
    use std::sync::atomic::{AtomicI32, Ordering};

    /// The first stop signal received (0: none).
    static RECEIVED: AtomicI32 = AtomicI32::new(0);

    const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

    extern "C" fn note(signal: libc::c_int) {
        // Atomics are async-signal-safe.
        let _ = RECEIVED.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Catches SIGINT, SIGTERM and SIGHUP from now on. Caught (not ignored)
    /// signals are reset to their default on exec, so children still get
    /// the terminal's Ctrl-C as usual.
    pub(super) fn install() {
        let handler = note as extern "C" fn(libc::c_int);
        for s in SIGNALS {
            // SAFETY: the handler only stores to an atomic.
            unsafe { libc::signal(s, handler as libc::sighandler_t) };
        }
    }

    /// The first stop signal received so far.
    pub(super) fn received() -> Option<i32> {
        match RECEIVED.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }

    /// Back to the default dispositions, nothing received (tests).
    #[cfg(test)]
    pub(super) fn reset() {
        for s in SIGNALS {
            // SAFETY: restoring the default disposition.
            unsafe { libc::signal(s, libc::SIG_DFL) };
        }
        RECEIVED.store(0, Ordering::SeqCst);
    }
}

/// The `--instance` value the daemon was given, in either `--instance X` or `--instance=X` form.
fn instance_arg(args: &[String]) -> Option<&str> {
    let mut found = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            break;
        } else if arg == "--instance" {
            found = iter.next().map(String::as_str).or(found);
        } else if let Some(value) = arg.strip_prefix("--instance=") {
            found = Some(value);
        }
    }
    found
}

/// The daemon's exit status as ours; death by signal N becomes 128 + N, as in a shell.
fn exit_byte(status: ExitStatus) -> u8 {
    let code = status
        .code()
        .or_else(|| status.signal().map(|sig| 128 + sig))
        .unwrap_or(1);
    u8::try_from(code).unwrap_or(1)
}

/// A stop by signal N as an exit code: 128 + N.
fn signal_byte(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn finds_instance_in_both_forms() {
        assert_eq!(
            instance_arg(&strings(&["--instance", "ci-7"])),
            Some("ci-7")
        );
        assert_eq!(
            instance_arg(&strings(&["-v", "--instance=ci-8"])),
            Some("ci-8")
        );
        assert_eq!(
            instance_arg(&strings(&["--instance=a", "--instance", "b"])),
            Some("b")
        );
    }

    #[test]
    fn no_instance_when_absent_dangling_or_after_double_dash() {
        assert_eq!(instance_arg(&strings(&[])), None);
        assert_eq!(instance_arg(&strings(&["--instance"])), None);
        assert_eq!(instance_arg(&strings(&["--", "--instance", "x"])), None);
        assert_eq!(instance_arg(&strings(&["--instances", "x"])), None);
    }

    #[test]
    fn signal_deaths_map_like_a_shell() {
        assert_eq!(exit_byte(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_byte(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_byte(ExitStatus::from_raw(libc::SIGINT)), 130);
    }

    /// A command run by `sh -c SCRIPT` (`$PPID` is this test process).
    fn sh(script: &str) -> Command {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn a_stop_signal_ends_the_child_of_the_moment_and_a_stopped_build_starts_nothing() {
        // One test: the signal disposition and flag are process-wide.
        let dir = std::env::temp_dir().join(format!("xtask-run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.join("daemon-ran");
        let daemon = |script: &str| sh(&script.replace("MARKER", &marker.display().to_string()));

        // SIGTERM to xtask during the build: the build gets SIGTERM, no daemon starts.
        stop::install();
        let build = "trap 'echo build-stopped > BUILT; exit 143' TERM; kill -TERM $PPID; while :; do sleep 0.05; done";
        let built = dir.join("built");
        let out = build_then_run(
            &mut sh(&build.replace("BUILT", &built.display().to_string())),
            &mut daemon("touch MARKER"),
        )
        .unwrap();
        assert!(matches!(out, Outcome::Stopped(libc::SIGTERM)), "{out:?}");
        assert_eq!(
            std::fs::read_to_string(&built).unwrap().trim(),
            "build-stopped"
        );
        assert!(
            !marker.exists(),
            "a daemon was started after an interrupted build"
        );
        stop::reset();

        // A build that exits 0 although interrupted (nothing left to do) does not go on either.
        stop::install();
        let out = build_then_run(
            &mut sh("trap 'exit 0' TERM; kill -INT $PPID; while :; do sleep 0.05; done"),
            &mut daemon("touch MARKER"),
        )
        .unwrap();
        assert!(matches!(out, Outcome::Stopped(libc::SIGINT)), "{out:?}");
        assert!(!marker.exists());
        stop::reset();

        // SIGINT to xtask while the daemon runs: the daemon gets SIGTERM and is waited for.
        stop::install();
        let out = build_then_run(
            &mut sh("true"),
            &mut daemon(
                "trap 'echo got-term > MARKER; exit 0' TERM; kill -INT $PPID; while :; do sleep 0.05; done",
            ),
        )
        .unwrap();
        assert!(matches!(&out, Outcome::Ran(s) if s.success()), "{out:?}");
        assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "got-term");
        stop::reset();

        // A failed build starts nothing.
        std::fs::remove_file(&marker).unwrap();
        stop::install();
        let out = build_then_run(&mut sh("exit 101"), &mut daemon("touch MARKER")).unwrap();
        assert!(
            matches!(&out, Outcome::BuildFailed(s) if s.code() == Some(101)),
            "{out:?}"
        );
        assert!(!marker.exists());
        stop::reset();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
