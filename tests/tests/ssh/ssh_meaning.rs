//! SSH exec commands decided by what they do, through the proxy against a
//! real sshd and the real OpenSSH clients: an exec of a shell that reads
//! its input (`ssh -t host bash`, `ssh host sh < script`) is decided as
//! `shell`; legacy `scp -O` uploads and `tee` writes are decided as
//! `file_write` on the normalised path; a path only known when the command
//! runs refuses it.

use std::sync::Arc;

use interlock::gate::{CommandKind, Request};
use interlock::ssh::HostIdentity;
use interlock_tests::{
    Sshd,
    sshproxy::{self, TestGate, text},
};

fn requests(gate: &TestGate) -> Vec<(CommandKind, String)> {
    gate.requests
        .lock()
        .unwrap()
        .iter()
        .filter_map(|r| match r {
            Request::Command { kind, text } => Some((*kind, text.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_commands_are_decided_by_what_they_do() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start("127.0.0.64").unwrap();
    let zone = sshd.dir.join("zone");
    std::fs::create_dir_all(zone.join("sub")).unwrap();
    let zone = zone.display().to_string();
    // Blocks writes to `<zone>/guarded*` and shells; the exec texts below
    // never contain that string, only the normalised paths do.
    let gate = Arc::new(TestGate {
        block: vec![format!("{zone}/guarded")],
        deny_shell: true,
        ..TestGate::default()
    });
    let target = sshproxy::target(&sshd, HostIdentity::generate().unwrap()).unwrap();
    let p = sshproxy::start(&sshd, target, Arc::clone(&gate), None)
        .await
        .unwrap();

    // a shell reading its input, with or without a terminal
    let out = p
        .ssh(&["-tt"], "bash", b"echo from-shell\nexit\n")
        .await
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("no-shells"), "{stderr}");
    let out = p.ssh(&[], "sh", b"echo from-sh\n").await.unwrap();
    let (stdout, stderr) = text(&out);
    assert!(!stdout.contains("from-sh"), "{stdout}\n{stderr}");
    assert!(
        requests(&gate).contains(&(CommandKind::Shell, "shell".into())),
        "{:?}",
        requests(&gate)
    );
    // a command given to the shell is an exec, not a shell
    let out = p.ssh(&[], "bash -c 'echo fine'", b"").await.unwrap();
    assert!(out.status.success(), "{}", text(&out).1);

    // legacy scp upload: decided as a write of the normalised path
    let local = sshd.dir.join("payload.txt");
    std::fs::write(&local, "payload").unwrap();
    let to = format!("root@127.0.0.1:{zone}/sub/../guarded.txt");
    let out = p
        .scp(&["-O"], &local.display().to_string(), &to)
        .await
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out).1);
    assert!(!std::path::Path::new(&format!("{zone}/guarded.txt")).exists());
    assert!(requests(&gate).contains(&(CommandKind::FileWrite, format!("{zone}/guarded.txt"))));
    let to = format!("root@127.0.0.1:{zone}/sub/../open.txt");
    let out = p
        .scp(&["-O"], &local.display().to_string(), &to)
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out).1);

    // tee and redirections write files too
    let cmd = format!("tee {zone}/sub/../guarded-tee.txt >/dev/null");
    let out = p.ssh(&[], &cmd, b"data\n").await.unwrap();
    assert!(!out.status.success());
    assert!(!std::path::Path::new(&format!("{zone}/guarded-tee.txt")).exists());
    let cmd = format!("echo x > {zone}/./guarded-redirect.txt");
    let out = p.ssh(&[], &cmd, b"").await.unwrap();
    assert!(!out.status.success());
    assert!(!std::path::Path::new(&format!("{zone}/guarded-redirect.txt")).exists());
    // a path only known when the command runs is refused
    let out = p
        .ssh(&[], "echo x > \"$HOME/interlock-dynamic.txt\"", b"")
        .await
        .unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("only known when it runs"), "{stderr}");
}
