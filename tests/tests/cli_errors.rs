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

#[test]
fn policy_explain_names_the_deciding_rule_and_why() -> Result<()> {
    if interlock_bin().is_err() {
        return Ok(());
    }
    let p = temp_file(
        "explain.yaml",
        "version: 1
targets:
  - {name: db, protocol: tcp, match: [{port: 5432}]}
rules:
  - {name: ci-may-read, action: allow, match: {user: [ci], statement: [read]}}
  - {name: no-truncate, action: block, message: use a migration, match: {statement: [truncate]}}
  - {name: writes-need-a-human, action: require_approval, approval: {approvers: {groups: [sre]}}, match: {statement: [write]}}
  - {name: runner-only, action: block, match: {ancestor_exe: ['**/bash']}}
",
    )?;
    let ps = p.display().to_string();
    let base = [
        "policy", "explain", "--policy", &ps, "--target", "db", "--user", "ci", "--uid", "1001",
    ];
    let run = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        interlock(&a)
    };
    let (ok, out, _) = run(&["--class", "write", "--class", "truncate"])?;
    assert!(!ok, "a blocked request exits non-zero");
    assert!(
        out.contains("decision: block (\"use a migration\"), by rule `no-truncate`"),
        "{out}"
    );
    assert!(out.contains("applies  rule writes-need-a-human"), "{out}");
    let (ok, out, _) = run(&["--class", "read"])?;
    assert!(ok && out.contains("by rule `ci-may-read`"), "{out}");
    let (_, out, _) = run(&["--class", "write"])?;
    assert!(out.contains("decision: require approval"), "{out}");
    // Session scope: the identity rule decides, statement rules are skipped.
    let (ok, out, _) = run(&["--ancestor-exe", "/usr/bin/bash"])?;
    assert!(!ok && out.contains("by rule `runner-only`"), "{out}");
    assert!(out.contains("skipped  rule ci-may-read"), "{out}");
    let (ok, out, _) = run(&[])?;
    assert!(ok && out.contains("the target's default"), "{out}");
    // Forwarding no rule allows is refused, and explain says why.
    let (ok, out, _) = run(&["--kind", "port_forward", "--command", "10.0.0.1:5432"])?;
    assert!(!ok, "{out}");
    assert!(
        out.contains("decision: block (\"no rule allows port_forward: forwarding is denied unless a rule allows it\"), by the default for forwarding"),
        "{out}"
    );
    let (ok, out, _) = run(&["--kind", "exec", "--command", "ls"])?;
    assert!(
        ok && out.contains("the default (allowed: its session was)"),
        "{out}"
    );
    let (ok, _, err) = interlock(&["policy", "explain", "--policy", &ps, "--target", "nope"])?;
    assert!(
        !ok && err.contains("target `nope` is not in the policy"),
        "{err}"
    );
    Ok(())
}
