//! Bad input on the command line and in policy files: one clear message
//! naming what was wrong, a failing exit status, nothing attached.

use std::process::Command;

use anyhow::Result;
use interlock_tests::*;

fn interlock(args: &[&str]) -> Result<(bool, String, String)> {
    let out = Command::new(interlock_bin()?).args(args).output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn temp_file(name: &str, text: &str) -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(unique("interlock-cli"));
    std::fs::create_dir_all(&dir)?;
    let p = dir.join(name);
    std::fs::write(&p, text)?;
    Ok(p)
}

#[test]
fn policy_check_reports_file_line_and_column() -> Result<()> {
    if interlock_bin().is_err() {
        return Ok(());
    }
    let good = workspace().join("policies/default.yaml");
    let (ok, out, _) = interlock(&["policy", "check", &good.display().to_string()])?;
    assert!(ok && out.contains("ok"), "{out}");

    let bad = temp_file(
        "bad.yaml",
        "version: 1\ntargets:\n  - name: db\n    protocol: tcp\n    match:\n      - { address: 300.1.1.1, port: 5432 }\n",
    )?;
    let bad_s = bad.display().to_string();
    let (ok, _, err) = interlock(&["policy", "check", &bad_s])?;
    assert!(!ok);
    assert!(
        err.contains(&format!("{bad_s}:6:")),
        "position missing: {err}"
    );
    assert!(err.contains("300.1.1.1"), "the bad value is named: {err}");
    Ok(())
}

#[test]
fn run_refuses_bad_policy_and_bad_scope_with_one_clear_line() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let instance = unique("cli");
    let (ok, _, err) = interlock(&[
        "run",
        "--policy",
        "/nonexistent/policy.yaml",
        "--instance",
        &instance,
    ])?;
    assert!(!ok);
    assert!(
        err.contains("cannot read policy file /nonexistent/policy.yaml"),
        "{err}"
    );

    let policy = temp_file("p.yaml", &tcp_policy("x", &[("127.0.0.2", 9)]))?;
    let state = policy.with_file_name("state");
    let (ok, _, err) = interlock(&[
        "run",
        "--policy",
        &policy.display().to_string(),
        "--instance",
        &instance,
        "--state-dir",
        &state.display().to_string(),
        "--scope",
        "/no-such-cgroup-interlock",
    ])?;
    assert!(!ok);
    assert!(
        err.contains("scope cgroup") && err.contains("no-such-cgroup-interlock"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !std::path::Path::new("/sys/fs/bpf/interlock")
            .join(&instance)
            .exists(),
        "nothing attached"
    );

    let (ok, _, err) = interlock(&["run", "--failure-mode", "sometimes"])?;
    assert!(!ok && err.contains("sometimes"), "{err}");
    Ok(())
}
