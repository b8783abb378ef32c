//! `cargo xtask lab`: interlock on distribution kernels. A Debian 12 guest
//! image built from Debian's packages (bookworm's 6.1 kernel and the
//! backports 6.12), booted in QEMU (software emulation where the host has
//! no usable KVM), with interlock installed inside as the systemd service
//! and a smoke suite run against the guest's own kernel. The same image
//! becomes a Vagrant box for `vagrant/`.
//!
//! Everything is cached under [`lab_dir`] (`/var/cache/interlock-lab`, or
//! `INTERLOCK_LAB_DIR`); a VM's disk is a copy-on-write overlay of the cached
//! image, which never changes. The guests reach nothing outside: QEMU user
//! networking with `restrict=on`, ssh forwarded from a 127.0.0.1 port.

mod bundle;
mod host;
mod image;
mod recipe;
mod run;
mod smoke;
mod vagrant;
mod vm;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::Result;
use clap::Subcommand;

use crate::util::Workspace;

/// Options of `cargo xtask lab`.
#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Subcommand)]
enum LabCommand {
    /// Build the guest image if the cache has none for the current recipe (root).
    Image {
        /// Only say whether the cached image is current (exit 1 if not); change nothing.
        #[arg(long)]
        check: bool,
    },
    /// Boot one VM per kernel, run COMMAND as root inside (default: the
    /// smoke suite), power off; exit with the command's status (root).
    Run(run::Args),
    /// Make the Vagrant box from the image and `vagrant box add` it (root).
    Box(vagrant::Args),
    /// The smoke suite itself; runs inside a lab VM (`lab run` starts it).
    #[command(hide = true)]
    Smoke(smoke::Args),
}

pub(crate) fn cmd(args: &Args, ws: &Workspace) -> Result<ExitCode> {
    match &args.command {
        LabCommand::Image { check } => image::cmd(*check),
        LabCommand::Run(args) => run::cmd(args, ws),
        LabCommand::Box(args) => vagrant::cmd(args, ws).map(|()| ExitCode::SUCCESS),
        LabCommand::Smoke(args) => smoke::cmd(args, ws),
    }
}

/// The kernels the lab boots: bookworm's own and the backports one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kernel {
    /// Debian 12's kernel (`linux-image-amd64` from bookworm).
    #[value(name = "6.1")]
    K6_1,
    /// The bookworm-backports kernel.
    #[value(name = "6.12")]
    K6_12,
}

impl Kernel {
    pub(crate) const ALL: [Kernel; 2] = [Kernel::K6_1, Kernel::K6_12];

    /// "6.1" or "6.12": the series, as users name it.
    pub(crate) fn series(self) -> &'static str {
        match self {
            Kernel::K6_1 => "6.1",
            Kernel::K6_12 => "6.12",
        }
    }

    /// Whether a kernel release string (`uname -r`) is of this series.
    pub(crate) fn matches_release(self, release: &str) -> bool {
        release
            .strip_prefix(self.series())
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('-'))
    }
}

/// Where the lab keeps its images, its private apt state and the Vagrant
/// box: `INTERLOCK_LAB_DIR`, or `/var/cache/interlock-lab`. Shared by every
/// clone on the machine, so a warm cache serves them all.
pub(crate) fn lab_dir() -> PathBuf {
    match std::env::var_os("INTERLOCK_LAB_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from("/var/cache/interlock-lab"),
    }
}

/// The `lab` phase of `cargo xtask test`: the smoke suite on every kernel,
/// the image built first when the cache has none. It is left out when the
/// run is filtered to some integration tests, and outside CI when
/// `INTERLOCK_LAB=0` (under CI it always runs).
pub(crate) fn test_phase(filtered: bool) -> Result<Option<Command>> {
    let skip = std::env::var("INTERLOCK_LAB").is_ok_and(|v| v == "0");
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    if filtered || (skip && !ci) {
        eprintln!("==> lab: skipped (filtered run or INTERLOCK_LAB=0)");
        return Ok(None);
    }
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["lab", "run", "--kernel", "all"]);
    Ok(Some(cmd))
}

fn say(what: &str) {
    println!("lab: {what}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_series_match_releases() {
        assert!(Kernel::K6_1.matches_release("6.1.0-41-amd64"));
        assert!(!Kernel::K6_1.matches_release("6.12.57+deb12-amd64"));
        assert!(Kernel::K6_12.matches_release("6.12.57+deb12-amd64"));
        assert!(!Kernel::K6_12.matches_release("6.1.0-41-amd64"));
        assert!(!Kernel::K6_1.matches_release("6.10.3"));
    }
}
