//! Connection-level enforcement on the tcp relay: block refuses, hold keeps
//! the client connected with nothing forwarded until a human decides over
//! the control socket (real CLI, run as other local users), deadlines deny,
//! requesters cannot approve themselves, reloads keep holds alive.

use std::process::{Child, Stdio};

use anyhow::{Context as _, Result, bail};
use interlock_tests::*;
use serde_json::Value;

/// Holds every connection to the target; `daemon` and `root` approve by
/// name, members of group `bin` by group.
fn hold_policy(port: u16, timeout: &str) -> String {
    format!(
        "version: 1
targets:
  - name: svc
    protocol: tcp
    match: [{{address: 127.0.0.2, port: {port}}}]
rules:
  - name: hold-all
    action: require_approval
    approval:
      approvers: {{users: [daemon, root], groups: [bin]}}
      timeout: {timeout}
"
    )
}

/// A client connection in `cg` that sends `msg` and prints the echo.
fn spawn_client(cg: &TestCgroup, addr: &str, msg: &str) -> Result<Child> {
    Ok(cg
        .command(&testclient(), &["echo", addr, msg])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?)
}

fn client_result(c: Child) -> Result<String> {
    let out = c.wait_with_output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Waits for `n` approval_requested events; returns their approval ids.
fn held_ids(d: &Daemon, n: usize) -> Result<Vec<String>> {
    let ev = d.wait_events_long(&format!("{n} holds"), |e| {
        of_type(e, "approval_requested").len() >= n
    })?;
    Ok(of_type(&ev, "approval_requested")
        .iter()
        .map(|e| e["approval"]["id"].as_str().unwrap_or_default().to_string())
        .collect())
}

fn decided(d: &Daemon, id: &str) -> Result<Value> {
    let ev = d.wait_events("decision event", |e| {
        of_type(e, "approval_decided")
            .iter()
            .any(|x| x["approval"]["id"] == id)
    })?;
    Ok(of_type(&ev, "approval_decided")
        .into_iter()
        .find(|x| x["approval"]["id"] == id)
        .cloned()
        .unwrap_or_default())
}

#[test]
fn held_connection_is_relayed_after_approval() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let cg = TestCgroup::new("hold-ok")?;
    let d = Daemon::start(DaemonSpec::with_policy(
        &cg,
        &hold_policy(server.addr.port(), "60s"),
        &[],
    ))?;
    let client = spawn_client(&cg, &server.addr.to_string(), "held-then-approved")?;
    let id = held_ids(&d, 1)?.remove(0);

    let list = d.cli_as("daemon", None, &["approvals", "list"])?;
    assert!(list.ok, "{list:?}");
    assert!(list.stdout.contains(&id), "{}", list.stdout);
    assert!(list.stdout.contains("hold-all"), "{}", list.stdout);
    let show = d.cli_as("daemon", None, &["approvals", "show", &id])?;
    let shown: Value = serde_json::from_str(&show.stdout)?;
    assert_eq!(shown["state"], "pending");
    assert_eq!(shown["request"]["request"]["kind"], "session");
    assert_eq!(shown["request"]["requester"]["uid"], 0);
    // Nothing reached the server while held.
    assert_eq!(
        server.connections(),
        0,
        "the upstream was contacted during the hold"
    );

    let ok = d.cli_as(
        "daemon",
        None,
        &["approvals", "approve", &id, "--reason", "ticket 42"],
    )?;
    assert!(ok.ok, "{ok:?}");
    let out = client_result(client)?;
    assert!(
        out.starts_with("ok echo ") && out.ends_with(" held-then-approved"),
        "{out}"
    );
    let dec = decided(&d, &id)?;
    assert_eq!(dec["approval"]["decision"], "approved");
    assert_eq!(dec["approval"]["by"]["user"], "daemon");
    assert_eq!(dec["approval"]["reason"], "ticket 42");
    assert_eq!(dec["ocsf"]["class_uid"], 3003);
    let ev = d.wait_events("session end", |e| !of_type(e, "session_ended").is_empty())?;
    let started = of_type(&ev, "session_started")[0];
    assert_eq!(started["decision"]["action"], "held");
    assert_eq!(started["decision"]["rule"], "hold-all");
    assert_eq!(of_type(&ev, "session_ended")[0]["outcome"], "closed");
    Ok(())
}

#[test]
fn denied_expired_and_blocked_connections_never_reach_the_server() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let cg = TestCgroup::new("hold-no")?;
    let port = server.addr.port();
    let d = Daemon::start(DaemonSpec::with_policy(&cg, &hold_policy(port, "2s"), &[]))?;
    let addr = server.addr.to_string();

    let denied = spawn_client(&cg, &addr, "x")?;
    let id = held_ids(&d, 1)?.remove(0);
    let r = d.cli_as("bin", None, &["approvals", "deny", &id, "--reason", "no"])?;
    assert!(r.ok, "a member of an approver group may decide: {r:?}");
    assert!(
        client_result(denied)?.starts_with("err"),
        "denied client got data"
    );
    let dec = decided(&d, &id)?;
    assert_eq!(dec["approval"]["decision"], "denied");
    assert_eq!(dec["approval"]["by"]["user"], "bin");

    // Nobody decides: the deadline (2 s) denies.
    let expired = spawn_client(&cg, &addr, "x")?;
    let id2 = held_ids(&d, 2)?.remove(1);
    assert!(client_result(expired)?.starts_with("err"));
    assert_eq!(decided(&d, &id2)?["approval"]["decision"], "expired");
    let late = d.cli_as("daemon", None, &["approvals", "approve", &id2])?;
    assert!(
        !late.ok && late.stderr.contains("already decided"),
        "{late:?}"
    );

    // Block: reload to a blocking rule; the client is refused at once.
    d.write_policy(&format!(
        "version: 1\ntargets:\n  - {{name: svc, protocol: tcp, match: [{{address: 127.0.0.2, port: {port}}}]}}\nrules:\n  - {{name: no-svc, action: block, message: not from CI}}\n"
    ))?;
    d.wait_events("reload", |e| !of_type(e, "policy_reloaded").is_empty())?;
    let blocked = client_in(&cg, &["echo", &addr, "x"], &[])?;
    assert!(blocked.starts_with("err"), "{blocked}");
    let ev = d.wait_events("blocked end", |e| {
        of_type(e, "session_ended")
            .iter()
            .any(|s| s["outcome"] == "blocked")
    })?;
    let end = of_type(&ev, "session_ended")
        .into_iter()
        .find(|s| s["outcome"] == "blocked")
        .cloned()
        .unwrap_or_default();
    assert_eq!(end["error"], "not from CI");
    let sid = end["session_id"].clone();
    let start = of_type(&ev, "session_started")
        .into_iter()
        .find(|s| s["session_id"] == sid)
        .cloned()
        .unwrap_or_default();
    assert_eq!(start["decision"]["action"], "blocked");
    assert_eq!(start["decision"]["rule"], "no-svc");
    assert_eq!(
        server.connections(),
        0,
        "a refused connection reached the server"
    );
    Ok(())
}

#[test]
fn requesters_and_strangers_cannot_decide() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let cg = TestCgroup::new("hold-self")?;
    let d = Daemon::start(DaemonSpec::with_policy(
        &cg,
        &hold_policy(server.addr.port(), "60s"),
        &[],
    ))?;
    let client = spawn_client(&cg, &server.addr.to_string(), "x")?;
    let id = held_ids(&d, 1)?.remove(0);

    // root is a listed approver, but the requester runs as root.
    let r = d.cli_as("root", None, &["approvals", "approve", &id])?;
    assert!(!r.ok && r.stderr.contains("cannot decide its own"), "{r:?}");
    // `daemon` is an approver, but not from inside the requester's cgroup.
    let r = d.cli_as("daemon", Some(&cg), &["approvals", "approve", &id])?;
    assert!(!r.ok && r.stderr.contains("requester's cgroup"), "{r:?}");
    // `nobody` approves nothing and may not even look.
    let r = d.cli_as("nobody", None, &["approvals", "approve", &id])?;
    assert!(!r.ok && r.stderr.contains("not an approver"), "{r:?}");
    let r = d.cli_as("nobody", None, &["approvals", "list"])?;
    assert!(!r.ok && r.stderr.contains("(403)"), "{r:?}");
    // Anyone may read the status; it counts the held request.
    let r = d.cli_as("nobody", None, &["status"])?;
    assert!(r.ok && r.stdout.contains("1 pending"), "{r:?}");
    // Unknown ids are a clear 404.
    let r = d.cli_as("daemon", None, &["approvals", "approve", "0123456789ab"])?;
    assert!(!r.ok && r.stderr.contains("(404)"), "{r:?}");
    // The socket is connectable by every user; authorisation is per request.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(d.socket())?.permissions());
    assert_eq!(mode & 0o777, 0o666);
    // Still pending after all that; a real approver lets it through.
    let r = d.cli_as("daemon", None, &["approvals", "approve", &id])?;
    assert!(r.ok, "{r:?}");
    assert!(client_result(client)?.starts_with("ok echo "));
    Ok(())
}

#[test]
fn hundred_holds_decided_in_random_order() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let cg = TestCgroup::new("hold-100")?;
    let d = Daemon::start(DaemonSpec::with_policy(
        &cg,
        &hold_policy(server.addr.port(), "120s"),
        &[],
    ))?;
    let addr = server.addr.to_string();
    let mut clients = Vec::new();
    for i in 0..100 {
        // 100 decisions, one CLI run each, can take longer than the
        // client's usual 5 s wait for its echo: it waits for the deadline.
        let c = cg
            .command(&testclient(), &["echo", &addr, &format!("m{i}")])
            .env("INTERLOCK_TEST_READ_SECS", "120")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        clients.push((i, c));
    }
    let held = held_ids(&d, 100)?;
    // Map approval id -> the client's message via each hold's session.
    let ev = d.events();
    let mut order: Vec<String> = held.clone();
    // A fixed permutation (LCG) so a failure reproduces.
    let mut x: u64 = 0x2545F4914F6CDD1D;
    for i in (1..order.len()).rev() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        order.swap(i, (x >> 33) as usize % (i + 1));
    }
    let mut approved = std::collections::HashSet::new();
    for (n, id) in order.iter().enumerate() {
        let verb = if n % 3 == 0 { "deny" } else { "approve" };
        let r = d.cli_as("daemon", None, &["approvals", verb, id])?;
        assert!(r.ok, "{verb} {id}: {r:?}");
        if verb == "approve" {
            approved.insert(id.clone());
        }
    }
    // Which client was which hold: the session's client port is in both.
    let session_of = |id: &str| -> String {
        of_type(&ev, "approval_requested")
            .iter()
            .find(|e| e["approval"]["id"] == id)
            .map(|e| e["session_id"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    let approved_sessions: std::collections::HashSet<String> =
        approved.iter().map(|id| session_of(id)).collect();
    let (mut ok, mut refused) = (0, 0);
    for (i, c) in clients {
        let out = client_result(c)?;
        if out.starts_with("ok echo ") && out.ends_with(&format!(" m{i}")) {
            ok += 1;
        } else if out.starts_with("err") {
            refused += 1;
        } else {
            bail!("client {i}: unexpected {out}");
        }
    }
    assert_eq!(ok, approved.len(), "approved clients got their echo");
    assert_eq!(refused, 100 - approved.len());
    // And each approved session really ran; each denied one never did.
    let ev = d.wait_events_long("100 ends", |e| of_type(e, "session_ended").len() == 100)?;
    for end in of_type(&ev, "session_ended") {
        let sid = end["session_id"].as_str().unwrap_or_default();
        let want = if approved_sessions.contains(sid) {
            "closed"
        } else {
            "not_approved"
        };
        assert_eq!(end["outcome"], want, "{end}");
    }
    Ok(())
}

#[test]
fn reload_keeps_holds_and_bad_files_keep_the_old_policy() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let cg = TestCgroup::new("hold-reload")?;
    let port = server.addr.port();
    let d = Daemon::start(DaemonSpec::with_policy(&cg, &hold_policy(port, "60s"), &[]))?;
    let addr = server.addr.to_string();
    let held = spawn_client(&cg, &addr, "kept")?;
    let id = held_ids(&d, 1)?.remove(0);

    // An invalid file: the old policy stays, with the error (and position) recorded.
    d.write_policy(
        "version: 1\ntargets:\n  - name: svc\n    protocol: tcp\n    match: [{port: 0x}]\n",
    )?;
    let ev = d.wait_events("failed reload", |e| {
        !of_type(e, "policy_reload_failed").is_empty()
    })?;
    let failed = of_type(&ev, "policy_reload_failed")[0];
    assert_eq!(failed["trigger"], "file_change");
    assert!(
        failed["error"].as_str().unwrap_or_default().contains(":5:"),
        "{failed}"
    );
    // SIGHUP with the same bad file: another failure, said to come from the signal.
    d.signal(libc::SIGHUP)?;
    let ev = d.wait_events("failed reload by SIGHUP", |e| {
        of_type(e, "policy_reload_failed").len() == 2
    })?;
    assert_eq!(of_type(&ev, "policy_reload_failed")[1]["trigger"], "sighup");
    // Still the hold policy: a new connection is held too.
    let second = spawn_client(&cg, &addr, "second")?;
    held_ids(&d, 2)?;

    // A valid policy without the rule, picked up as a file change.
    d.write_policy(&format!(
        "version: 1\ntargets:\n  - {{name: svc, protocol: tcp, match: [{{address: 127.0.0.2, port: {port}}}]}}\n"
    ))?;
    let ev = d.wait_events("reload", |e| !of_type(e, "policy_reloaded").is_empty())?;
    let reloaded = of_type(&ev, "policy_reloaded")[0];
    assert_eq!(reloaded["trigger"], "file_change");
    assert_eq!(reloaded["rules"], 0);
    // SIGHUP reloads an unchanged file too, and says so.
    d.signal(libc::SIGHUP)?;
    let ev = d.wait_events("reload by SIGHUP", |e| {
        of_type(e, "policy_reloaded").len() == 2
    })?;
    assert_eq!(of_type(&ev, "policy_reloaded")[1]["trigger"], "sighup");
    // New connections pass at once...
    assert!(client_in(&cg, &["echo", &addr, "new"], &[])?.starts_with("ok echo "));
    // ...requests held before the reload stay visible to the approvers
    // captured with them, although no rule in force names those approvers...
    let list = d.cli_as("daemon", None, &["approvals", "list"])?;
    assert!(list.ok && list.stdout.contains(&id), "{list:?}");
    let show = d.cli_as("bin", None, &["approvals", "show", &id])?;
    assert!(show.ok, "{show:?}");
    let shown: Value = serde_json::from_str(&show.stdout)?;
    assert_eq!(shown["state"], "pending");
    let r = d.cli_as("nobody", None, &["approvals", "show", &id])?;
    assert!(!r.ok && r.stderr.contains("(403)"), "{r:?}");
    // ...and are still decided by a human.
    let r = d.cli_as("daemon", None, &["approvals", "approve", &id])?;
    assert!(r.ok, "{r:?}");
    assert!(client_result(held)?.ends_with(" kept"));
    let ids = held_ids(&d, 2)?;
    let r = d.cli_as("daemon", None, &["approvals", "deny", &ids[1]])?;
    assert!(r.ok, "{r:?}");
    assert!(client_result(second)?.starts_with("err"));
    Ok(())
}

#[test]
fn new_holds_are_announced_to_chat_webhooks() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let cg = TestCgroup::new("hold-chat")?;
    let chat = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/hooks/T000/B000", chat.local_addr()?);
    let d = Daemon::start(DaemonSpec::with_policy(
        &cg,
        &hold_policy(server.addr.port(), "60s"),
        &["--approval-webhook", &url],
    ))?;
    let client = spawn_client(&cg, &server.addr.to_string(), "x")?;
    let id = held_ids(&d, 1)?.remove(0);
    let body = read_one_post(&chat)?;
    let v: Value = serde_json::from_str(&body).context("Slack body is JSON")?;
    let text = v["text"].as_str().unwrap_or_default();
    assert!(text.contains(&id), "{text}");
    assert!(text.contains("hold-all") && text.contains("svc"), "{text}");
    assert!(text.contains("interlock approvals approve"), "{text}");
    d.cli_as("daemon", None, &["approvals", "deny", &id])?;
    client_result(client)?;
    Ok(())
}

/// A connection made by CI job `job_id`: a fake runner starts the job root (with
/// `CI_JOB_ID`), which starts the client, all in `cg` as root.
fn spawn_job(
    cg: &TestCgroup,
    runner: &std::path::Path,
    job_id: &str,
    addr: &str,
    msg: &str,
) -> Result<Child> {
    let client = testclient().display().to_string();
    let inner = format!("{client} echo {addr} {msg}; true");
    let script = format!("CI_JOB_ID={job_id} /bin/bash -c {}; true", sh_quote(&inner));
    Ok(cg
        .command(runner, &["-c", &script])
        .env_remove("CI_JOB_ID")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?)
}

#[test]
fn a_timed_grant_covers_the_same_job_not_the_next_one_on_the_runner() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let cg = TestCgroup::new("grant-a")?;
    let policy = hold_policy(server.addr.port(), "60s")
        .replace("timeout: 60s", "timeout: 60s\n      grant: 1h")
        .replace(
            "version: 1\n",
            "version: 1\nidentity:\n  runners: ['**/Runner.Worker']\n",
        );
    let d = Daemon::start(DaemonSpec::with_policy(&cg, &policy, &[]))?;
    let dir = runner_dir("interlock-grant-runner")?;
    let runner = fake_runner(dir.path(), "Runner.Worker")?;
    let addr = server.addr.to_string();
    let first = spawn_job(&cg, &runner, "101", &addr, "one")?;
    let id = held_ids(&d, 1)?.remove(0);
    assert!(d.cli_as("daemon", None, &["approvals", "approve", &id])?.ok);
    assert!(client_result(first)?.ends_with(" one"));
    let dec = decided(&d, &id)?;
    assert!(dec["approval"]["granted_until"].is_string(), "{dec:#}");
    // The same job again: through at once, recorded as approved by the rule.
    let again = spawn_job(&cg, &runner, "101", &addr, "two")?;
    assert!(client_result(again)?.ends_with(" two"));
    let ev = d.wait_events("second start", |e| of_type(e, "session_started").len() >= 2)?;
    let second = of_type(&ev, "session_started")[1];
    assert_eq!(second["decision"]["action"], "approved", "{second:#}");
    assert_eq!(second["decision"]["rule"], "hold-all");
    // The next job on the same runner: same user, same cgroup, another job. It must ask.
    let next = spawn_job(&cg, &runner, "102", &addr, "three")?;
    let ids = held_ids(&d, 2)?;
    assert!(
        d.cli_as("daemon", None, &["approvals", "deny", &ids[1]])?
            .ok
    );
    assert!(client_result(next)?.starts_with("err"));
    // A connection from no job at all (no runner): never covered, it asks too.
    let loose = spawn_client(&cg, &addr, "four")?;
    let ids = held_ids(&d, 3)?;
    assert!(
        d.cli_as("daemon", None, &["approvals", "deny", &ids[2]])?
            .ok
    );
    assert!(client_result(loose)?.starts_with("err"));
    Ok(())
}
