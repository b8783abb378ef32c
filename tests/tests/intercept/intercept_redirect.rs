//! Redirect and relay: which connects reach the daemon and which do not.

use anyhow::Result;
use interlock_tests::*;

fn sessions_to(d: &Daemon, dst: &str) -> usize {
    of_type(&d.events(), "session_started")
        .iter()
        .filter(|e| e["identity"]["original_destination"] == dst)
        .count()
}

#[test]
fn redirects_ipv4_ipv6_and_v4_mapped_and_leaves_the_rest_alone() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let v4 = EchoServer::start("127.0.0.2:0")?;
    let v6 = EchoServer::start("[::1]:0")?;
    let other = EchoServer::start("127.0.0.2:0")?;
    let cg = TestCgroup::new("redirect")?;
    let d = Daemon::start(DaemonSpec {
        policy: tcp_policy(
            "echo",
            &[("127.0.0.2", v4.addr.port()), ("::1", v6.addr.port())],
        ),
        scopes: vec![cg.scope().into()],
        extra_args: vec![],
    })?;

    let (a4, a6) = (v4.addr.to_string(), v6.addr.to_string());
    let mapped = format!("[::ffff:127.0.0.2]:{}", v4.addr.port());
    for (dst, msg) in [(&a4, "via-v4"), (&a6, "via-v6"), (&mapped, "via-mapped")] {
        let reply = client_in(&cg, &["echo", dst, msg], &[])?;
        assert!(
            reply.starts_with("ok echo ") && reply.ends_with(msg),
            "{dst}: {reply}"
        );
    }
    let ev = d.wait_events("three sessions ended", |e| {
        of_type(e, "session_ended").len() == 3
    })?;
    // The v4-mapped connect is reported with its IPv4 destination.
    assert_eq!(sessions_to(&d, &a4), 2, "{ev:#?}");
    assert_eq!(sessions_to(&d, &a6), 1, "{ev:#?}");
    for end in of_type(&ev, "session_ended") {
        assert_eq!(end["outcome"], "closed");
        assert!(end["bytes_client_to_server"].as_u64() >= Some(6), "{end}");
        assert!(end["bytes_server_to_client"].as_u64() > Some(10), "{end}");
    }

    // A non-target port from inside the scope, and a target from outside it, go direct.
    let reply = client_in(&cg, &["echo", &other.addr.to_string(), "not-a-target"], &[])?;
    assert!(reply.ends_with("not-a-target"), "{reply}");
    let reply = client_outside(&["echo", &a4, "outside"])?;
    assert!(reply.ends_with("outside"), "{reply}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        of_type(&d.events(), "session_started").len(),
        3,
        "only the three in-scope target connects"
    );
    Ok(())
}

#[test]
fn prefixes_any_address_and_host_names() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let prefix = EchoServer::start("127.0.0.3:0")?;
    let any = EchoServer::start("127.0.0.4:0")?;
    let host = EchoServer::start("127.0.0.1:0")?;
    let cg = TestCgroup::new("prefix")?;
    let policy = format!(
        "version: 1\ntargets:\n  - name: net\n    protocol: tcp\n    match:\n      - {{ address: 127.0.0.0/8, port: {} }}\n  - name: anywhere\n    protocol: tcp\n    match:\n      - {{ port: {} }}\n  - name: byname\n    protocol: tcp\n    match:\n      - {{ address: localhost, port: {} }}\n",
        prefix.addr.port(),
        any.addr.port(),
        host.addr.port()
    );
    let d = Daemon::start(DaemonSpec {
        policy,
        scopes: vec![cg.scope().into()],
        extra_args: vec![],
    })?;
    for (addr, target) in [
        (prefix.addr, "net"),
        (any.addr, "anywhere"),
        (host.addr, "byname"),
    ] {
        let reply = client_in(&cg, &["echo", &addr.to_string(), target], &[])?;
        assert!(reply.ends_with(target), "{reply}");
        let ev = d.wait_events(target, |e| {
            of_type(e, "session_started")
                .iter()
                .any(|s| s["identity"]["target"] == target)
        })?;
        let s = of_type(&ev, "session_started")
            .into_iter()
            .find(|s| s["identity"]["target"] == target);
        assert_eq!(
            s.map(|s| s["identity"]["original_destination"].clone()),
            Some(addr.to_string().into())
        );
    }
    Ok(())
}

#[test]
fn a_connection_with_no_flow_is_refused_and_reported() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let cg = TestCgroup::new("noflow")?;
    let d = Daemon::start(DaemonSpec::tcp(&cg, &[9], &[]))?;
    // Straight at the listener, from outside the scope: the kernel recorded nothing.
    let listener = d.listener("tcp", true)?;
    let reply = client_outside(&["echo", &listener.to_string(), "sneak"])?;
    // Closed (or reset) without a byte relayed anywhere.
    assert!(reply == "ok " || reply.starts_with("err "), "{reply}");
    let ev = d.wait_events("refusal", |e| !of_type(e, "connection_refused").is_empty())?;
    let r = of_type(&ev, "connection_refused")[0];
    assert!(
        r["reason"].as_str().unwrap_or("").contains("no flow"),
        "{r}"
    );
    assert!(of_type(&ev, "session_started").is_empty());
    Ok(())
}

/// Accepts, reads once, then resets the connection (SO_LINGER 0).
fn start_resetting_server() -> Result<std::net::SocketAddr> {
    use std::{io::Read as _, os::fd::AsRawFd as _};
    let l = std::net::TcpListener::bind("127.0.0.2:0")?;
    let addr = l.local_addr()?;
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf);
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: setsockopt on a socket we own with a correctly sized linger struct.
            unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                )
            };
            drop(s);
        }
    });
    Ok(addr)
}

#[test]
fn an_upstream_reset_ends_only_its_own_session() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let good = EchoServer::start("127.0.0.2:0")?;
    let rude = start_resetting_server()?;
    let cg = TestCgroup::new("reset")?;
    let d = Daemon::start(DaemonSpec::tcp(&cg, &[good.addr.port(), rude.port()], &[]))?;
    let holder = cg
        .command(
            &testclient(),
            &["hold", &good.addr.to_string(), "1.5", "tick"],
        )
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    d.wait_events("held session", |e| {
        !of_type(e, "session_started").is_empty()
    })?;
    let reply = client_in(&cg, &["echo", &rude.to_string(), "boom"], &[])?;
    assert!(!reply.contains("echo"), "{reply}");
    let out = holder.wait_with_output()?;
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("ok "),
        "the other session survived: {out:?}"
    );
    let ev = d.wait_events("both ended", |e| of_type(e, "session_ended").len() == 2)?;
    let by_dst = |dst: String| {
        let id = of_type(&ev, "session_started")
            .into_iter()
            .find(|s| s["identity"]["original_destination"] == dst.as_str())
            .map(|s| s["session_id"].clone());
        of_type(&ev, "session_ended")
            .into_iter()
            .find(|e| Some(&e["session_id"]) == id.as_ref())
            .cloned()
    };
    let rude_end = by_dst(rude.to_string()).expect("rude session ended");
    assert_eq!(rude_end["outcome"], "error", "{rude_end}");
    assert!(
        rude_end["error"].as_str().unwrap_or("").contains("reset"),
        "{rude_end}"
    );
    assert_eq!(
        by_dst(good.addr.to_string()).expect("good session ended")["outcome"],
        "closed"
    );
    // And the daemon carries on.
    assert!(
        client_in(&cg, &["echo", &good.addr.to_string(), "still-here"], &[])?
            .ends_with("still-here")
    );
    Ok(())
}

#[test]
fn an_unreachable_upstream_resets_the_client_and_is_reported() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    // A port on 127.0.0.2 with nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.2:0")?.local_addr()?;
    let cg = TestCgroup::new("unreachable")?;
    let d = Daemon::start(DaemonSpec::tcp(&cg, &[closed.port()], &[]))?;
    // A client that waits for the server to speak first (as SSH clients do).
    let reply = client_in(&cg, &["read", &closed.to_string()], &[])?;
    assert!(
        reply.starts_with("err ConnectionReset"),
        "a reset, not an orderly close: {reply}"
    );
    let ev = d.wait_events("the end", |e| !of_type(e, "session_ended").is_empty())?;
    let end = of_type(&ev, "session_ended")[0];
    assert_eq!(end["outcome"], "upstream_unreachable", "{end}");
    assert!(
        end["error"].as_str().unwrap_or("").contains("refused"),
        "{end}"
    );
    Ok(())
}
