//! A job cannot exhaust the kernel's flow table for everyone (issue 15,
//! item 3). An unprivileged user in one cgroup runs the attack loop —
//! connects that fail after the connect hook ran (bound to a client port
//! already in use, so the 4-tuple is taken), closed at once or kept open,
//! and connects from its own network namespace — while a process in
//! another cgroup keeps connecting to the target: it stays intercepted, in
//! fail-closed and in fail-open mode, and nothing reaches the server directly.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use interlock_tests::*;
use serde_json::Value;

const TABLE: &str = "256";
const QUOTA: u64 = 32;
/// Far more failing connects than the table holds.
const LOOP: usize = 3000;

/// The test client where an unprivileged user may run it.
struct Tools {
    _dir: tempfile::TempDir,
    client: PathBuf,
}

impl Tools {
    fn new() -> Result<Tools> {
        let dir = scratch("interlock-exhaust")?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let client = dir.path().join("testclient");
        std::fs::copy(testclient(), &client)?;
        std::fs::set_permissions(&client, std::fs::Permissions::from_mode(0o755))?;
        Ok(Tools { _dir: dir, client })
    }

    /// `testclient ARGS` as user nobody inside `cg`, optionally in a new
    /// user and network namespace (`unshare -rn`, as any user may).
    fn as_nobody(&self, cg: &TestCgroup, netns: bool, args: &[&str]) -> Command {
        let client = self.client.display().to_string();
        let mut full = vec!["--reuid=nobody", "--regid=nogroup", "--clear-groups"];
        if netns {
            full.extend(["unshare", "-rn"]);
        }
        full.push(&client);
        full.extend_from_slice(args);
        cg.command(std::path::Path::new("/usr/bin/setpriv"), &full)
    }
}

fn line_of(mut cmd: Command) -> Result<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `testclient hog`, running: its sockets stay open until [`Hog::release`].
struct Hog {
    child: Child,
    failed: usize,
    kinds: String,
}

impl Hog {
    fn start(tools: &Tools, cg: &TestCgroup, dst: &str, n: usize) -> Result<Hog> {
        let mut child = tools
            .as_nobody(cg, false, &["hog", dst, &n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut out = BufReader::new(child.stdout.take().context("stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        let f: Vec<&str> = line.split_whitespace().collect();
        let (failed, kinds) = match f.as_slice() {
            ["failed", n, rest @ ..] => (n.parse()?, rest.join(" ")),
            _ => bail!("testclient hog said {line:?}"),
        };
        Ok(Hog {
            child,
            failed,
            kinds,
        })
    }

    fn release(mut self) -> Result<()> {
        writeln!(self.child.stdin.as_mut().context("stdin")?)?;
        self.child.wait()?;
        Ok(())
    }
}

fn refused(ev: &[Value], reason: &str) -> Vec<Value> {
    of_type(ev, "connects_refused")
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .cloned()
        .collect()
}

fn count(events: &[Value]) -> u64 {
    events
        .iter()
        .map(|e| e["count"].as_u64().unwrap_or(0))
        .sum()
}

/// The other cgroup's client: intercepted (a new session), not refused.
fn other_is_intercepted(d: &Daemon, other: &TestCgroup, dst: &str, tag: &str) -> Result<()> {
    let before = of_type(&d.events(), "session_started").len();
    let reply = client_in(other, &["echo", dst, tag], &[])?;
    assert!(
        reply.ends_with(tag),
        "another cgroup's connect failed: {reply}"
    );
    d.wait_events("the other cgroup's session", |e| {
        of_type(e, "session_started").len() > before
    })?;
    Ok(())
}

fn run_attack(mode: &str) -> Result<()> {
    let server = EchoServer::start("127.0.0.2:0")?;
    let dst = server.addr.to_string();
    let job = TestCgroup::new("exhaust-job")?;
    let other = TestCgroup::new("exhaust-other")?;
    let quota = QUOTA.to_string();
    let mut spec = DaemonSpec::tcp(
        &job,
        &[server.addr.port()],
        &[
            "--flow-table-entries",
            TABLE,
            "--flow-quota",
            &quota,
            "--failure-mode",
            mode,
        ],
    );
    spec.scopes.push(other.scope().to_string());
    let d = Daemon::start(spec)?;
    let tools = Tools::new()?;
    other_is_intercepted(&d, &other, &dst, "before")?;

    // The loop: connects that fail after the hook, each socket
    // closed at once. Its flows go with the sockets.
    let churn = line_of(tools.as_nobody(&job, false, &["churn", &dst, &LOOP.to_string()]))?;
    assert_eq!(
        churn,
        format!("failed {LOOP} AddrNotAvailable"),
        "every connect failed after the hook, none was refused by it"
    );
    assert_eq!(d.map_entries("FLOWS")?, 0, "closed sockets left flows");
    other_is_intercepted(&d, &other, &dst, "after-churn")?;

    // The same connects with every socket kept open: the job's cgroup
    // holds at most its quota, the rest of its connects are refused.
    let hog = Hog::start(&tools, &job, &dst, LOOP)?;
    assert_eq!(hog.failed, LOOP, "{}", hog.kinds);
    assert_eq!(
        hog.kinds, "AddrNotAvailable,PermissionDenied",
        "over its quota the job is refused with EPERM"
    );
    let held = d.map_entries("FLOWS")? as u64;
    assert!(held <= QUOTA, "the job holds {held} flows, quota {QUOTA}");
    other_is_intercepted(&d, &other, &dst, "while-hogged")?;
    // Reported with the cgroup and user that were refused.
    // The first connect and QUOTA - 1 failed ones hold the quota.
    let over = (LOOP as u64) - (QUOTA - 1);
    let ev = d.wait_events("the quota refusals", |e| {
        count(&refused(e, "flow_quota")) == over
    })?;
    for e in refused(&ev, "flow_quota") {
        assert_eq!(e["by"]["cgroup"], job.scope(), "{e}");
        assert_eq!(e["by"]["uid"], 65534, "{e}");
        assert_eq!(e["by"]["comm"], "testclient", "{e}");
    }
    hog.release()?;
    assert_eq!(d.map_entries("FLOWS")?, 0, "released sockets left flows");

    // From its own network namespace the redirect cannot reach the daemon:
    // refused at once, nothing recorded.
    let reply = line_of(tools.as_nobody(&job, true, &["echo", &dst, "ns"]))?;
    assert!(reply.starts_with("err PermissionDenied"), "{reply}");
    assert_eq!(d.map_entries("FLOWS")?, 0);
    let ev = d.wait_events("the other-namespace refusal", |e| {
        !refused(e, "other_netns").is_empty()
    })?;
    assert_eq!(refused(&ev, "other_netns")[0]["by"]["cgroup"], job.scope());

    other_is_intercepted(&d, &other, &dst, "at-the-end")?;
    let ev = d.events();
    assert!(
        refused(&ev, "flow_table_full").is_empty()
            && refused(&ev, "flow_table_full_passed").is_empty(),
        "the table filled up: {ev:#?}"
    );
    assert_eq!(
        server.connections(),
        of_type(&ev, "session_started").len(),
        "something reached the server directly"
    );
    Ok(())
}

#[test]
fn a_job_looping_failed_connects_cannot_starve_another_cgroup_fail_closed() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    run_attack("closed")
}

#[test]
fn a_job_looping_failed_connects_cannot_starve_another_cgroup_fail_open() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    run_attack("open")
}

#[test]
fn a_client_that_writes_and_closes_before_the_accept_is_still_relayed() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let cg = TestCgroup::new("exhaust-early")?;
    let d = Daemon::start(DaemonSpec::tcp(&cg, &[server.addr.port()], &[]))?;
    // A stopped daemon accepts nothing: the client's socket is released
    // (after a complete handshake) before the daemon sees the connection.
    d.signal(libc::SIGSTOP)?;
    let sent = client_in(&cg, &["send", &server.addr.to_string(), "early"], &[]);
    d.signal(libc::SIGCONT)?;
    assert_eq!(sent?, "sent");
    let ev = d.wait_events("the session", |e| !of_type(e, "session_ended").is_empty())?;
    assert!(of_type(&ev, "connection_refused").is_empty(), "{ev:#?}");
    assert_eq!(server.connections(), 1, "relayed to the server");
    assert_eq!(d.map_entries("FLOWS")?, 0);
    Ok(())
}
