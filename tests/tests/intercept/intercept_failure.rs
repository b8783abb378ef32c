//! Failure semantics: no loop, fail closed across SIGKILL and restart,
//! fail open when asked, detach, and SIGTERM draining.

use std::time::{Duration, Instant};

use anyhow::Result;
use interlock_tests::*;

#[test]
fn the_daemon_inside_its_own_scope_does_not_intercept_itself() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let cg = TestCgroup::new("noloop")?;
    // Started outside first (to get a Daemon), then restarted inside the scope.
    let mut d = Daemon::start(DaemonSpec::tcp(&cg, &[server.addr.port()], &[]))?;
    d.signal_and_wait(libc::SIGKILL)?;
    let cmd = d.command_in(Some(&cg));
    d.spawn_with(cmd)?;
    let reply = client_in(&cg, &["echo", &server.addr.to_string(), "loop?"], &[])?;
    assert!(reply.ends_with("loop?"), "{reply}\n{}", d.log());
    let ev = d.wait_events("one session", |e| !of_type(e, "session_ended").is_empty())?;
    assert_eq!(
        of_type(&ev, "session_started").len(),
        1,
        "exactly one session, the daemon's upstream connect was not redirected"
    );
    assert!(of_type(&ev, "connection_refused").is_empty(), "{ev:#?}");
    Ok(())
}

#[test]
fn sigkill_fails_closed_and_a_restart_intercepts_again() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let dst = server.addr.to_string();
    let cg = TestCgroup::new("failclosed")?;
    let mut d = Daemon::start(DaemonSpec::tcp(&cg, &[server.addr.port()], &[]))?;
    assert!(client_in(&cg, &["echo", &dst, "before"], &[])?.ends_with("before"));
    // Events reach disk within 100 ms; wait for them so SIGKILL loses none.
    d.wait_events("first session", |e| !of_type(e, "session_ended").is_empty())?;

    d.signal_and_wait(libc::SIGKILL)?;
    // The programs outlive the daemon: the connect is refused, never sent direct.
    for _ in 0..3 {
        let reply = client_in(&cg, &["echo", &dst, "while-down"], &[])?;
        assert!(reply.starts_with("err ConnectionRefused"), "{reply}");
    }
    // Even after fail-open's staleness window, closed mode stays closed.
    std::thread::sleep(Duration::from_millis(3500));
    assert!(
        client_in(&cg, &["echo", &dst, "still-down"], &[])?.starts_with("err ConnectionRefused")
    );

    d.spawn()?;
    let ev = d.wait_events("restart", |e| of_type(e, "daemon_started").len() == 2)?;
    assert_eq!(of_type(&ev, "daemon_started")[1]["adopted_pins"], true);
    assert!(client_in(&cg, &["echo", &dst, "after"], &[])?.ends_with("after"));
    let ev = d.wait_events("two sessions", |e| of_type(e, "session_ended").len() == 2)?;
    assert_eq!(of_type(&ev, "session_started").len(), 2);
    Ok(())
}

#[test]
fn fail_open_goes_direct_once_the_heartbeat_is_stale() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let dst = server.addr.to_string();
    let cg = TestCgroup::new("failopen")?;
    let mut d = Daemon::start(DaemonSpec::tcp(
        &cg,
        &[server.addr.port()],
        &["--failure-mode", "open"],
    ))?;
    assert!(client_in(&cg, &["echo", &dst, "up"], &[])?.ends_with("up"));
    d.wait_events("first session", |e| !of_type(e, "session_ended").is_empty())?;
    d.signal_and_wait(libc::SIGKILL)?;
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(15);
    let reply = loop {
        let r = client_in(&cg, &["echo", &dst, "direct"], &[])?;
        if r.starts_with("ok") || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        reply.ends_with("direct"),
        "fail-open never went direct: {reply}"
    );
    assert_eq!(
        of_type(&d.events(), "session_started").len(),
        1,
        "the direct connect was not a session"
    );

    d.spawn()?;
    assert!(client_in(&cg, &["echo", &dst, "back"], &[])?.ends_with("back"));
    d.wait_events("second session", |e| {
        of_type(e, "session_started").len() == 2
    })?;
    Ok(())
}

#[test]
fn detach_removes_the_pins_and_traffic_goes_direct() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let dst = server.addr.to_string();
    let cg = TestCgroup::new("detach")?;
    let mut d = Daemon::start(DaemonSpec::tcp(&cg, &[server.addr.port()], &[]))?;
    d.signal_and_wait(libc::SIGKILL)?;
    assert!(client_in(&cg, &["echo", &dst, "x"], &[])?.starts_with("err ConnectionRefused"));

    let out = d.detach()?;
    for name in [
        "connect4@",
        "connect6@",
        "sockops_established@",
        "sock_release@",
        "FLOWS",
        "PEERS",
        "TARGETS",
        "CONFIG",
    ] {
        assert!(out.contains(name), "detach did not report {name}: {out}");
    }
    assert!(!d.pin_dir().exists());
    assert!(client_in(&cg, &["echo", &dst, "direct"], &[])?.ends_with("direct"));
    assert!(d.detach()?.contains("nothing pinned"));
    Ok(())
}

#[test]
fn sigterm_drains_live_sessions_and_refuses_new_ones() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let dst = server.addr.to_string();
    let cg = TestCgroup::new("drain")?;
    let mut d = Daemon::start(DaemonSpec::tcp(
        &cg,
        &[server.addr.port()],
        &["--drain-secs", "20"],
    ))?;
    let holder = cg
        .command(&testclient(), &["hold", &dst, "2.5", "tick"])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    d.wait_events("held session", |e| {
        !of_type(e, "session_started").is_empty()
    })?;

    // SIGTERM from a thread: the daemon only exits once the holder is done.
    let pid = d.pid().unwrap_or_default() as i32;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(300));
    let reply = client_in(&cg, &["echo", &dst, "late"], &[])?;
    assert!(
        reply.starts_with("err ConnectionRefused"),
        "a new session during drain: {reply}"
    );

    let out = holder.wait_with_output()?;
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.starts_with("ok "), "the live session was cut: {line}");
    let status = d.signal_and_wait(0)?;
    assert!(status.success(), "{status}\n{}", d.log());
    let ev = d.events();
    let ended = of_type(&ev, "session_ended");
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0]["outcome"], "closed");
    assert_eq!(of_type(&ev, "daemon_stopped").len(), 1);
    Ok(())
}

#[test]
fn drain_time_over_closes_what_is_left() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let dst = server.addr.to_string();
    let cg = TestCgroup::new("drainover")?;
    let mut d = Daemon::start(DaemonSpec::tcp(
        &cg,
        &[server.addr.port()],
        &["--drain-secs", "0.5"],
    ))?;
    let holder = cg
        .command(&testclient(), &["hold", &dst, "30", "tick"])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    d.wait_events("held session", |e| {
        !of_type(e, "session_started").is_empty()
    })?;
    let status = d.signal_and_wait(libc::SIGTERM)?;
    assert!(status.success());
    let out = holder.wait_with_output()?;
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("err closed"),
        "{out:?}"
    );
    let ev = d.events();
    assert_eq!(of_type(&ev, "session_ended")[0]["outcome"], "drained");
    Ok(())
}
