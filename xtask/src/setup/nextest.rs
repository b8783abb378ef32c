//! cargo-nextest, the runner `cargo xtask test` runs the integration tests
//! with: it enforces the time limits of `.config/nextest.toml`, so a
//! hanging test fails by name instead of hanging CI.

use std::env;
use std::process::Command;

use anyhow::Result;

use super::Step;
use super::linker::{cargo_outside_workspace, workspace_channel};
use crate::util::{self, Workspace};

/// The version installed when none (or an older one) is found. It is also
/// `nextest-version` in `.config/nextest.toml`, so an older nextest run by
/// hand refuses with a clear message instead of misreading the config.
const VERSION: &str = "0.9.143";

pub(super) struct Nextest {
    /// The workspace's stable channel, so `cargo install` uses it from outside the workspace.
    channel: Option<String>,
}

impl Nextest {
    pub(super) fn new(ws: &Workspace) -> Self {
        Self {
            channel: workspace_channel(ws),
        }
    }

    fn install_command(&self) -> Command {
        let mut cmd = cargo_outside_workspace(self.channel.as_deref());
        // --locked: the dependency versions nextest was released and tested with.
        cmd.args(["install", "--locked", "cargo-nextest", "--version", VERSION]);
        cmd
    }
}

/// The version in `cargo nextest --version` output (`cargo-nextest 0.9.143 (...)`).
fn reported_version(output: &str) -> Option<Vec<u64>> {
    let first = output.lines().next()?;
    let mut words = first.split_whitespace();
    if words.next()? != "cargo-nextest" {
        return None;
    }
    parse(words.next()?)
}

/// `a.b.c` as numbers; None for anything else (pre-release suffixes included).
fn parse(version: &str) -> Option<Vec<u64>> {
    let parts: Option<Vec<u64>> = version.split('.').map(|p| p.parse().ok()).collect();
    parts.filter(|p| p.len() == 3)
}

/// Whether an installed version is at least the pinned one.
fn new_enough(installed: &[u64]) -> bool {
    parse(VERSION).is_some_and(|wanted| installed >= wanted.as_slice())
}

impl Step for Nextest {
    fn name(&self) -> &'static str {
        "cargo-nextest"
    }

    fn is_done(&self) -> Result<bool> {
        // `cargo nextest` finds cargo-nextest on PATH or in cargo's bin directory.
        let mut cmd = Command::new("cargo");
        cmd.current_dir(env::temp_dir())
            .args(["nextest", "--version"]);
        let Some(out) = util::probe(&mut cmd)? else {
            return Ok(false);
        };
        Ok(out.status.success()
            && reported_version(&String::from_utf8_lossy(&out.stdout))
                .is_some_and(|v| new_enough(&v)))
    }

    fn describe_fix(&self) -> String {
        util::render(&self.install_command())
    }

    fn apply(&self) -> Result<()> {
        util::run(&mut self.install_command())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_version_nextest_reports() {
        let out = "cargo-nextest 0.9.143 (60fa45f63 2026-08-04)\nrelease: 0.9.143\n";
        assert_eq!(reported_version(out), Some(vec![0, 9, 143]));
        assert_eq!(
            reported_version("error: no such command: `nextest`\n"),
            None
        );
        assert_eq!(reported_version(""), None);
    }

    #[test]
    fn older_versions_are_not_enough() {
        assert!(new_enough(&[0, 9, 143]));
        assert!(new_enough(&[0, 9, 151]));
        assert!(new_enough(&[1, 0, 0]));
        assert!(!new_enough(&[0, 9, 99]));
        assert!(!new_enough(&[0, 8, 200]));
    }

    #[test]
    fn installs_the_pinned_version_locked() {
        let line = util::render(
            &Nextest {
                channel: Some("stable".into()),
            }
            .install_command(),
        );
        assert!(line.contains("RUSTUP_TOOLCHAIN=stable"), "{line}");
        assert!(
            line.ends_with("cargo install --locked cargo-nextest --version 0.9.143"),
            "{line}"
        );
    }

    #[test]
    fn the_config_requires_the_pinned_version() {
        let config =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.config/nextest.toml");
        let text = std::fs::read_to_string(&config).unwrap_or_default();
        assert!(
            text.contains(&format!("nextest-version = {{ required = \"{VERSION}\" }}")),
            "{} must require nextest {VERSION}",
            config.display()
        );
    }
}
