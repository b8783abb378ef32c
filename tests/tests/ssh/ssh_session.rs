//! SSH proxy sessions beyond single commands: the session decision, holds
//! withdrawn by a disconnect, known_hosts verification of the upstream, and
//! port forwarding (direct-tcpip via `ssh -W`), against a real sshd and the
//! real OpenSSH client.

use std::sync::Arc;

use interlock::{
    gate::CommandKind,
    ssh::{ClientAuth, HostIdentity, HostKeyCheck},
};
use interlock_tests::{
    EchoServer, Sshd,
    sshagent::Agent,
    sshproxy::{self, TestGate, proxy, text},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_session_is_refused_with_the_message() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start("127.0.0.3").unwrap();
    let gate = Arc::new(TestGate {
        block_session: true,
        ..TestGate::default()
    });
    let p = proxy(&sshd, Arc::clone(&gate)).await;
    let out = p.ssh(&[], "true", b"").await.unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    assert!(
        stderr.contains("interlock: blocked by rule no-sessions: sessions are closed"),
        "{stderr}"
    );
    assert!(
        !sshd.log().contains("Accepted publickey"),
        "no upstream session for a blocked one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_session_starts_after_approval() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start("127.0.0.3").unwrap();
    let gate = Arc::new(TestGate {
        hold_session: true,
        ..TestGate::default()
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    *gate.holds.lock().unwrap() = Some(tx);
    let p = proxy(&sshd, Arc::clone(&gate)).await;
    let client = tokio::spawn(async move { p.ssh(&[], "echo in", b"").await.unwrap() });
    let hold = rx.recv().await.unwrap();
    assert_eq!(hold.text, "session");
    let approved = interlock::gate::HoldOutcome::Approved {
        by: "alice".into(),
        reason: None,
    };
    hold.resolve.send(approved).unwrap();
    let out = client.await.unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(stdout, "in\n", "{stderr}");
    assert!(
        stderr.contains("interlock: session held for approval appr-"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_withdraws_a_session_hold() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start("127.0.0.3").unwrap();
    let gate = Arc::new(TestGate {
        hold_session: true,
        ..TestGate::default()
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    *gate.holds.lock().unwrap() = Some(tx);
    let p = proxy(&sshd, Arc::clone(&gate)).await;
    let client = tokio::spawn(async move { p.ssh(&[], "echo in", b"").await });
    let mut hold = rx.recv().await.unwrap();
    client.abort();
    let _ = client.await;
    hold.resolve.closed().await;
    assert_eq!(gate.withdrawn.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_withdraws_a_hold() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start("127.0.0.3").unwrap();
    let gate = Arc::new(TestGate {
        hold: vec!["needs-approval".into()],
        ..TestGate::default()
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    *gate.holds.lock().unwrap() = Some(tx);
    let p = proxy(&sshd, Arc::clone(&gate)).await;
    let client = tokio::spawn(async move { p.ssh(&[], "echo x # needs-approval", b"").await });
    let mut hold = rx.recv().await.unwrap();
    // Dropping the client's future kills ssh (kill_on_drop).
    client.abort();
    let _ = client.await;
    hold.resolve.closed().await;
    assert_eq!(gate.withdrawn.lock().unwrap().len(), 1);
    assert!(gate.commands().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_verified_against_known_hosts() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start("127.0.0.3").unwrap();
    let gate = Arc::new(TestGate::default());
    let known = sshd.dir.join("upstream_known_hosts");
    let line = format!(
        "[{}]:{} {}\n",
        sshd.addr.ip(),
        sshd.addr.port(),
        sshd.host_public_key
    );
    std::fs::write(&known, line).unwrap();
    let mut target = sshproxy::target(&sshd, HostIdentity::generate().unwrap()).unwrap();
    target.host_key_check = HostKeyCheck::KnownHosts(known.clone());
    let p = sshproxy::start(&sshd, target.clone(), Arc::clone(&gate), None)
        .await
        .unwrap();
    let out = p.ssh(&[], "echo known", b"").await.unwrap();
    assert_eq!(text(&out).0, "known\n", "{}", text(&out).1);

    let empty = sshd.dir.join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    target.host_key_check = HostKeyCheck::KnownHosts(empty);
    let p = sshproxy::start(&sshd, target, gate, None).await.unwrap();
    let out = p.ssh(&[], "echo known", b"").await.unwrap();
    let (stdout, stderr) = text(&out);
    assert!(stdout.is_empty());
    assert!(stderr.contains("is not in"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forwarding_is_decided() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start("127.0.0.3").unwrap();
    let echo = EchoServer::start("127.0.0.3:0").unwrap();
    let allowed = EchoServer::start("127.0.0.3:0").unwrap();
    let gate = Arc::new(TestGate {
        block: vec![echo.addr.to_string()],
        ..TestGate::default()
    });
    let p = proxy(&sshd, Arc::clone(&gate)).await;
    let out = p
        .ssh(&["-W", &allowed.addr.to_string()], "", b"ping")
        .await
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(stdout.starts_with("echo 127.0.0.1:"), "{stdout} {stderr}");
    assert!(stdout.ends_with(" ping"), "{stdout}");
    let out = p
        .ssh(&["-W", &echo.addr.to_string()], "", b"ping")
        .await
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(stdout.is_empty());
    assert!(stderr.contains("interlock: blocked by rule"), "{stderr}");
    let forwarded = gate.commands();
    assert!(
        forwarded
            .iter()
            .any(|(k, t, _)| *k == CommandKind::PortForward && *t == allowed.addr.to_string()),
        "{forwarded:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_forwarding_is_decided() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start("127.0.0.3").unwrap();
    let gate = Arc::new(TestGate::default());
    let p = proxy(&sshd, Arc::clone(&gate)).await;
    let agent = Agent::start(&sshd.dir, &p.client_key).unwrap();
    let env = [("SSH_AUTH_SOCK", agent.sock.as_path())];
    let out = p.ssh_env(&["-A"], "ssh-add -l", b"", &env).await.unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("interlock-test"), "{stdout}");

    let gate = Arc::new(TestGate {
        block: vec!["agent".into()],
        ..TestGate::default()
    });
    let p = proxy(&sshd, Arc::clone(&gate)).await;
    let agent = Agent::start(&sshd.dir, &p.client_key).unwrap();
    let env = [("SSH_AUTH_SOCK", agent.sock.as_path())];
    let out = p.ssh_env(&["-A"], "ssh-add -l", b"", &env).await.unwrap();
    let (stdout, stderr) = text(&out);
    assert_ne!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stderr.contains("interlock: blocked by rule block-agent"),
        "{stderr}"
    );
    assert!(!stdout.contains("interlock-test"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_forwarding_is_decided() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start("127.0.0.3").unwrap();
    let echo = EchoServer::start("127.0.0.3:0").unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.3:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (open_port, shut_port) = (free(), free());
    let gate = Arc::new(TestGate {
        block: vec![format!("remote 127.0.0.3:{shut_port}")],
        ..TestGate::default()
    });
    let p = proxy(&sshd, Arc::clone(&gate)).await;
    let use_forward = |port: u16| {
        format!(
            "exec 3<>/dev/tcp/127.0.0.3/{port}; echo ping >&3; read -r line <&3; echo \"$line\""
        )
    };
    let spec = format!("127.0.0.3:{open_port}:{}", echo.addr);
    let args = ["-o", "ExitOnForwardFailure=yes", "-R", &spec];
    let out = p.ssh(&args, &use_forward(open_port), b"").await.unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.starts_with("echo ") && stdout.ends_with(" ping\n"),
        "{stdout}"
    );

    let spec = format!("127.0.0.3:{shut_port}:{}", echo.addr);
    let args = ["-o", "ExitOnForwardFailure=yes", "-R", &spec];
    let out = p.ssh(&args, &use_forward(shut_port), b"").await.unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(255), "{stdout}");
    assert!(stderr.contains("remote port forwarding failed"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_signal_is_relayed() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start("127.0.0.3").unwrap();
    let gate = Arc::new(TestGate::default());
    let p = proxy(&sshd, Arc::clone(&gate)).await;
    let out = p.ssh(&[], "echo before; kill -TERM $$", b"").await.unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(stdout, "before\n");
    // OpenSSH exits 255 when the remote command died of a signal.
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    let cmds = gate.commands();
    assert!(
        cmds.iter()
            .any(|(k, _, s)| *k == CommandKind::Exec && s.is_none()),
        "{cmds:?}"
    );
    assert_eq!(
        gate.exit_signals(),
        [("echo before; kill -TERM $$".to_string(), "TERM".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_auth_methods_follow_the_target() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start("127.0.0.3").unwrap();
    let gate = Arc::new(TestGate::default());
    let mut target = sshproxy::target(&sshd, HostIdentity::generate().unwrap()).unwrap();
    target.client_auth = ClientAuth {
        publickey: false,
        password: false,
        none: true,
        job_token: false,
    };
    let p = sshproxy::start(&sshd, target.clone(), Arc::clone(&gate), None)
        .await
        .unwrap();
    let out = p
        .ssh(&["-o", "PubkeyAuthentication=no"], "echo none-ok", b"")
        .await
        .unwrap();
    assert_eq!(text(&out).0, "none-ok\n", "{}", text(&out).1);

    target.client_auth = ClientAuth {
        publickey: false,
        password: true,
        none: false,
        job_token: false,
    };
    let p = sshproxy::start(&sshd, target, gate, None).await.unwrap();
    let out = p.ssh(&[], "echo nope", b"").await.unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(255));
    assert!(stdout.is_empty());
    assert!(stderr.contains("Permission denied"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiplexed_channels_share_one_upstream_session() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start("127.0.0.3").unwrap();
    let gate = Arc::new(TestGate {
        block: vec!["forbidden-cmd".into()],
        ..TestGate::default()
    });
    let p = proxy(&sshd, Arc::clone(&gate)).await;
    let control = sshd.dir.join("mux.sock");
    let control = format!("ControlPath={}", control.display());
    let master = [
        "-o",
        "ControlMaster=yes",
        "-o",
        &control,
        "-o",
        "ControlPersist=yes",
        "-N",
        "-f",
    ];
    let out = p.ssh(&master, "", b"").await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    let mux = ["-o", "ControlMaster=no", "-o", &control];
    let (a, b) = tokio::join!(p.ssh(&mux, "echo one", b""), p.ssh(&mux, "echo two", b""));
    assert_eq!(text(&a.unwrap()).0, "one\n");
    assert_eq!(text(&b.unwrap()).0, "two\n");
    let blocked = p.ssh(&mux, "echo forbidden-cmd", b"").await.unwrap();
    assert_eq!(blocked.status.code(), Some(1));
    let out = p
        .ssh(&["-o", &control, "-O", "exit"], "", b"")
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    let logins = sshd.log().matches("Accepted publickey").count();
    assert_eq!(logins, 1, "{}", sshd.log());
}
