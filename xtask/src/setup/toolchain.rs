//! The pinned nightly that builds agent-ebpf (agent/build.rs names the same toolchain).

use std::process::Command;

use anyhow::{Result, bail};

use super::Step;
use crate::util;

/// Newer nightlies use LLVM 23, which bpf-linker 0.13 (LLVM 22) cannot read.
pub(crate) const EBPF_TOOLCHAIN: &str = "nightly-2026-05-20";

/// Whether `rustup toolchain list` output names the toolchain (any host triple).
fn lists_toolchain(list: &str, toolchain: &str) -> bool {
    list.lines().any(|line| {
        line.strip_prefix(toolchain)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', ' ']))
    })
}

/// Whether `rustup component list --installed` output names the component,
/// bare (`rust-src`) or with its host triple (`clippy-x86_64-unknown-linux-gnu`).
fn lists_component(list: &str, component: &str) -> bool {
    list.lines().any(|line| {
        line.split_whitespace().next().is_some_and(|name| {
            name.strip_prefix(component)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('-') && rest.len() > 1)
        })
    })
}

/// Runs a rustup query; an error exit (e.g. unknown toolchain) reads as an empty list.
fn rustup_query(args: &[&str]) -> Result<String> {
    let Some(out) = util::probe(Command::new("rustup").args(args))? else {
        bail!(
            "`rustup` is not installed: install it from https://rustup.rs, then rerun the set-up"
        );
    };
    if !out.status.success() {
        return Ok(String::new());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn toolchain_installed() -> Result<bool> {
    Ok(lists_toolchain(
        &rustup_query(&["toolchain", "list"])?,
        EBPF_TOOLCHAIN,
    ))
}

/// Components the eBPF build (rust-src, for -Z build-std) and the eBPF lint
/// phase of `cargo xtask test` (clippy) need on the nightly.
const COMPONENTS: [&str; 2] = ["rust-src", "clippy"];

fn components_installed() -> Result<bool> {
    let list = rustup_query(&[
        "component",
        "list",
        "--toolchain",
        EBPF_TOOLCHAIN,
        "--installed",
    ])?;
    Ok(COMPONENTS.iter().all(|c| lists_component(&list, c)))
}

/// The components alone when the toolchain is there, else the whole minimal toolchain.
fn fix_command() -> Command {
    let mut cmd = Command::new("rustup");
    if toolchain_installed().unwrap_or(false) {
        cmd.args(["component", "add"])
            .args(COMPONENTS)
            .args(["--toolchain", EBPF_TOOLCHAIN]);
    } else {
        cmd.args([
            "toolchain",
            "install",
            EBPF_TOOLCHAIN,
            "--profile",
            "minimal",
        ]);
        for c in COMPONENTS {
            cmd.args(["--component", c]);
        }
    }
    cmd
}

pub(super) struct EbpfToolchain;

impl Step for EbpfToolchain {
    fn name(&self) -> &'static str {
        "ebpf-toolchain"
    }

    fn is_done(&self) -> Result<bool> {
        Ok(toolchain_installed()? && components_installed()?)
    }

    fn describe_fix(&self) -> String {
        util::render(&fix_command())
    }

    fn apply(&self) -> Result<()> {
        util::run(&mut fix_command())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_dated_toolchain_for_any_host() {
        let list = "stable-x86_64-unknown-linux-gnu (default)\n\
                    nightly-x86_64-unknown-linux-gnu\n\
                    nightly-2026-05-20-x86_64-unknown-linux-gnu\n\
                    1.95.0-x86_64-unknown-linux-gnu (active)\n";
        assert!(lists_toolchain(list, EBPF_TOOLCHAIN));
        assert!(!lists_toolchain(
            "nightly-x86_64-unknown-linux-gnu\n",
            EBPF_TOOLCHAIN
        ));
        assert!(!lists_toolchain(
            "nightly-2026-05-201-x86_64\n",
            EBPF_TOOLCHAIN
        ));
        assert!(!lists_toolchain("", EBPF_TOOLCHAIN));
    }

    fn list_with_clippy() -> &'static str {
        "cargo-x86_64-unknown-linux-gnu\nclippy-x86_64-unknown-linux-gnu\nrust-src\n"
    }

    #[test]
    fn finds_rust_src_among_installed_components() {
        let list = "cargo-x86_64-unknown-linux-gnu\nrust-src\nrustc-x86_64-unknown-linux-gnu\n";
        assert!(lists_component(list, "rust-src"));
        assert!(lists_component("rust-src (installed)\n", "rust-src"));
        assert!(lists_component(list_with_clippy(), "clippy"));
        assert!(!lists_component("clippy-preview\n", "clippy-x"));
        assert!(!lists_component(list, "clippy"));
        assert!(!lists_component(
            "rust-std-x86_64-unknown-linux-gnu\n",
            "rust-src"
        ));
    }

    /// agent/build.rs builds agent-ebpf with this toolchain; set-up must install that one.
    #[test]
    fn agent_build_script_names_the_same_toolchain() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../agent/build.rs");
        let text = std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{path}: {err}"));
        let quoted = format!("\"{EBPF_TOOLCHAIN}\"");
        assert!(
            text.contains(&quoted),
            "{path} does not name {quoted}: update one of them"
        );
    }
}
