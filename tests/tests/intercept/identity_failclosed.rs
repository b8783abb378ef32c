//! Identity that fails closed: a forked child connects on a socket its parent
//! keeps and exits before the daemon looks it up, so its cgroup cannot be
//! read. Block and approval rules on the cgroup still apply, allow rules do
//! not, and no local approver can decide its holds (any of them could be in
//! its cgroup). The daemon is frozen (cgroup v2 freezer) while the child
//! connects and is reaped, so it looks the child up only once it is gone.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, Stdio},
};

use anyhow::{Context as _, Result};
use interlock_tests::*;
use serde_json::Value;

/// `svc` blocks the scope's processes by cgroup; `held` needs an approval
/// for them; `open` only lets the scope's processes in.
fn policy(scope: &str, svc: u16, held: u16, open: u16) -> String {
    format!(
        "version: 1
targets:
  - {{name: svc, protocol: tcp, match: [{{address: 127.0.0.2, port: {svc}}}]}}
  - {{name: held, protocol: tcp, match: [{{address: 127.0.0.2, port: {held}}}]}}
  - {{name: open, protocol: tcp, default: block, match: [{{address: 127.0.0.2, port: {open}}}]}}
rules:
  - name: jobs-blocked
    match: {{target: [svc], cgroup: ['{scope}']}}
    action: block
    message: jobs may not reach svc
  - name: jobs-held
    match: {{target: [held], cgroup: ['{scope}']}}
    action: require_approval
    approval: {{approvers: {{users: [daemon]}}, timeout: 60s}}
  - name: jobs-may-open
    match: {{target: [open], cgroup: ['{scope}']}}
    action: allow
"
    )
}

/// A `testclient forked` connection to `addr` made while `daemon_cg` is
/// frozen: returns the client (parent, waiting for a line on stdin) and the
/// pid of the child that connected and is gone, after thawing the daemon.
fn forked_client(daemon_cg: &TestCgroup, cg: &TestCgroup, addr: &str) -> Result<(Child, u32)> {
    daemon_cg.freeze(true)?;
    let spawned = cg
        .command(&testclient(), &["forked", addr, "smuggled"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let first = spawned.map_err(anyhow::Error::from).and_then(|mut c| {
        let mut line = String::new();
        let out = c.stdout.take().context("stdout")?;
        let mut out = BufReader::new(out);
        out.read_line(&mut line)?;
        c.stdout = Some(out.into_inner());
        Ok((c, line))
    });
    // Thawed whatever happened, or the daemon stays frozen.
    daemon_cg.freeze(false)?;
    let (mut client, line) = first?;
    let pid = line
        .trim()
        .strip_prefix("connected ")
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("testclient forked said `{line}`"))?;
    client.stdin.as_mut().context("stdin")?.write_all(b"go\n")?;
    Ok((client, pid))
}

fn output(c: Child) -> Result<String> {
    let out = c.wait_with_output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The `session_started` event of the session whose process is `pid`.
fn started_by(d: &Daemon, pid: u32) -> Result<Value> {
    let ev = d.wait_events(&format!("session of pid {pid}"), |e| {
        of_type(e, "session_started")
            .iter()
            .any(|s| s["identity"]["process"]["tgid"] == pid)
    })?;
    Ok(of_type(&ev, "session_started")
        .into_iter()
        .find(|s| s["identity"]["process"]["tgid"] == pid)
        .cloned()
        .unwrap_or_default())
}

#[test]
fn a_process_gone_before_lookup_gets_restrictions_not_permissions() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let svc = EchoServer::start("127.0.0.2:0")?;
    let held = EchoServer::start("127.0.0.2:0")?;
    let open = EchoServer::start("127.0.0.2:0")?;
    let cg = TestCgroup::new("fc-jobs")?;
    let daemon_cg = TestCgroup::new("fc-daemon")?;
    let text = policy(
        cg.scope(),
        svc.addr.port(),
        held.addr.port(),
        open.addr.port(),
    );
    let mut d = Daemon::prepare(DaemonSpec::with_policy(&cg, &text, &[]))?;
    let cmd = d.command_in(Some(&daemon_cg));
    d.spawn_with(cmd)?;
    let (svc_addr, held_addr, open_addr) = (
        svc.addr.to_string(),
        held.addr.to_string(),
        open.addr.to_string(),
    );

    // A live process: its cgroup is read and every rule is decided on it.
    let live = client_in(&cg, &["echo", &svc_addr, "live"], &[])?;
    assert!(live.starts_with("err "), "{live}");
    let live = client_in(&cg, &["echo", &open_addr, "live"], &[])?;
    assert!(live.ends_with(" live"), "{live}\n{}", d.log());

    // Gone before the lookup: the block on its cgroup still applies...
    let (client, pid) = forked_client(&daemon_cg, &cg, &svc_addr)?;
    let out = output(client)?;
    assert!(
        out.starts_with("err "),
        "the forked child got through: {out}"
    );
    let s = started_by(&d, pid)?;
    assert_eq!(s["identity"]["process"]["cgroup"], Value::Null, "{s:#}");
    assert_eq!(s["decision"]["action"], "blocked", "{s:#}");
    assert_eq!(s["decision"]["rule"], "jobs-blocked", "{s:#}");
    assert_eq!(svc.connections(), 0, "svc was reached");

    // ...and the allow on its cgroup does not: the target's default blocks.
    let (client, pid) = forked_client(&daemon_cg, &cg, &open_addr)?;
    let out = output(client)?;
    assert!(
        out.starts_with("err "),
        "allowed on an unknown cgroup: {out}"
    );
    let s = started_by(&d, pid)?;
    assert_eq!(s["decision"]["action"], "blocked", "{s:#}");
    assert_eq!(s["decision"]["rule"], Value::Null, "{s:#}");

    // An approval rule on its cgroup holds it, and no local user can decide
    // (the approver may be in the requester's cgroup, which nobody can read).
    let (client, pid) = forked_client(&daemon_cg, &cg, &held_addr)?;
    let ev = d.wait_events_long("a hold", |e| !of_type(e, "approval_requested").is_empty())?;
    let hold = of_type(&ev, "approval_requested")[0];
    assert_eq!(hold["approval"]["requester"]["tgid"], pid, "{hold:#}");
    let id = hold["approval"]["id"].as_str().unwrap_or_default();
    let r = d.cli_as("daemon", None, &["approvals", "approve", id])?;
    assert!(!r.ok, "approved a requester nobody can tell apart: {r:?}");
    assert!(
        r.stderr.contains("requester's cgroup is unknown"),
        "{}",
        r.stderr
    );
    assert_eq!(held.connections(), 0, "held was reached");
    let mut client = client;
    client.kill()?;
    client.wait()?;

    // `policy explain` shows the same reasoning, naming the unknown fact.
    let policy_path = d.policy_path().display().to_string();
    let r = d.cli(&[
        "policy",
        "explain",
        "--policy",
        &policy_path,
        "--target",
        "svc",
        "--unknown",
        "cgroup",
    ])?;
    assert!(!r.ok, "{r:?}");
    assert!(r.stdout.contains("cgroup unknown"), "{}", r.stdout);
    assert!(r.stdout.contains("fail closed"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("decision: block (\"jobs may not reach svc\"), by rule `jobs-blocked`"),
        "{}",
        r.stdout
    );
    Ok(())
}
