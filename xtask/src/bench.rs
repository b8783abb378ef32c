//! `cargo xtask bench`: what interlock costs the processes it watches. Each scenario runs a
//! workload from `loadgen` inside a fresh cgroup, alternating baseline runs (no daemon, no
//! programs) with subject runs (the release daemon scoped to that cgroup), and reports medians,
//! ranges and subject/baseline ratios as a table, bench/RESULTS.md and bench/results.json.
//! There are no thresholds: the bench reports, people judge.

mod events;
mod machine;
mod memory;
mod pg;
mod render;
mod report;
mod rig;
mod scenario;
mod ssh;
mod stats;

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use self::machine::{Git, Machine};
use self::report::{Report, ScenarioResult};
use self::rig::Rig;
use self::scenario::{DaemonPolicy, Scenario, Sizes, Variant};
use crate::setup;
use crate::util::{self, Workspace};

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// 3 runs per side instead of 7, and workloads a tenth the size.
    #[arg(long)]
    quick: bool,
    /// Run only the scenarios whose name contains TEXT (repeatable), e.g. `--only ssh`.
    #[arg(long, value_name = "TEXT")]
    only: Vec<String>,
}

/// How much work a run does.
struct Plan {
    mode: &'static str,
    repetitions: usize,
    sizes: Sizes,
}

impl Plan {
    fn of(args: &Args) -> Plan {
        if args.quick {
            Plan {
                mode: "quick",
                repetitions: 3,
                sizes: Sizes {
                    connects: 2_000,
                    spawns: 500,
                    pg_transactions: 1_000,
                    pg_connections: 100,
                    pg_rows: 100_000,
                    idle_connections: 150,
                    events: 10_000,
                    ssh_mib: 32,
                    ssh_execs: 5,
                    quick: true,
                },
            }
        } else {
            Plan {
                mode: "full",
                repetitions: 7,
                sizes: Sizes {
                    connects: 10_000,
                    spawns: 3_000,
                    pg_transactions: 5_000,
                    pg_connections: 400,
                    pg_rows: 1_000_000,
                    idle_connections: 1_000,
                    events: 50_000,
                    ssh_mib: 256,
                    ssh_execs: 25,
                    quick: false,
                },
            }
        }
    }
}

pub(crate) fn cmd(args: &Args, ws: &Workspace) -> Result<()> {
    if !util::is_root() {
        bail!(
            "`cargo xtask bench` needs root to load interlock's eBPF programs and create cgroups: run it as root (xtask never calls sudo)"
        );
    }
    setup::ensure_setup(ws)?;
    let mut cargo = ws.cargo();
    cargo.args([
        "build",
        "--release",
        "-p",
        "interlock",
        "-p",
        "interlock-tests",
        "--bin",
        "interlock",
        "--bin",
        "loadgen",
        "--bin",
        "pgconns",
        "--bin",
        "eventbench",
    ]);
    util::run(&mut cargo)?;

    let plan = Plan::of(args);
    catch_sigint();
    let started = Instant::now();
    let scenarios = {
        let rig = Rig::new(ws)?;
        eprintln!(
            "bench: {} mode, {} runs per variant; subject runs start\n  $ {}",
            plan.mode,
            plan.repetitions,
            rig.daemon_summary()
        );
        let chosen: Vec<_> = scenario::all(plan.sizes)
            .into_iter()
            .filter(|s| {
                args.only.is_empty() || args.only.iter().any(|o| s.name().contains(o.as_str()))
            })
            .collect();
        if chosen.is_empty() {
            bail!("no scenario name contains any of {:?}", args.only);
        }
        let mut results = Vec::new();
        for scenario in chosen {
            results.push(run_scenario(&rig, scenario.as_ref(), plan.repetitions)?);
        }
        results
        // The rig drops here: detach (if needed), cgroup and scratch directory removed.
    };

    let report = Report::new(
        plan.mode,
        Machine::detect(),
        Git::detect(ws),
        plan.repetitions,
        started.elapsed().as_secs_f64(),
        scenarios,
    );
    println!();
    print!("{}", render::table(&report.scenarios));
    // A partial run must not replace the full results in bench/.
    let out_dir = if args.only.is_empty() {
        ws.root().join("bench")
    } else {
        ws.target_dir().join("bench-partial")
    };
    write_outputs(&out_dir, &report)?;
    eprintln!("bench: done in {:.0} s", report.duration_secs);
    Ok(())
}

/// `repetitions` baseline runs and as many subject runs, alternating, baseline first.
fn run_scenario(rig: &Rig, scenario: &dyn Scenario, repetitions: usize) -> Result<ScenarioResult> {
    eprintln!("==> {}: {}", scenario.name(), scenario.title());
    let started = Instant::now();
    let mut runs = Vec::new();
    for rep in 0..repetitions {
        for variant in [Variant::Baseline, Variant::Subject] {
            if INTERRUPTED.load(Ordering::Relaxed) {
                bail!("interrupted (Ctrl-C); cleaning up");
            }
            let measured = match variant {
                _ if scenario.policy() == DaemonPolicy::NoDaemon => {
                    scenario.measure_side(rig, variant)
                }
                Variant::Baseline => scenario.measure(rig, None),
                Variant::Subject => rig.start_daemon(scenario.policy()).and_then(|daemon| {
                    let measured = scenario.measure(rig, Some(&daemon));
                    // Stopped (and detached) whatever the result: the next baseline needs no programs.
                    let stopped = rig::stop_daemon(daemon);
                    measured.and_then(|m| stopped.map(|()| m))
                }),
            };
            let measurement = measured.with_context(|| {
                format!("{} {} run {}", scenario.name(), variant.name(), rep + 1)
            })?;
            let shown: Vec<String> = measurement
                .values
                .iter()
                .map(|(key, value)| format!("{key}={}", stats::fmt_value(*value)))
                .collect();
            eprintln!(
                "  run {}/{repetitions} {:<8} {}{}",
                rep + 1,
                variant.name(),
                shown.join(" "),
                match measurement.errors {
                    0 => String::new(),
                    n => format!(" ({n} failed)"),
                }
            );
            runs.push((rep, variant, measurement));
        }
    }
    // Shown so that whoever tunes `--quick` sees where its two minutes go.
    eprintln!("  ({:.1} s)", started.elapsed().as_secs_f64());
    ScenarioResult::new(scenario, runs)
}

/// Set by the SIGINT handler; checked before every run.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Ctrl-C stops the daemon and loadgen (a caught signal is reset to its default on exec) but
/// not xtask, which then fails its current run or stops before the next one, and cleans up:
/// detach, cgroup, scratch directory.
fn catch_sigint() {
    let handler = on_sigint as extern "C" fn(libc::c_int);
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}

/// results.json and RESULTS.md in `dir` (bench/ for a whole run).
fn write_outputs(dir: &std::path::Path, report: &Report) -> Result<()> {
    let dir = dir.to_path_buf();
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let json = dir.join("results.json");
    fs::write(&json, report::json(report)?)
        .with_context(|| format!("cannot write {}", json.display()))?;
    let md = dir.join("RESULTS.md");
    fs::write(&md, render::markdown(report))
        .with_context(|| format!("cannot write {}", md.display()))?;
    eprintln!("bench: wrote {} and {}", json.display(), md.display());
    Ok(())
}
