//! `cargo xtask setup`: idempotent set-up of a Debian bookworm host, one step per prerequisite.

mod driver_suites;
mod linker;
mod mounts;
mod nextest;
mod npm;
mod packages;
mod python;
mod toolchain;

pub(crate) use driver_suites::suites_dir;
pub(crate) use toolchain::EBPF_TOOLCHAIN;

use anyhow::{Context, Result, bail};

use crate::util::{self, Workspace};

/// Options of `cargo xtask setup`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Report what is missing and change nothing; exit 1 if anything is missing.
    #[arg(long)]
    check: bool,
}

/// One prerequisite: how to tell it is in place, and how to put it in place.
trait Step {
    fn name(&self) -> &'static str;
    fn is_done(&self) -> Result<bool>;
    /// What `apply` would do, as one line (usually the command it runs).
    fn describe_fix(&self) -> String;
    fn apply(&self) -> Result<()>;
}

/// The steps in the order they must run (bpf-linker builds against the packages' LLVM;
/// cargo-nextest, like it, is built with the workspace's toolchain).
fn steps(ws: &Workspace) -> Vec<Box<dyn Step>> {
    vec![
        Box::new(packages::Packages),
        Box::new(toolchain::EbpfToolchain),
        Box::new(linker::BpfLinker::new(ws)),
        Box::new(nextest::Nextest::new(ws)),
        Box::new(mounts::Bpffs),
        Box::new(mounts::Tracefs),
        Box::new(python::STANDARD_WEBHOOKS),
        Box::new(python::PYDANTIC_OCSF),
        Box::new(python::ASCIINEMA),
        Box::new(npm::OidcProvider::new(ws)),
        // After the packages: it builds psycopg2 against libpq-dev.
        Box::new(driver_suites::Psycopg2Suite::new(ws)),
    ]
}

pub(crate) fn cmd(args: &Args, ws: &Workspace) -> Result<()> {
    // Checking changes nothing, so anyone may ask what is missing.
    preflight(!args.check)?;
    if args.check {
        let missing = check_all(ws)?;
        if missing > 0 {
            bail!("{missing} set-up step(s) missing: run `cargo xtask setup` as root to fix them");
        }
        Ok(())
    } else {
        apply_all(ws)
    }
}

/// Brings the host up to date before build/run/test. Without root nothing can be fixed,
/// so a non-root caller only gets a check that everything is already in place.
pub(crate) fn ensure_setup(ws: &Workspace) -> Result<()> {
    preflight(false)?;
    if util::is_root() {
        return apply_all(ws);
    }
    let missing = check_all(ws)?;
    if missing > 0 {
        bail!(
            "{missing} set-up step(s) missing and fixing them needs root: run `cargo xtask setup` as root"
        );
    }
    Ok(())
}

/// Checks that no step can fix, in order: Linux, root (when fixing is wanted), cgroup2.
/// Each failure is one sentence.
fn preflight(need_root: bool) -> Result<()> {
    if !cfg!(target_os = "linux") {
        bail!("interlock only runs on Linux: its agent loads eBPF programs into the Linux kernel");
    }
    if need_root && !util::is_root() {
        bail!(
            "interlock's set-up needs root: run `cargo xtask setup` as root (it installs Debian packages and mounts bpffs)"
        );
    }
    match mounts::cgroup2_mount()? {
        Some(cgroup2) => report("cgroup2", &format!("ok ({})", cgroup2.target)),
        None => bail!(
            "no cgroup2 filesystem is mounted (none in /proc/mounts): interlock attaches its programs to a cgroup v2 hierarchy"
        ),
    }
    Ok(())
}

/// Reports every step and returns how many are missing.
fn check_all(ws: &Workspace) -> Result<usize> {
    advise();
    let mut missing = 0;
    for step in steps(ws) {
        if step.is_done()? {
            report(step.name(), "ok");
        } else {
            report(step.name(), &format!("missing: {}", step.describe_fix()));
            missing += 1;
        }
    }
    Ok(missing)
}

fn apply_all(ws: &Workspace) -> Result<()> {
    advise();
    for step in steps(ws) {
        if step.is_done()? {
            report(step.name(), "ok");
            continue;
        }
        let fix = step.describe_fix();
        report(step.name(), &format!("fixing: {fix}"));
        step.apply()
            .with_context(|| format!("set-up step `{}` failed", step.name()))?;
        if !step.is_done()? {
            bail!(
                "set-up step `{}` is still not done after `{fix}`",
                step.name()
            );
        }
        report(step.name(), "ok (fixed)");
    }
    Ok(())
}

/// Things worth changing that set-up leaves alone because other software
/// on the host may rely on them.
fn advise() {
    if let Some(advice) = mounts::bpffs_advice() {
        report("bpffs mode", &advice);
    }
}

fn report(name: &str, status: &str) {
    println!("setup: {name:<15} {status}");
}
