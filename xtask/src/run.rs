//! `cargo xtask run`: build, run the daemon as root in the foreground, detach afterwards.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode, ExitStatus};

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
    setup::ensure_setup(ws)?;
    build_cmd::build(ws, args.release)?;

    let bin = ws.interlock_bin(args.release);
    let mut daemon = Command::new(&bin);
    daemon
        .current_dir(ws.root())
        .args(["run", "--policy", DEFAULT_POLICY])
        .args(&args.args);
    // Ctrl-C reaches the daemon directly (same process group); xtask outlives it to clean up.
    shield_from_sigint();
    let status = util::status(&mut daemon)?;

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
    Ok(ExitCode::from(exit_byte(status)))
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

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Catches SIGINT with a no-op handler instead of SIG_IGN: a caught signal is reset to its
/// default on exec, so the daemon still gets the terminal's Ctrl-C while xtask survives it.
fn shield_from_sigint() {
    let handler = ignore_signal as extern "C" fn(libc::c_int);
    // SAFETY: the handler is async-signal-safe (it does nothing).
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}

/// The daemon's exit status as ours; death by signal N becomes 128 + N, as in a shell.
fn exit_byte(status: ExitStatus) -> u8 {
    let code = status
        .code()
        .or_else(|| status.signal().map(|sig| 128 + sig))
        .unwrap_or(1);
    u8::try_from(code).unwrap_or(1)
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
}
