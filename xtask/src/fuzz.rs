//! `cargo xtask fuzz`: builds and runs the cargo-fuzz targets in `fuzz/`
//! (the PostgreSQL frame, startup and message decoders, the SQL classifier,
//! the SFTP tracker) on the pinned nightly, at the lowest CPU priority,
//! installing cargo-fuzz if it is missing. Each target starts from the
//! seeds in `fuzz/seeds/<target>` and keeps what it finds in
//! `fuzz/corpus/<target>`; crashes land in `fuzz/artifacts/<target>`.
//! Not part of CI.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    setup::{self, EBPF_TOOLCHAIN},
    util::{self, Workspace},
};

/// Every target, in the order they run.
pub(crate) const TARGETS: [&str; 5] = ["pg_frames", "pg_startup", "pg_message", "sql", "sftp"];

/// Options of `cargo xtask fuzz`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Seconds each target runs.
    #[arg(long, default_value_t = 60)]
    secs: u64,
    /// Targets to run (default: all).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    targets: Vec<String>,
}

/// What one target's run came to.
struct Outcome {
    target: String,
    runs: Option<u64>,
    crashed: bool,
}

pub(crate) fn cmd(args: &Args, ws: &Workspace) -> Result<()> {
    setup::ensure_setup(ws)?;
    ensure_cargo_fuzz()?;
    let targets: Vec<String> = if args.targets.is_empty() {
        TARGETS.iter().map(|t| t.to_string()).collect()
    } else {
        args.targets.clone()
    };
    let mut outcomes = Vec::new();
    for t in &targets {
        outcomes.push(run(ws, t, args.secs)?);
    }
    println!("\nfuzz: {} s per target", args.secs);
    for o in &outcomes {
        println!(
            "fuzz: {:<11} {:>12} runs  {}",
            o.target,
            o.runs.map_or("?".into(), |r| r.to_string()),
            if o.crashed {
                format!("FINDING (see fuzz/artifacts/{})", o.target)
            } else {
                "no finding".into()
            }
        );
    }
    if outcomes.iter().any(|o| o.crashed) {
        bail!("a fuzz target found a crash");
    }
    Ok(())
}

fn ensure_cargo_fuzz() -> Result<()> {
    let installed = util::probe(Command::new("cargo").args(["fuzz", "--version"]))?
        .is_some_and(|o| o.status.success());
    if !installed {
        util::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// `nice -n 19 cargo +<nightly> fuzz run T corpus seeds -- -max_total_time=S`.
fn run(ws: &Workspace, target: &str, secs: u64) -> Result<Outcome> {
    let fuzz = ws.root().join("fuzz");
    let corpus = fuzz.join("corpus").join(target);
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("cannot create {}", corpus.display()))?;
    let seeds = fuzz.join("seeds").join(target);
    let mut cmd = Command::new("nice");
    cmd.current_dir(&fuzz)
        .args([
            "-n",
            "19",
            "cargo",
            &format!("+{EBPF_TOOLCHAIN}"),
            "fuzz",
            "run",
            target,
        ])
        .arg(&corpus)
        .arg(&seeds)
        .args([
            "--".to_string(),
            format!("-max_total_time={secs}"),
            "-rss_limit_mb=2048".into(),
            "-print_final_stats=1".into(),
        ])
        // The decoders do not need the eBPF object (agent/build.rs).
        .env("AYA_BUILD_SKIP", "1")
        .stderr(Stdio::piped());
    if std::env::var_os("LIBCLANG_PATH").is_none() {
        cmd.env("LIBCLANG_PATH", "/usr/lib/llvm-22/lib");
    }
    eprintln!(
        "$ (in fuzz/) nice -n 19 cargo +{EBPF_TOOLCHAIN} fuzz run {target} ... -max_total_time={secs}"
    );
    let mut child = cmd.spawn().context("cannot start cargo fuzz")?;
    let mut runs = None;
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if let Some(n) = executions(&line) {
                runs = Some(n);
            }
        }
    }
    let status = child.wait()?;
    Ok(Outcome {
        target: target.to_string(),
        runs,
        crashed: !status.success(),
    })
}

/// The executions libFuzzer reports: `stat::number_of_executed_units: N`
/// (final stats) or `Done N runs in S second(s)`.
fn executions(line: &str) -> Option<u64> {
    if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
        return n.trim().parse().ok();
    }
    line.strip_prefix("Done ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzers_execution_counts() {
        assert_eq!(
            executions("stat::number_of_executed_units: 123456"),
            Some(123456)
        );
        assert_eq!(executions("Done 9876 runs in 60 second(s)"), Some(9876));
        assert_eq!(executions("#4096\tpulse  cov: 10 ft: 12"), None);
    }

    #[test]
    fn every_target_has_a_file_and_seeds() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        for t in TARGETS {
            assert!(
                root.join("fuzz_targets").join(format!("{t}.rs")).is_file(),
                "{t}"
            );
            assert!(manifest.contains(&format!("name = \"{t}\"")), "{t}");
            let seeds = std::fs::read_dir(root.join("seeds").join(t))
                .unwrap()
                .count();
            assert!(seeds > 0, "{t} has no seeds");
        }
    }
}
