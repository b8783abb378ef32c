//! Relays that cannot deadlock, forced through the real daemon: large
//! transfers both ways at once, with every socket made tiny (SO_SNDBUF and
//! SO_RCVBUF of 4 KiB): interlock's legs (`--socket-buffer-bytes`), the
//! client's own, and the real server's (its listening socket's sizes are
//! set from outside, see `shrink_listener_buffers`), so that flow control,
//! not buffering, carries the load. A relay that waits on writing one side while it does not read
//! that side (or the other) hangs here; `pipeclient` is then killed at
//! the time limit and the test fails naming the hang. The many-session
//! variants run a CPU hog (stress-ng) beside them.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Result, bail};
use interlock_tests::{postgres::*, *};
use serde_json::Value;

/// The kernel buffer size of every socket in these tests.
const TINY: &str = "4096";
/// Longest a load may run before it counts as hung. Far above what the
/// loads take on a loaded 2-core machine, far below the suite's limit.
const LIMIT: Duration = Duration::from_secs(300);

/// A CPU hog on every core for as long as it lives.
struct Hog(Child);

impl Hog {
    fn start() -> Result<Hog> {
        let child = Command::new("stress-ng")
            .args(["--cpu", "2", "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(c) => Ok(Hog(c)),
            Err(e) => bail!("stress-ng (cargo xtask setup installs it): {e}"),
        }
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `pipeclient ARGS` inside `cg` within [`LIMIT`]; its JSON summary.
fn pipeclient(cg: &TestCgroup, d: &Daemon, args: &[&str], env: &[(&str, &str)]) -> Result<Value> {
    let mut cmd = cg.command(&test_bin("pipeclient"), args);
    cmd.envs(env.iter().copied());
    let out = match output_within(cmd, LIMIT) {
        Ok(o) => o,
        Err(e) => bail!("{e:#}\ndaemon log (end):\n{}", tail(&d.log())),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    if !out.status.success() || summary["failed"] != 0 {
        bail!(
            "pipeclient failed: {stdout}\n{}\ndaemon log (end):\n{}",
            String::from_utf8_lossy(&out.stderr),
            tail(&d.log())
        );
    }
    Ok(summary)
}

fn tail(log: &str) -> &str {
    let from = (log.len().saturating_sub(6000)..log.len())
        .find(|i| log.is_char_boundary(*i))
        .unwrap_or(log.len());
    &log[from..]
}

/// A PostgreSQL server for `sessions` clients and a daemon proxying it with
/// tiny buffers on both legs.
fn pg_setup(ip: &str, name: &str, sessions: u32) -> Result<(PgServer, TestCgroup, Daemon)> {
    let pg = PgServer::start_for(ip, sessions + 10)?;
    shrink_listener_buffers(pg.pid(), pg.addr, 4096)?;
    let cg = TestCgroup::new(name)?;
    let policy = Policy::new()
        .postgres("db", &pg, &pg.password_file()?)
        .yaml();
    let d = Daemon::start(DaemonSpec::with_policy(
        &cg,
        &policy,
        &["--socket-buffer-bytes", TINY],
    ))?;
    Ok((pg, cg, d))
}

fn pg_load(sessions: u32, queries: u32, size: u32, hog: bool) -> Result<()> {
    if !privileged() || !PgServer::available() {
        return Ok(());
    }
    let ip = if sessions == 1 {
        "127.0.0.70"
    } else {
        "127.0.0.71"
    };
    let (pg, cg, d) = pg_setup(ip, "flow-pg", sessions)?;
    let _hog = hog.then(Hog::start).transpose()?;
    let addr = pg.addr.to_string();
    let (n, q, s) = (sessions.to_string(), queries.to_string(), size.to_string());
    let summary = pipeclient(
        &cg,
        &d,
        &[
            "pg",
            &addr,
            ROLE,
            DATABASE,
            "--sessions",
            &n,
            "--queries",
            &q,
            "--size",
            &s,
            "--buffer",
            TINY,
        ],
        &[("PGPASSWORD", "any")],
    )?;
    assert_eq!(summary["ok"], sessions, "{summary}");
    assert_eq!(
        summary["bytes_each_way"],
        u64::from(sessions) * u64::from(queries) * u64::from(size)
    );
    // Every session was intercepted and ended cleanly.
    let ended = d.wait_events_long("every session's end", |ev| {
        of_type(ev, "session_ended").len() >= sessions as usize
    })?;
    for e in of_type(&ended, "session_ended") {
        assert_eq!(e["outcome"], "closed", "{e}");
    }
    Ok(())
}

#[test]
fn pg_large_pipelines_both_ways_through_tiny_buffers() -> Result<()> {
    // 64 MiB each way, all sent before any result is read.
    pg_load(1, 64, 1 << 20, false)
}

#[test]
fn pg_hundred_sessions_pipelining_through_tiny_buffers_beside_a_cpu_hog() -> Result<()> {
    // 100 sessions x 16 x 64 KiB = 100 MiB each way, at once.
    pg_load(100, 16, 64 << 10, true)
}

fn tcp_load(sessions: u32, size: u32, hog: bool) -> Result<()> {
    tcp_load_stalling(sessions, size, hog, 0)
}

fn tcp_load_stalling(sessions: u32, size: u32, hog: bool, stall_ms: u64) -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let ip = if sessions == 1 {
        "127.0.0.72"
    } else {
        "127.0.0.73"
    };
    let echo = ByteEcho::start(&format!("{ip}:0"), 4096)?;
    let cg = TestCgroup::new("flow-tcp")?;
    let spec = DaemonSpec {
        policy: tcp_policy("echo", &[(ip, echo.addr.port())]),
        scopes: vec![cg.scope().into()],
        extra_args: vec!["--socket-buffer-bytes".into(), TINY.into()],
    };
    let d = Daemon::start(spec)?;
    let _hog = hog.then(Hog::start).transpose()?;
    let (addr, n, s) = (
        echo.addr.to_string(),
        sessions.to_string(),
        size.to_string(),
    );
    let stall = stall_ms.to_string();
    let summary = pipeclient(
        &cg,
        &d,
        &[
            "tcp",
            &addr,
            "--sessions",
            &n,
            "--size",
            &s,
            "--buffer",
            TINY,
            "--stall-ms",
            &stall,
        ],
        &[],
    )?;
    assert_eq!(summary["ok"], sessions, "{summary}");
    let ended = d.wait_events_long("every session's end", |ev| {
        of_type(ev, "session_ended").len() >= sessions as usize
    })?;
    for e in of_type(&ended, "session_ended") {
        assert_eq!(e["outcome"], "closed", "{e}");
        assert_eq!(e["bytes_client_to_server"], u64::from(size), "{e}");
        assert_eq!(e["bytes_server_to_client"], u64::from(size), "{e}");
    }
    Ok(())
}

#[test]
fn tcp_large_transfer_both_ways_through_tiny_buffers() -> Result<()> {
    tcp_load(1, 64 << 20, false)
}

#[test]
fn tcp_both_ways_with_a_client_that_reads_slower_than_it_writes() -> Result<()> {
    tcp_load_stalling(1, 32 << 20, false, 3000)
}

#[test]
fn tcp_hundred_sessions_both_ways_through_tiny_buffers_beside_a_cpu_hog() -> Result<()> {
    tcp_load(100, 1 << 20, true)
}

fn ssh_load(sessions: u32, size: u32, hog: bool) -> Result<()> {
    ssh_load_stalling(sessions, size, hog, 0)
}

/// What an SSH load runs through interlock: the ssh options and remote
/// command of each session, the extra policy rules that allow it, and the
/// text of the `command` record each session leaves.
struct SshRoute {
    options: Vec<String>,
    /// None: no remote command (`ssh -W`).
    command: Option<String>,
    rules: String,
    record: String,
}

impl SshRoute {
    /// `ssh host cat`: a session channel (`ssh/relay.rs`).
    fn exec_cat() -> SshRoute {
        SshRoute {
            options: Vec::new(),
            command: Some("cat".into()),
            rules: String::new(),
            record: "cat".into(),
        }
    }
}

/// `stall_ms`: each client stops reading for that long after its first
/// MiB came back, while it goes on writing (a consumer slower than its
/// producer): both directions then wait on flow control at once.
fn ssh_load_stalling(sessions: u32, size: u32, hog: bool, stall_ms: u64) -> Result<()> {
    if !privileged() || !Sshd::available() {
        return Ok(());
    }
    let ip = if sessions == 1 {
        "127.0.0.74"
    } else {
        "127.0.0.75"
    };
    ssh_route_load(ip, sessions, size, hog, stall_ms, |_| {
        Ok(SshRoute::exec_cat())
    })
}

/// Runs `sessions` ssh clients at once through a daemon with tiny socket
/// buffers on every leg, each streaming `size` bytes both ways along the
/// route `route` builds for the started sshd; checks every byte came back
/// and every session's command was recorded.
fn ssh_route_load(
    ip: &str,
    sessions: u32,
    size: u32,
    hog: bool,
    stall_ms: u64,
    route: impl FnOnce(&Sshd) -> Result<SshRoute>,
) -> Result<()> {
    // Every session connects at once: sshd must not shed the handshakes.
    let sshd = Sshd::start_with(ip, "MaxStartups 200\nMaxSessions 200")?;
    shrink_listener_buffers(sshd.pid(), sshd.addr, 4096)?;
    let route = route(&sshd)?;
    let cg = TestCgroup::new("flow-ssh")?;
    let d = sshjob::daemon_with_args(
        &cg,
        &sshd,
        "",
        &route.rules,
        &["--socket-buffer-bytes", TINY],
    )?;
    let job = sshjob::Job::trusting_ca(&d)?;
    let _hog = hog.then(Hog::start).transpose()?;
    // The client's own socket is tiny too: ssh talks through pipeclient.
    let proxy = format!(
        "ProxyCommand={} pipe %h:%p --buffer {TINY}",
        test_bin("pipeclient").display()
    );
    let (n, s, port) = (
        sessions.to_string(),
        size.to_string(),
        sshd.addr.port().to_string(),
    );
    let stall = stall_ms.to_string();
    let mut args: Vec<String> = [
        "stream",
        "--sessions",
        &n,
        "--size",
        &s,
        "--stall-ms",
        &stall,
        "--",
        "/usr/bin/ssh",
        "-p",
        &port,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(job.options());
    args.extend([
        "-o".into(),
        proxy,
        "-o".into(),
        "ExitOnForwardFailure=yes".into(),
    ]);
    args.extend(route.options.iter().cloned());
    args.push(format!("root@{ip}"));
    args.extend(route.command.iter().cloned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let summary = pipeclient(&cg, &d, &refs, &[])?;
    assert_eq!(summary["ok"], sessions, "{summary}");
    // Every session's command or forward ran to its end and was recorded
    // (a command with its exit status).
    let events = d.wait_events_long("every command's record", |ev| {
        of_type(ev, "command")
            .iter()
            .filter(|e| e["text"] == route.record.as_str())
            .count()
            >= sessions as usize
    })?;
    for e in of_type(&events, "command")
        .iter()
        .filter(|e| e["text"] == route.record.as_str() && e["command_kind"] != "port_forward")
    {
        assert_eq!(e["exit_status"], 0, "{e}");
    }
    Ok(())
}

#[test]
fn ssh_exec_large_stdin_and_stdout_both_ways_through_tiny_buffers() -> Result<()> {
    ssh_load(1, 64 << 20, false)
}

/// Hung with russh as published (window granted on receipt: both session
/// loops waited on each other); vendor/russh grants window on consumption
/// (agent/src/ssh/relay.rs, "Why it cannot deadlock").
#[test]
fn ssh_exec_both_ways_with_a_client_that_reads_slower_than_it_writes() -> Result<()> {
    ssh_load_stalling(1, 32 << 20, false, 3000)
}

#[test]
fn ssh_twenty_sessions_both_ways_through_tiny_buffers_beside_a_cpu_hog() -> Result<()> {
    ssh_load(20, 4 << 20, true)
}

/// direct-tcpip (`ssh -W` to an echo server) both ways, with a client that
/// reads slower than it writes: the forwarding relay (`ssh/forward.rs`
/// `pipe`) over the same russh channels as a session.
#[test]
fn ssh_local_forward_both_ways_with_a_client_that_reads_slower_than_it_writes() -> Result<()> {
    if !privileged() || !Sshd::available() {
        return Ok(());
    }
    let ip = "127.0.0.76";
    let echo = ByteEcho::start(&format!("{ip}:0"), 4096)?;
    let target = echo.addr.to_string();
    ssh_route_load(ip, 1, 32 << 20, false, 3000, |_| {
        Ok(SshRoute {
            options: vec!["-W".into(), target.clone()],
            command: None,
            rules: allow_rule("port_forward", &target),
            record: target.clone(),
        })
    })
}

/// Remote forwarding (`ssh -R`) both ways, with a client that reads slower
/// than it writes: the stream goes through a session channel to a program
/// on the server that connects to the forwarded port, so it crosses
/// interlock twice, the second time on a channel the server opens
/// (`ssh/reverse.rs`), to an echo server beside the client.
#[test]
fn ssh_remote_forward_both_ways_with_a_client_that_reads_slower_than_it_writes() -> Result<()> {
    if !privileged() || !Sshd::available() {
        return Ok(());
    }
    let ip = "127.0.0.77";
    let echo = ByteEcho::start(&format!("{ip}:0"), 4096)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let command = format!(
        "/usr/bin/python3 -c 'exec(bytes.fromhex(\"{}\"))'",
        hex(&relay_to_port(port))
    );
    ssh_route_load(ip, 1, 32 << 20, false, 3000, |_| {
        Ok(SshRoute {
            options: vec!["-R".into(), format!("127.0.0.1:{port}:{}", echo.addr)],
            command: Some(command.clone()),
            rules: allow_rule("remote_forward", &format!("remote 127.0.0.1:{port}")),
            record: command.clone(),
        })
    })
}

/// A policy rule allowing a forward of `kind` whose text is `text`.
fn allow_rule(kind: &str, text: &str) -> String {
    let pattern = text.replace('.', "\\.");
    format!(
        "  - name: allow-{kind}\n    match: {{kind: [{kind}], command: '^{pattern}$'}}\n    action: allow\n"
    )
}

/// A Python program copying its stdin to 127.0.0.1:`port` and what comes
/// back to its stdout, both at once, half-closing the socket at the end of
/// its stdin (the remote end of the `-R` test).
fn relay_to_port(port: u16) -> String {
    format!(
        "import socket, sys, threading, time
for _ in range(400):
    try:
        s = socket.create_connection(('127.0.0.1', {port}))
        break
    except OSError:
        time.sleep(0.05)
else:
    sys.exit(9)
def up():
    while True:
        b = sys.stdin.buffer.read1(65536)
        if not b:
            break
        s.sendall(b)
    s.shutdown(socket.SHUT_WR)
t = threading.Thread(target=up)
t.start()
while True:
    b = s.recv(65536)
    if not b:
        break
    sys.stdout.buffer.write(b)
    sys.stdout.buffer.flush()
t.join()
"
    )
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}
