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

/// A file `name` holding `text` in a fresh directory, removed with the returned guard.
fn temp_file(name: &str, text: &str) -> Result<(tempfile::TempDir, std::path::PathBuf)> {
    let dir = interlock_tests::scratch("interlock-cli")?;
    let p = dir.path().join(name);
    std::fs::write(&p, text)?;
    Ok((dir, p))
}

#[test]
fn policy_check_reports_file_line_and_column() -> Result<()> {
    if interlock_bin().is_err() {
        return Ok(());
    }
    let good = workspace().join("policies/default.yaml");
    let (ok, out, _) = interlock(&["policy", "check", &good.display().to_string()])?;
    assert!(ok && out.contains("ok"), "{out}");

    let (_bad_dir, bad) = temp_file(
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

/// Every kind of semantic error names the line and column of the node it
/// is about, also when a rule's name contains a target's.
#[test]
fn policy_check_places_every_semantic_error() -> Result<()> {
    if interlock_bin().is_err() {
        return Ok(());
    }
    let target = "  - {name: db, protocol: tcp, match: [{port: 5432}]}\n";
    for (text, at, needle) in [
        (
            "version: 3\n".to_string(),
            "1:10",
            "version 3 is not supported",
        ),
        (
            format!(
                "version: 1\ntargets:\n{target}  - name: db\n    protocol: tcp\n    match: [{{port: 1}}]\n"
            ),
            "4:11",
            "target `db` is defined twice",
        ),
        (
            "version: 1\ntargets:\n  - name: ''\n    protocol: tcp\n    match: [{port: 1}]\n"
                .to_string(),
            "3:11",
            "empty name",
        ),
        (
            format!(
                "version: 1\ntargets:\n{target}rules:\n  - name: db-readers-dbx\n    action: allow\n    match:\n      target: [db, dbx]\n"
            ),
            "8:20",
            "target `dbx`",
        ),
        (
            format!(
                "version: 1\ntargets:\n{target}rules:\n  - {{name: db, action: allow}}\n  - {{name: db, action: block}}\n"
            ),
            "6:12",
            "rule `db` is defined twice",
        ),
        (
            format!(
                "version: 1\ntargets:\n{target}rules:\n  - name: db\n    action: require_approval\n    approval:\n      approvers: {{users: []}}\n"
            ),
            "8:18",
            "nobody could approve",
        ),
    ] {
        let (_f_dir, f) = temp_file("p.yaml", &text)?;
        let fs = f.display().to_string();
        let (ok, _, err) = interlock(&["policy", "check", &fs])?;
        assert!(!ok, "{text}");
        assert!(err.starts_with(&format!("{fs}:{at}: ")), "{text}\n{err}");
        assert!(err.contains(needle), "{text}\n{err}");
    }
    Ok(())
}

#[test]
fn webhooks_without_secrets_are_refused_naming_the_endpoint() -> Result<()> {
    if interlock_bin().is_err() {
        return Ok(());
    }
    let (_policy_dir, policy) = temp_file("p.yaml", &tcp_policy("x", &[("127.0.0.2", 9)]))?;
    let state = policy.with_file_name("state");
    let base = [
        "run",
        "--policy",
        policy.to_str().unwrap_or_default(),
        "--state-dir",
        state.to_str().unwrap_or_default(),
    ];
    let run = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        interlock(&a)
    };
    let (ok, _, err) = run(&["--webhook", "http://127.0.0.56:9/hook"])?;
    assert!(!ok, "{err}");
    assert!(
        err.contains("webhook http://127.0.0.56:9/hook has no secrets")
            && err.contains(",secret=PATH"),
        "{err}"
    );
    let (ok, _, err) = run(&["--webhook", "http://127.0.0.56:9/hook,secret="])?;
    assert!(
        !ok && err.contains("needs the path of a secret file"),
        "{err}"
    );
    let missing = state.with_file_name("no-such.secret");
    let spec = format!("http://127.0.0.56:9/hook,secret={}", missing.display());
    let (ok, _, err) = run(&["--webhook", &spec])?;
    assert!(
        !ok && err.contains(&format!(
            "cannot read webhook secret file {}",
            missing.display()
        )),
        "{err}"
    );
    assert!(!state.join("audit").exists(), "nothing started");
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

    let (_policy_dir, policy) = temp_file("p.yaml", &tcp_policy("x", &[("127.0.0.2", 9)]))?;
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
    let (_p_dir, p) = temp_file(
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
