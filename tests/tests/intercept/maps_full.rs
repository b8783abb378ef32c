//! A full flow table refuses connects (fail closed) or lets them through
//! (fail open) and says so in an event; refused connects leave no flows
//! behind, and what the kernel refused while the daemon was down is
//! reported by the next one; a dead daemon's pid, reused, is not let past.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, ChildStdin, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use interlock_tests::*;
use serde_json::Value;

/// Entries of the test daemons' flow table.
const TABLE: &str = "8";

/// `testclient many` in `cg`: opens `n` connections and reports.
struct Many {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<std::process::ChildStdout>,
}

impl Many {
    fn open(cg: &TestCgroup, dst: &str, n: usize) -> Result<(Many, usize, usize, String)> {
        let mut child = cg
            .command(&testclient(), &["many", dst, &n.to_string(), "full"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().context("stdin")?;
        let mut out = BufReader::new(child.stdout.take().context("stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        let f: Vec<&str> = line.split_whitespace().collect();
        let (opened, refused, kinds) = match f.as_slice() {
            ["opened", o, "refused", r, rest @ ..] => (o.parse()?, r.parse()?, rest.join(" ")),
            _ => bail!("testclient many said {line:?}"),
        };
        Ok((Many { child, stdin, out }, opened, refused, kinds))
    }

    /// Lets the client exchange on every open connection; how many replied.
    fn finish(mut self) -> Result<usize> {
        writeln!(self.stdin, "go")?;
        let mut line = String::new();
        self.out.read_line(&mut line)?;
        self.child.wait()?;
        line.trim()
            .strip_prefix("replies ")
            .context(line.clone())?
            .parse()
            .map_err(Into::into)
    }
}

fn refused_total(ev: &[Value], reason: &str) -> u64 {
    of_type(ev, "connects_refused")
        .iter()
        .filter(|e| e["reason"] == reason)
        .map(|e| e["count"].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn a_full_flow_table_refuses_and_reports_then_recovers() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let dst = server.addr.to_string();
    let cg = TestCgroup::new("full")?;
    let d = Daemon::start(DaemonSpec::tcp(
        &cg,
        &[server.addr.port()],
        &["--flow-table-entries", TABLE, "--flow-quota", "0"],
    ))?;
    // A stopped daemon accepts nothing, so every redirected connect waits
    // in the listener's backlog holding its flow entry.
    d.signal(libc::SIGSTOP)?;
    let (many, opened, refused, kinds) = Many::open(&cg, &dst, 12)?;
    d.signal(libc::SIGCONT)?;
    assert!(opened <= 8, "more flows than the table holds: {opened}");
    assert!(refused >= 4, "{opened} opened, {refused} refused");
    assert_eq!(
        kinds, "PermissionDenied",
        "a full table fails the connect with EPERM"
    );
    assert_eq!(
        many.finish()?,
        opened,
        "every connect that got a flow was relayed"
    );
    // The events file follows the audit log: wait until it holds the
    // report and every relayed session (on a loaded machine it lags).
    let ev = d.wait_events("the refusal report and the relayed sessions", |e| {
        refused_total(e, "flow_table_full") == refused as u64
            && of_type(e, "session_started").len() >= opened
    })?;
    let report = of_type(&ev, "connects_refused")[0];
    assert_eq!(report["ocsf"]["class_uid"], 1008, "{report}");
    assert_eq!(
        of_type(&ev, "session_started").len(),
        opened,
        "no refused connect became a session"
    );
    assert_eq!(
        server.connections(),
        opened,
        "nothing reached the server directly"
    );
    // The client's sockets are closed: their flows left the table.
    assert_eq!(d.map_entries("FLOWS")?, 0);
    assert!(client_in(&cg, &["echo", &dst, "room"], &[])?.ends_with("room"));
    Ok(())
}

#[test]
fn fail_open_lets_connects_through_a_full_table_and_reports_it() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let dst = server.addr.to_string();
    let cg = TestCgroup::new("fullopen")?;
    let d = Daemon::start(DaemonSpec::tcp(
        &cg,
        &[server.addr.port()],
        &[
            "--flow-table-entries",
            TABLE,
            "--flow-quota",
            "0",
            "--failure-mode",
            "open",
        ],
    ))?;
    // In fail-open mode a stopped daemon's heartbeat goes stale after 3 s
    // and then every connect goes direct; a round in which that happened
    // first proves nothing about the table and is repeated.
    for _ in 0..5 {
        let before = server.connections();
        d.signal(libc::SIGSTOP)?;
        let (many, opened, refused, _) = Many::open(&cg, &dst, 12)?;
        // The server's accept thread counts direct connects a moment later.
        std::thread::sleep(Duration::from_millis(300));
        let direct = server.connections() - before;
        d.signal(libc::SIGCONT)?;
        assert_eq!((opened, refused), (12, 0), "fail open refuses nothing");
        assert_eq!(many.finish()?, 12);
        if direct == 12 {
            std::thread::sleep(Duration::from_secs(2));
            continue;
        }
        assert!(direct >= 4, "only {direct} went direct past a table of 8");
        d.wait_events("the pass-through report", |e| {
            refused_total(e, "flow_table_full_passed") == direct as u64
        })?;
        let ev = d.events();
        let report = of_type(&ev, "connects_refused")[0];
        assert_eq!(
            report["ocsf"]["severity_id"], 4,
            "letting connects past is High"
        );
        return Ok(());
    }
    bail!("the heartbeat went stale before the table filled, five times")
}

#[test]
fn refused_connects_leave_no_flows_and_refusals_while_down_are_reported_at_restart() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let dst = server.addr.to_string();
    let cg = TestCgroup::new("sweep")?;
    let mut d = Daemon::start(DaemonSpec::tcp(
        &cg,
        &[server.addr.port()],
        &["--flow-table-entries", TABLE, "--flow-quota", "4"],
    ))?;
    d.wait_events("start", |e| !of_type(e, "daemon_started").is_empty())?;
    d.signal_and_wait(libc::SIGKILL)?;
    // Refused connects (the listener is gone) take their flows with their sockets.
    let reply = client_in(&cg, &["loop", &dst, "12"], &[])?;
    assert_eq!(reply, "done 0 12", "fail closed while down");
    assert_eq!(d.map_entries("FLOWS")?, 0, "closed sockets left flows");
    // Sockets kept open after their refused connect hold their flows, up
    // to the cgroup's quota; the rest are refused by the kernel.
    let mut hog = cg
        .command(&testclient(), &["hog", &dst, "12"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(hog.stdout.take().context("stdout")?).read_line(&mut line)?;
    assert_eq!(line.trim(), "failed 12 ConnectionRefused,PermissionDenied");
    // The first socket (kept too) and three more hold the quota; nine are refused.
    assert_eq!(d.map_entries("FLOWS")?, 4, "the quota's worth of flows");
    writeln!(hog.stdin.as_mut().context("stdin")?)?;
    hog.wait()?;
    assert_eq!(d.map_entries("FLOWS")?, 0);

    d.spawn()?;
    assert!(client_in(&cg, &["echo", &dst, "back"], &[])?.ends_with("back"));
    // What was refused while no daemon ran is reported by the next one,
    // once, with the cgroup.
    let ev = d.wait_events("the refusals while down", |e| {
        refused_total(e, "flow_quota") == 9
    })?;
    let reports = of_type(&ev, "connects_refused");
    assert_eq!(reports.len(), 1, "{ev:#?}");
    assert_eq!(reports[0]["by"]["cgroup"], cg.scope());
    Ok(())
}

/// Makes the next process this machine creates get `pid` (as root, through
/// ns_last_pid) and starts `testclient echo` in `cg` with it. `None` if
/// another process took the pid first.
fn client_with_pid(cg: &TestCgroup, pid: u32, dst: &str) -> Result<Option<String>> {
    std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())?;
    let child = cg
        .command(&testclient(), &["echo", dst, "reused"])
        .stdout(Stdio::piped())
        .spawn()?;
    let got = child.id();
    let out = child.wait_with_output()?;
    Ok((got == pid).then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()))
}

#[test]
fn a_process_reusing_a_dead_daemons_pid_is_still_intercepted() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let dst = server.addr.to_string();
    let cg = TestCgroup::new("pidreuse")?;
    let mut d = Daemon::start(DaemonSpec::tcp(&cg, &[server.addr.port()], &[]))?;
    let pid = d.pid().context("daemon pid")?;
    d.signal_and_wait(libc::SIGKILL)?;
    // The kernel trusts the configured tgid only while its heartbeat is
    // fresh (OWN_CONNECTS_FRESH_NS, 15 s).
    std::thread::sleep(Duration::from_secs(16));
    let deadline = Instant::now() + Duration::from_secs(60);
    let reply = loop {
        if let Some(r) = client_with_pid(&cg, pid, &dst)? {
            break r;
        }
        if Instant::now() > deadline {
            bail!("could not start a process with pid {pid}");
        }
    };
    assert!(
        reply.starts_with("err ConnectionRefused"),
        "a process with the dead daemon's pid went past: {reply}"
    );
    assert_eq!(
        server.connections(),
        0,
        "nothing reached the server directly"
    );
    Ok(())
}
