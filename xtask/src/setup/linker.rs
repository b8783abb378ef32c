//! bpf-linker, built against the system LLVM 22 (the pinned nightly's LLVM major).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use super::Step;
use crate::util::{self, Workspace};

const VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

pub(super) struct BpfLinker {
    /// The workspace's stable channel, so `cargo install` uses it from outside the workspace.
    channel: Option<String>,
}

impl BpfLinker {
    pub(super) fn new(ws: &Workspace) -> Self {
        Self {
            channel: workspace_channel(ws),
        }
    }

    fn install_command(&self) -> Command {
        let path = env::var("PATH").unwrap_or_default();
        let mut cmd = cargo_outside_workspace(self.channel.as_deref());
        cmd.env("PATH", format!("{LLVM_PREFIX}/bin:{path}"))
            .env("LLVM_PREFIX", LLVM_PREFIX);
        cmd.args(["install", "bpf-linker", "--version", VERSION])
            .args(["--no-default-features", "--features", "llvm-22"]);
        cmd
    }
}

/// The workspace's stable channel (its rust-toolchain.toml), for tools
/// `cargo install` builds from outside the workspace.
pub(super) fn workspace_channel(ws: &Workspace) -> Option<String> {
    let file = ws.root().join("rust-toolchain.toml");
    fs::read_to_string(file)
        .ok()
        .and_then(|t| toolchain_channel(&t))
}

/// `cargo` run from outside the workspace (so its rust-toolchain.toml and
/// config do not apply) on `channel`, for `cargo install`.
pub(super) fn cargo_outside_workspace(channel: Option<&str>) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(env::temp_dir());
    match channel {
        Some(channel) => cmd.env("RUSTUP_TOOLCHAIN", channel),
        None => cmd.env_remove("RUSTUP_TOOLCHAIN"),
    };
    cmd
}

/// The `channel` of a rust-toolchain.toml's `[toolchain]` table.
pub(super) fn toolchain_channel(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        if key.trim() != "channel" {
            return None;
        }
        let value = value.split('#').next()?.trim().trim_matches(['"', '\'']);
        (!value.is_empty()).then(|| value.to_owned())
    })
}

/// Whether `bpf-linker --version` output is exactly the wanted version.
fn reports_version(output: &str, version: &str) -> bool {
    output.split_whitespace().any(|word| word == version)
}

/// bpf-linker on PATH first, then in cargo's bin directory (`cargo install`'s target).
fn candidates() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = env::var_os("PATH")
        .map(|path| {
            env::split_paths(&path)
                .map(|dir| dir.join("bpf-linker"))
                .collect()
        })
        .unwrap_or_default();
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")));
    found.extend(cargo_home.map(|home| home.join("bin").join("bpf-linker")));
    found.retain(|path| path.is_file());
    found
}

impl Step for BpfLinker {
    fn name(&self) -> &'static str {
        "bpf-linker"
    }

    fn is_done(&self) -> Result<bool> {
        for linker in candidates() {
            if let Some(out) = util::probe(Command::new(&linker).arg("--version"))?
                && reports_version(&String::from_utf8_lossy(&out.stdout), VERSION)
            {
                return Ok(true);
            }
        }
        Ok(false)
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
    fn reads_the_channel_of_rust_toolchain_toml() {
        let text =
            "# comment\n[toolchain]\nchannel = \"1.95.0\" # pinned\ncomponents = [\"clippy\"]\n";
        assert_eq!(toolchain_channel(text).as_deref(), Some("1.95.0"));
        assert_eq!(toolchain_channel("[toolchain]\ncomponents = []\n"), None);
    }

    #[test]
    fn matches_the_exact_version_only() {
        assert!(reports_version("bpf-linker 0.13.0\n", VERSION));
        assert!(!reports_version("bpf-linker 0.10.4\n", VERSION));
        assert!(!reports_version("bpf-linker 0.13.01\n", VERSION));
    }

    #[test]
    fn install_command_uses_system_llvm_22() {
        let line = util::render(
            &BpfLinker {
                channel: Some("1.95.0".into()),
            }
            .install_command(),
        );
        assert!(line.contains("LLVM_PREFIX=/usr/lib/llvm-22"), "{line}");
        assert!(line.contains("RUSTUP_TOOLCHAIN=1.95.0"), "{line}");
        assert!(
            line.ends_with(
                "cargo install bpf-linker --version 0.13.0 --no-default-features --features llvm-22"
            ),
            "{line}"
        );
    }
}
