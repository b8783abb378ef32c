//! Debian packages: LLVM 22 for bpf-linker, and the real peers and tools the tests drive.

use std::process::Command;

use anyhow::{Result, bail};

use super::Step;
use crate::util;

/// Every Debian package interlock's build and tests need. Append new ones here.
pub(crate) const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libclang-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "postgresql",
    "postgresql-client",
    "openssh-server",
    "openssh-client",
    "rsync",
    // The PostgreSQL TLS tests make their certificates with it.
    "openssl",
    "bpftool",
    "iproute2",
    "procps",
    "python3",
    "python3-pip",
    // The CPU hog the flow-control tests run beside the relays (relay_flow.rs).
    "stress-ng",
    // pg_config and headers: psycopg2 is built from its sdist for its test suite.
    "libpq-dev",
    // The approvals page's browser tests: headless Chromium driven over WebDriver, and
    // certutil to make a fresh profile trust interlock's CA.
    "chromium",
    "chromium-driver",
    "libnss3-tools",
];

/// What dpkg reports for a fully installed package.
fn is_installed_status(status: &str) -> bool {
    status.trim() == "install ok installed"
}

/// Whether dpkg has the package fully installed; a package dpkg has never heard of is not.
fn is_installed(package: &str) -> Result<bool> {
    let out = util::probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))?;
    let Some(out) = out else {
        bail!("`dpkg-query` is not installed: interlock's set-up supports Debian (bookworm) only");
    };
    Ok(out.status.success() && is_installed_status(&String::from_utf8_lossy(&out.stdout)))
}

fn missing() -> Result<Vec<&'static str>> {
    let mut missing = Vec::new();
    for &package in PACKAGES {
        if !is_installed(package)? {
            missing.push(package);
        }
    }
    Ok(missing)
}

fn install_command(packages: &[&str]) -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "--no-install-recommends"])
        .args(packages);
    cmd
}

pub(super) struct Packages;

impl Step for Packages {
    fn name(&self) -> &'static str {
        "packages"
    }

    fn is_done(&self) -> Result<bool> {
        Ok(missing()?.is_empty())
    }

    fn describe_fix(&self) -> String {
        let packages = missing().unwrap_or_else(|_| PACKAGES.to_vec());
        format!(
            "apt-get update && {}",
            util::render(&install_command(&packages))
        )
    }

    fn apply(&self) -> Result<()> {
        let packages = missing()?;
        if packages.is_empty() {
            return Ok(());
        }
        util::run(Command::new("apt-get").arg("update"))?;
        util::run(&mut install_command(&packages))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_complete_install_counts() {
        assert!(is_installed_status("install ok installed"));
        assert!(is_installed_status("install ok installed\n"));
        assert!(!is_installed_status("deinstall ok config-files"));
        assert!(!is_installed_status("install ok half-configured"));
        assert!(!is_installed_status("unknown ok not-installed"));
        assert!(!is_installed_status(""));
    }

    #[test]
    fn package_list_has_no_duplicates() {
        let mut sorted = PACKAGES.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), PACKAGES.len());
    }

    #[test]
    fn install_command_is_noninteractive_and_minimal() {
        let line = util::render(&install_command(&["bpftool", "procps"]));
        assert_eq!(
            line,
            "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends bpftool procps"
        );
    }
}
