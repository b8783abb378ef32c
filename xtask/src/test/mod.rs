//! `cargo xtask test`: the whole pipeline CI runs, phase by phase, stopping at the first failure.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::setup;
use crate::util::{self, Workspace};

/// Options of `cargo xtask test`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Only run the integration tests whose name contains this string.
    filter: Option<String>,
}

/// A named step of the pipeline.
struct Phase {
    name: &'static str,
    command: Command,
}

fn phases(ws: &Workspace, filter: Option<&str>) -> Vec<Phase> {
    let cargo = |args: &[&str]| {
        let mut cmd = ws.cargo();
        cmd.args(args);
        cmd
    };
    let mut integration = cargo(&["test", "-p", "interlock-tests", "--", "--test-threads=2"]);
    integration
        .env("INTERLOCK_BIN", ws.interlock_bin(false))
        .env("INTERLOCK_WORKSPACE", ws.root())
        .args(filter);
    vec![
        Phase {
            name: "fmt",
            command: cargo(&["fmt", "--all", "--", "--check"]),
        },
        // Default members only: agent-ebpf builds for bpfel-unknown-none
        // alone and is linted for that target in the next phase.
        Phase {
            name: "clippy",
            command: cargo(&["clippy", "--all-targets", "--", "-D", "warnings"]),
        },
        Phase {
            name: "clippy (ebpf)",
            command: ebpf_clippy(ws),
        },
        Phase {
            name: "build",
            command: cargo(&["build", "-p", "interlock"]),
        },
        Phase {
            name: "unit tests",
            command: cargo(&[
                "test",
                "--workspace",
                "--exclude",
                "interlock-tests",
                "--exclude",
                "agent-ebpf",
            ]),
        },
        Phase {
            name: "integration tests",
            command: integration,
        },
    ]
}

/// Clippy on the eBPF crate for its real target, with the pinned nightly
/// (the same toolchain aya-build uses), in a target dir of its own.
fn ebpf_clippy(ws: &Workspace) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(ws.root().join("agent-ebpf"))
        .arg(format!("+{}", setup::EBPF_TOOLCHAIN))
        .args([
            "clippy",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--target-dir",
        ])
        .arg(ws.target_dir().join("ebpf-clippy"))
        .args(["--", "-D", "warnings"]);
    cmd
}

pub(crate) fn cmd(args: &Args, ws: &Workspace) -> Result<()> {
    let mut timings = Vec::new();

    let started = Instant::now();
    let result = setup::ensure_setup(ws);
    timings.push(("setup", started.elapsed(), result.is_ok()));
    if let Err(err) = result {
        print_summary(&timings);
        bail!("phase `setup` failed: {err:#}");
    }

    for mut phase in phases(ws, args.filter.as_deref()) {
        eprintln!("==> {}", phase.name);
        let started = Instant::now();
        let result = util::run(&mut phase.command);
        timings.push((phase.name, started.elapsed(), result.is_ok()));
        if let Err(err) = result {
            print_summary(&timings);
            bail!("phase `{}` failed: {err:#}", phase.name);
        }
    }
    print_summary(&timings);
    eprintln!("all phases passed");
    Ok(())
}

fn print_summary(timings: &[(&str, Duration, bool)]) {
    eprintln!();
    eprintln!("{:<20} {:>9}  result", "phase", "seconds");
    for (name, took, ok) in timings {
        let result = if *ok { "ok" } else { "FAILED" };
        eprintln!("{name:<20} {:>9.1}  {result}", took.as_secs_f64());
    }
}
