//! `cargo xtask test`: the whole pipeline CI runs, phase by phase, stopping at the first failure.
//!
//! The integration tests run under cargo-nextest with the time limits of
//! `.config/nextest.toml`, so a hanging test is killed and named instead of
//! hanging the run; the runner then prints each killed test's daemon log
//! (see `report`). Before them, a self-check proves that on this machine:
//! a deliberately hanging test is killed and named within its limit, and
//! its daemon dies with it.

mod beside;
mod report;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::setup;
use crate::util::{self, Workspace};

/// The directory the test harness records its daemons in (harness/src/daemon.rs).
const RECORDS_ENV: &str = "INTERLOCK_TEST_RECORDS";
/// The deliberately hanging test (ignored by default) and its nextest profile.
const HANG_TEST: &str =
    "binary(harness_time_limit) and test(=a_hanging_test_is_killed_by_the_runner)";
const HANG_PROFILE: &str = "hang-check";
/// The hang-check profile's limit (period x terminate-after + grace-period)
/// plus room for starting the test process on a loaded machine.
const HANG_LIMIT_SECS: f64 = 5.0 * 2.0 + 2.0 + 20.0;

/// Options of `cargo xtask test`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Only run the integration tests whose name contains this string.
    filter: Option<String>,
    /// Run only the time-limit self-check (after `cargo xtask build`): a
    /// deliberately hanging test must be killed, named and its daemon end.
    #[arg(long, conflicts_with = "filter")]
    time_limit_check: bool,
}

/// A named step of the pipeline.
struct Phase {
    name: &'static str,
    step: Step,
}

/// One step of the pipeline: a command, or the integration tests with
/// their time-limit report.
enum Step {
    Run(Command),
    HangCheck,
    Integration(Option<String>),
}

fn phases(ws: &Workspace, filter: Option<&str>) -> Vec<Phase> {
    let cargo = |args: &[&str]| {
        let mut cmd = ws.cargo();
        cmd.args(args);
        Step::Run(cmd)
    };
    vec![
        Phase {
            name: "fmt",
            step: cargo(&["fmt", "--all", "--", "--check"]),
        },
        // Default members only: agent-ebpf builds for bpfel-unknown-none
        // alone and is linted for that target in the next phase.
        Phase {
            name: "clippy",
            step: cargo(&["clippy", "--all-targets", "--", "-D", "warnings"]),
        },
        Phase {
            name: "clippy (ebpf)",
            step: Step::Run(ebpf_clippy(ws)),
        },
        Phase {
            name: "build",
            step: cargo(&["build", "-p", "interlock"]),
        },
        Phase {
            name: "unit tests",
            step: cargo(&[
                "test",
                "--workspace",
                "--exclude",
                "interlock-tests",
                "--exclude",
                "agent-ebpf",
            ]),
        },
        Phase {
            name: "time-limit check",
            step: Step::HangCheck,
        },
        Phase {
            name: "integration tests",
            step: Step::Integration(filter.map(str::to_string)),
        },
    ]
}

/// `cargo nextest run` of the integration tests with `profile`, the
/// daemon binary and a fresh records directory; returns the command and
/// that directory.
fn nextest(ws: &Workspace, profile: &str) -> Result<(Command, PathBuf)> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let records = ws
        .target_dir()
        .join("itest-records")
        .join(format!("{profile}-{stamp}"));
    std::fs::create_dir_all(&records).with_context(|| format!("create {}", records.display()))?;
    let mut cmd = ws.cargo();
    cmd.args([
        "nextest",
        "run",
        "-p",
        "interlock-tests",
        "--profile",
        profile,
    ])
    .env("INTERLOCK_BIN", ws.interlock_bin(false))
    .env("INTERLOCK_WORKSPACE", ws.root())
    .env("INTERLOCK_DRIVER_SUITES", setup::suites_dir(ws))
    .env(RECORDS_ENV, &records);
    Ok((cmd, records))
}

fn junit(ws: &Workspace, profile: &str) -> PathBuf {
    ws.target_dir()
        .join("nextest")
        .join(profile)
        .join("junit.xml")
}

/// Reports and cleans up after a nextest run: names every test the time
/// limit killed with its daemon's log, and detaches the pins their daemons
/// left. Returns the killed tests.
fn after_run(ws: &Workspace, profile: &str, records: &Path) -> Result<Vec<report::TimedOut>> {
    let junit = std::fs::read_to_string(junit(ws, profile)).unwrap_or_default();
    let timeouts = report::timed_out(&junit);
    let daemons = report::records(records);
    report::print_timeouts(&timeouts, &daemons);
    let detached = report::detach_leftovers(&daemons, &ws.interlock_bin(false))?;
    if !detached.is_empty() {
        eprintln!(
            "detached instances left by killed tests: {}",
            detached.join(", ")
        );
    }
    Ok(timeouts)
}

fn integration(ws: &Workspace, filter: Option<&str>) -> Result<()> {
    let (mut cmd, records) = nextest(ws, "default")?;
    cmd.args(filter);
    let status = util::status(&mut cmd)?;
    let timeouts = after_run(ws, "default", &records)?;
    if !timeouts.is_empty() {
        let names: Vec<String> = timeouts
            .iter()
            .map(|t| format!("{} {}", t.binary, t.test))
            .collect();
        bail!("killed by the time limit: {}", names.join(", "));
    }
    if !status.success() {
        bail!("`{}` failed ({status})", util::render(&cmd));
    }
    Ok(())
}

/// Runs the deliberately hanging test with a short limit and checks that
/// nextest killed it within that limit, named it, and that its daemon did
/// not outlive it.
fn hang_check(ws: &Workspace) -> Result<()> {
    let (mut cmd, records) = nextest(ws, HANG_PROFILE)?;
    // Only its binary is built: the filter picks nothing from the others.
    cmd.args(["--test", "harness_time_limit"]);
    cmd.args(["--run-ignored", "only", "--no-fail-fast", "-E", HANG_TEST]);
    let status = util::status(&mut cmd)?;
    let timeouts = after_run(ws, HANG_PROFILE, &records)?;
    if status.success() {
        bail!("the hanging test passed: the time limit did not apply");
    }
    let [killed] = timeouts.as_slice() else {
        bail!("expected exactly the hanging test to be killed by the time limit, got {timeouts:?}");
    };
    if killed.seconds > HANG_LIMIT_SECS {
        bail!(
            "the hanging test was killed after {:.1} s, beyond its limit ({HANG_LIMIT_SECS} s)",
            killed.seconds
        );
    }
    let daemons = report::records(&records);
    if daemons.is_empty() {
        bail!(
            "the hanging test recorded no daemon in {}",
            records.display()
        );
    }
    // The group kill (or the daemon's parent-death signal) ends it.
    let deadline = Instant::now() + Duration::from_secs(10);
    for d in &daemons {
        let pid = d.pid.context("a daemon record without a pid")?;
        while report::alive(pid) {
            if Instant::now() > deadline {
                bail!("the hanging test's daemon (pid {pid}) outlived the test");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    eprintln!(
        "time-limit check: `{} {}` was killed after {:.1} s and named; its daemon died with it",
        killed.binary, killed.test, killed.seconds
    );
    Ok(())
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
    if args.time_limit_check {
        return hang_check(ws);
    }
    let mut timings = Vec::new();

    let started = Instant::now();
    let result = setup::ensure_setup(ws);
    timings.push(("setup", started.elapsed(), result.is_ok()));
    if let Err(err) = result {
        print_summary(&timings);
        bail!("phase `setup` failed: {err:#}");
    }

    // The lab starts once the build and unit tests passed (its own build
    // of interlock is then a no-op) and runs beside the integration tests.
    let mut lab = crate::lab::test_phase(args.filter.is_some())?;
    let mut beside: Option<beside::Beside> = None;
    for phase in phases(ws, args.filter.as_deref()) {
        if phase.name == "time-limit check"
            && let Some(command) = lab.take()
        {
            let log = ws.target_dir().join("lab").join("phase.log");
            match beside::Beside::start("lab", command, log) {
                Ok(b) => beside = Some(b),
                Err(err) => {
                    timings.push(("lab", Duration::ZERO, false));
                    print_summary(&timings);
                    bail!("phase `lab` failed: {err:#}");
                }
            }
        }
        eprintln!("==> {}", phase.name);
        let started = Instant::now();
        let result = match phase.step {
            Step::Run(mut cmd) => util::run(&mut cmd),
            Step::HangCheck => hang_check(ws),
            Step::Integration(filter) => integration(ws, filter.as_deref()),
        };
        timings.push((phase.name, started.elapsed(), result.is_ok()));
        if let Err(err) = result {
            print_summary(&timings);
            bail!("phase `{}` failed: {err:#}", phase.name);
        }
    }
    if let Some(b) = beside {
        let name = b.name();
        let (took, result) = b.finish();
        timings.push((name, took, result.is_ok()));
        if let Err(err) = result {
            print_summary(&timings);
            bail!("phase `{name}` failed: {err:#}");
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
