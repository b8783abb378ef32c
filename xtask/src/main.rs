//! Developer tasks cargo cannot do alone: host set-up, the privileged run, the CI pipeline, fuzzing.

mod bench;
mod build_cmd;
mod fuzz;
mod install;
mod lab;
mod run;
mod setup;
mod test;
mod util;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::util::Workspace;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Developer tasks for interlock"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install and mount what interlock needs on a Debian bookworm host (run as root).
    Setup(setup::Args),
    /// Set up, then `cargo build -p interlock`.
    Build(build_cmd::Args),
    /// Set up, build, run the daemon with policies/default.yaml, then detach it (root).
    Run(run::Args),
    /// Set up, then fmt, clippy, build, unit tests and privileged integration tests.
    Test(test::Args),
    /// Set up, build release, measure interception overhead against a baseline (root).
    Bench(bench::Args),
    /// Install as a systemd service: binary, policy, unit, state dir (root; or --root DIR).
    Install(install::Args),
    /// Build and run the cargo-fuzz targets (nightly; installs cargo-fuzz; not in CI).
    Fuzz(fuzz::Args),
    /// VMs with distribution kernels: guest image, runs, smoke suite, Vagrant box (root).
    Lab(lab::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(&cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(task: &Task) -> Result<ExitCode> {
    let ws = Workspace::locate()?;
    match task {
        Task::Setup(args) => setup::cmd(args, &ws)?,
        Task::Build(args) => build_cmd::cmd(args, &ws)?,
        Task::Run(args) => return run::cmd(args, &ws),
        Task::Test(args) => test::cmd(args, &ws)?,
        Task::Bench(args) => bench::cmd(args, &ws)?,
        Task::Install(args) => install::cmd(args, &ws)?,
        Task::Fuzz(args) => fuzz::cmd(args, &ws)?,
        Task::Lab(args) => return lab::cmd(args, &ws),
    }
    Ok(ExitCode::SUCCESS)
}
