//! The SSH proxy against a real sshd and the real OpenSSH clients: exec
//! control (allow, block, hold), injected credentials, upstream host key
//! verification, PTY shells recorded as asciicast and host certificates
//! from interlock's SSH CA. sftp/scp: ssh_sftp.rs; sessions and
//! forwarding: ssh_session.rs.

use std::sync::Arc;

use interlock::{
    gate::{CommandKind, HoldOutcome},
    ssh::{HostIdentity, HostKeyCheck, SshCa},
};
use interlock_tests::{
    PtyChild, Sshd,
    sshproxy::{self, TestGate, proxy, text},
};

fn gate() -> TestGate {
    TestGate {
        block: vec!["forbidden-cmd".into(), "secret-keep".into()],
        hold: vec!["needs-approval".into()],
        ..TestGate::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_upstream_with_the_injected_key() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start("127.0.0.3").unwrap();
    let gate = Arc::new(gate());
    let mut target = sshproxy::target(&sshd, HostIdentity::generate().unwrap()).unwrap();
    target.env = vec!["INTERLOCK_GREETING".into()];
    let p = sshproxy::start(&sshd, target, Arc::clone(&gate), None)
        .await
        .unwrap();
    // sshd accepts INTERLOCK_*; only the variable the target lists gets there.
    let out = p
        .ssh(
            &["-o", "SetEnv=INTERLOCK_GREETING=hi INTERLOCK_SNEAKY=boo"],
            "cat; echo \"env=$INTERLOCK_GREETING$INTERLOCK_SNEAKY\"; echo to-stderr >&2; exit 3",
            b"from-stdin\n",
        )
        .await
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(3),
        "stderr: {stderr}\n{}",
        sshd.log()
    );
    assert_eq!(stdout, "from-stdin\nenv=hi\n");
    assert!(stderr.contains("to-stderr"), "{stderr}");
    let env = gate.records_of(|r| match r {
        interlock::gate::Record::Env {
            name,
            value,
            allowed,
        } if name.starts_with("INTERLOCK_") => Some((name.clone(), value.clone(), *allowed)),
        _ => None,
    });
    assert_eq!(
        env,
        [
            (
                "INTERLOCK_GREETING".to_string(),
                Some("hi".to_string()),
                true
            ),
            ("INTERLOCK_SNEAKY".to_string(), None, false)
        ]
    );
    let cmds = gate.commands();
    assert!(
        cmds.iter()
            .any(|(k, t, s)| *k == CommandKind::Exec && t.starts_with("cat;") && *s == Some(3)),
        "{cmds:?}"
    );
    // The rogue key reached only the proxy: sshd saw the injected one.
    assert!(
        sshd.log().contains("Accepted publickey for root"),
        "{}",
        sshd.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_exec_does_not_run() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start("127.0.0.3").unwrap();
    let gate = Arc::new(gate());
    let p = proxy(&sshd, Arc::clone(&gate)).await;
    let marker = sshd.dir.join("blocked-marker");
    let cmd = format!("touch {} # forbidden-cmd", marker.display());
    let out = p.ssh(&[], &cmd, b"").await.unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "interlock: blocked by rule block-forbidden-cmd: 'forbidden-cmd' is forbidden here"
        ),
        "{stderr}"
    );
    assert!(!marker.exists());
    assert!(
        gate.commands().is_empty(),
        "a blocked command is not recorded as run"
    );
}

async fn held(outcome: HoldOutcome) -> (std::process::Output, bool, Arc<TestGate>) {
    let sshd = Sshd::start("127.0.0.3").unwrap();
    let gate = Arc::new(gate());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    *gate.holds.lock().unwrap() = Some(tx);
    let p = proxy(&sshd, Arc::clone(&gate)).await;
    let marker = sshd.dir.join("held-marker");
    let cmd = format!("touch {} && echo done # needs-approval", marker.display());
    let client = tokio::spawn(async move { p.ssh(&[], &cmd, b"").await.unwrap() });
    let hold = rx.recv().await.unwrap();
    assert!(hold.text.contains("needs-approval"));
    assert!(
        !marker.exists(),
        "a held command must not run before approval"
    );
    hold.resolve.send(outcome).unwrap();
    let out = client.await.unwrap();
    (out, marker.exists(), gate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_exec_runs_after_approval() {
    if !Sshd::available() {
        return;
    }
    let approved = HoldOutcome::Approved {
        by: "alice".into(),
        reason: None,
    };
    let (out, ran, gate) = held(approved).await;
    let (stdout, stderr) = text(&out);
    assert!(
        stderr.contains("interlock: held for approval appr-"),
        "{stderr}"
    );
    assert!(stderr.contains("interlock approvals approve"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout, "done\n");
    assert!(ran);
    assert!(
        gate.commands()
            .iter()
            .any(|(k, _, s)| *k == CommandKind::Exec && *s == Some(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_exec_fails_after_denial() {
    if !Sshd::available() {
        return;
    }
    let denied = HoldOutcome::Denied {
        by: "bob".into(),
        reason: Some("not today".into()),
    };
    let (out, ran, _) = held(denied).await;
    let (_, stderr) = text(&out);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr.contains("denied by bob: not today"), "{stderr}");
    assert!(!ran);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_host_key_mismatch_refuses() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start("127.0.0.3").unwrap();
    let gate = Arc::new(gate());
    let mut target = sshproxy::target(&sshd, HostIdentity::generate().unwrap()).unwrap();
    let other = HostIdentity::generate().unwrap().public_key_openssh();
    target.host_key_check = HostKeyCheck::Pinned(other);
    let p = sshproxy::start(&sshd, target, Arc::clone(&gate), None)
        .await
        .unwrap();
    let out = p.ssh(&[], "true", b"").await.unwrap();
    let (_, stderr) = text(&out);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr.contains("upstream host key mismatch"), "{stderr}");
    eprintln!("client saw: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_certificate_from_the_ca_is_trusted() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start("127.0.0.3").unwrap();
    let gate = Arc::new(gate());
    let ca = SshCa::load_or_create(&sshd.dir.join("state")).unwrap();
    let identity = ca.mint_host(&["127.0.0.1", "target.internal"]).unwrap();
    let target = sshproxy::target(&sshd, identity).unwrap();
    let line = ca.known_hosts_line(&["127.0.0.1", "[127.0.0.1]:*"]);
    let p = sshproxy::start(&sshd, target, gate, Some(line))
        .await
        .unwrap();
    let out = p.ssh(&[], "echo via-cert", b"").await.unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout, "via-cert\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_shell_is_relayed_recorded_and_its_lines_reconstructed() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start("127.0.0.3").unwrap();
    let gate = Arc::new(gate());
    let p = proxy(&sshd, Arc::clone(&gate)).await;
    let input = b"echo hi-$((6*7))\nexit 0\n";
    let out = p.ssh(&["-tt"], "", input).await.unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("hi-42"), "{stdout}");
    let casts: Vec<_> = std::fs::read_dir(&p.recordings)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(casts.len(), 1, "{casts:?}");
    let cast = std::fs::read_to_string(&casts[0]).unwrap();
    let mut lines = cast.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert!(header["width"].as_u64().unwrap() > 0);
    assert!(header["timestamp"].as_u64().is_some());
    let events: Vec<serde_json::Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    let output: String = events
        .iter()
        .filter(|e| e[1] == "o")
        .map(|e| e[2].as_str().unwrap())
        .collect();
    assert!(output.contains("hi-42"), "{output}");
    // The typed input itself is recorded, keystroke for keystroke.
    let input: String = events
        .iter()
        .filter(|e| e[1] == "i")
        .map(|e| e[2].as_str().unwrap())
        .collect();
    assert_eq!(input, "echo hi-$((6*7))\nexit 0\n");
    assert!(events.iter().all(|e| e[0].as_f64().is_some()));
    assert_eq!(
        gate.shell_lines(),
        ["echo hi-$((6*7))", "exit 0"],
        "reconstructed lines are their own records"
    );
    let cmds = gate.commands();
    assert!(
        cmds.contains(&(CommandKind::Shell, "shell".into(), Some(0))),
        "{cmds:?}"
    );
    // The shell's record names the recording with its size and digest.
    let recs = gate.recordings();
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0].path, casts[0]);
    let bytes = std::fs::read(&casts[0]).unwrap();
    assert_eq!(recs[0].bytes, bytes.len() as u64);
    assert_eq!(recs[0].sha256, sha256_hex(&bytes));
}

fn sha256_hex(bytes: &[u8]) -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().unwrap().write_all(bytes)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_shell_gets_the_reason() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start("127.0.0.3").unwrap();
    let gate = Arc::new(TestGate {
        deny_shell: true,
        ..gate()
    });
    let p = proxy(&sshd, Arc::clone(&gate)).await;
    let out = p.ssh(&["-tt"], "", b"exit 0\n").await.unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("interlock: blocked by rule no-shells"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_terminal_is_relayed_resized_and_recorded() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start("127.0.0.3").unwrap();
    let gate = Arc::new(gate());
    let p = proxy(&sshd, Arc::clone(&gate)).await;
    let args = p.ssh_args(&[], "");
    let status = tokio::task::spawn_blocking(move || {
        let mut t = PtyChild::spawn("ssh", &args, 80, 24).unwrap();
        t.write("stty size; echo MARK-$((1+1))\r").unwrap();
        let first = t.read_until("MARK-2").unwrap();
        assert!(first.contains("24 80"), "{first}");
        t.resize(100, 30).unwrap();
        // The resize races with the next line typed; ask until it shows.
        let resized = (0..50).any(|i| {
            t.write(&format!("stty size; echo MARK{i}-$((1+1))\r"))
                .unwrap();
            t.read_until(&format!("MARK{i}-2"))
                .unwrap()
                .contains("30 100")
        });
        assert!(resized, "the window change never reached the server");
        t.write("exit\r").unwrap();
        t.wait().unwrap()
    })
    .await
    .unwrap();
    assert!(status.success());
    let cast = std::fs::read_dir(&p.recordings)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let cast = std::fs::read_to_string(cast).unwrap();
    let mut lines = cast.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(80), Some(24))
    );
    let events: Vec<serde_json::Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(
        events.iter().any(|e| e[1] == "r" && e[2] == "100x30"),
        "{cast}"
    );
    assert!(
        events
            .iter()
            .any(|e| e[1] == "o" && e[2].as_str().unwrap().contains("MARK-2"))
    );
    assert!(
        gate.shell_lines()
            .contains(&"stty size; echo MARK-$((1+1))".to_string()),
        "{:?}",
        gate.shell_lines()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_leg_uses_aes_gcm_and_names_what_it_offers() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start("127.0.0.3").unwrap();
    let p = proxy(&sshd, Arc::new(gate())).await;
    // OpenSSH's default order starts with ChaCha20-Poly1305; the proxy offers AES-GCM only.
    let out = p.ssh(&["-v"], "true", b"").await.unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("cipher: aes128-gcm@openssh.com"),
        "{stderr}"
    );
    // A client that accepts nothing else is told there is no common cipher.
    let out = p
        .ssh(&["-c", "chacha20-poly1305@openssh.com"], "true", b"")
        .await
        .unwrap();
    let (_, stderr) = text(&out);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr.contains("no matching cipher found"), "{stderr}");
}
