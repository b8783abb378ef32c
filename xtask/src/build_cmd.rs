//! `cargo xtask build`: set-up, then build the agent (its build.rs builds the eBPF object).

use std::process::Command;

use anyhow::Result;

use crate::setup;
use crate::util::{self, Workspace};

/// Options of `cargo xtask build`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Build with the release profile.
    #[arg(long)]
    pub(crate) release: bool,
}

pub(crate) fn cmd(args: &Args, ws: &Workspace) -> Result<()> {
    setup::ensure_setup(ws)?;
    build(ws, args.release)
}

/// `cargo build -p interlock [--release]`.
pub(crate) fn build(ws: &Workspace, release: bool) -> Result<()> {
    util::run(&mut command(ws, release))
}

/// The command [`build`] runs.
pub(crate) fn command(ws: &Workspace, release: bool) -> Command {
    let mut cargo = ws.cargo();
    cargo.args(["build", "-p", "interlock"]);
    if release {
        cargo.arg("--release");
    }
    cargo
}
