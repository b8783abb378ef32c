//! sftp and scp through the SSH proxy, against a real sshd and the real
//! OpenSSH clients: file operations decided (allow, block, hold) and
//! recorded with paths and byte counts; legacy `scp -O` is an exec.

use std::sync::Arc;

use interlock::gate::{CommandKind, HoldOutcome};
use interlock_tests::{
    Sshd,
    sshproxy::{TestGate, proxy, text},
};

fn gate() -> TestGate {
    TestGate {
        block: vec!["secret-keep".into()],
        hold: vec!["held-upload".into()],
        ..TestGate::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_file_operations_are_decided_and_recorded() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start("127.0.0.3").unwrap();
    let gate = Arc::new(gate());
    let p = proxy(&sshd, Arc::clone(&gate)).await;
    let d = sshd.dir.display();
    let local = sshd.dir.join("local.txt");
    let content = "sftp payload\n".repeat(1000);
    std::fs::write(&local, &content).unwrap();
    std::fs::write(sshd.dir.join("secret-keep.txt"), "keep").unwrap();
    let batch = sshd.dir.join("batch");
    let script = format!(
        "put {d}/local.txt {d}/up.txt\nget {d}/up.txt {d}/down.txt\nmkdir {d}/newdir\n\
         rename {d}/up.txt {d}/renamed.txt\n-rm {d}/secret-keep.txt\n"
    );
    std::fs::write(&batch, script).unwrap();
    let out = p.sftp(&batch).await.unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(sshd.dir.join("renamed.txt")).unwrap(),
        content
    );
    assert_eq!(
        std::fs::read_to_string(sshd.dir.join("down.txt")).unwrap(),
        content
    );
    assert!(sshd.dir.join("newdir").is_dir());
    assert!(
        sshd.dir.join("secret-keep.txt").exists(),
        "the blocked remove must not reach the server"
    );
    let cmds = gate.commands();
    let n = content.len();
    let has = |kind: CommandKind, text: String| {
        cmds.iter()
            .any(|(k, t, s)| *k == kind && *t == text && *s == Some(0))
    };
    assert!(
        has(
            CommandKind::FileWrite,
            format!("{d}/up.txt: {n} bytes written")
        ),
        "{cmds:?}"
    );
    assert!(
        has(CommandKind::FileRead, format!("{d}/up.txt: {n} bytes read")),
        "{cmds:?}"
    );
    assert!(
        has(CommandKind::FileMkdir, format!("{d}/newdir")),
        "{cmds:?}"
    );
    // Each path of a rename is decided and recorded on its own.
    assert!(
        has(CommandKind::FileRename, format!("{d}/up.txt"))
            && has(CommandKind::FileRename, format!("{d}/renamed.txt")),
        "{cmds:?}"
    );
    assert!(
        !cmds.iter().any(|(k, _, _)| *k == CommandKind::FileRemove),
        "{cmds:?}"
    );
    assert!(
        cmds.iter()
            .any(|(k, t, _)| *k == CommandKind::Subsystem && t == "sftp")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scp_works_in_sftp_and_legacy_mode() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start("127.0.0.3").unwrap();
    let gate = Arc::new(gate());
    let p = proxy(&sshd, Arc::clone(&gate)).await;
    let d = sshd.dir.display();
    let local = sshd.dir.join("scp-local.txt");
    std::fs::write(&local, "scp payload").unwrap();
    let from = local.display().to_string();
    // Several MiB each way: flow control through both SSH legs.
    let big: Vec<u8> = (0..6_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(sshd.dir.join("big.bin"), &big).unwrap();
    let remote_big = format!("root@127.0.0.1:{d}/big.bin");
    let back = sshd.dir.join("big-back.bin");
    let out = p
        .scp(&[], &remote_big, &back.display().to_string())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    assert!(std::fs::read(&back).unwrap() == big, "download differs");
    let read = format!("{d}/big.bin: 6000000 bytes read");
    assert!(
        gate.commands()
            .iter()
            .any(|(k, t, _)| *k == CommandKind::FileRead && *t == read)
    );
    let out = p
        .ssh(&[], &format!("cat > {d}/big-up.bin"), &big)
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    assert!(
        std::fs::read(sshd.dir.join("big-up.bin")).unwrap() == big,
        "upload differs"
    );
    // Both directions saturated at once: this stalled a relay that read
    // one direction while blocked writing the other, and then russh as
    // published, which granted window on receipt (issue 13; vendor/russh
    // grants it on consumption).
    let echo: Vec<u8> = (0..32_000_000u32).map(|i| (i % 241) as u8).collect();
    let out = p.ssh(&[], "cat", &echo).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    assert!(out.stdout == echo, "echoed stream differs");
    let out = p
        .scp(&[], &from, &format!("root@127.0.0.1:{d}/scp-new.txt"))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    let out = p
        .scp(&["-O"], &from, &format!("root@127.0.0.1:{d}/scp-old.txt"))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    assert_eq!(
        std::fs::read_to_string(sshd.dir.join("scp-new.txt")).unwrap(),
        "scp payload"
    );
    assert_eq!(
        std::fs::read_to_string(sshd.dir.join("scp-old.txt")).unwrap(),
        "scp payload"
    );
    let cmds = gate.commands();
    assert!(
        cmds.iter().any(|(k, t, _)| *k == CommandKind::FileWrite
            && *t == format!("{d}/scp-new.txt: 11 bytes written")),
        "{cmds:?}"
    );
    assert!(
        cmds.iter().any(|(k, t, s)| *k == CommandKind::Exec
            && t.starts_with("scp -t")
            && t.contains("scp-old.txt")
            && *s == Some(0)),
        "{cmds:?}"
    );
}

async fn held_upload(outcome: HoldOutcome) -> (std::process::Output, Sshd) {
    let sshd = Sshd::start("127.0.0.3").unwrap();
    let gate = Arc::new(gate());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    *gate.holds.lock().unwrap() = Some(tx);
    let p = proxy(&sshd, Arc::clone(&gate)).await;
    let d = sshd.dir.display();
    std::fs::write(sshd.dir.join("local.txt"), "held content").unwrap();
    let batch = sshd.dir.join("batch");
    std::fs::write(&batch, format!("put {d}/local.txt {d}/held-upload.txt\n")).unwrap();
    let client = tokio::spawn(async move { p.sftp(&batch).await.unwrap() });
    let hold = rx.recv().await.unwrap();
    assert_eq!(hold.text, format!("{d}/held-upload.txt"));
    assert!(!sshd.dir.join("held-upload.txt").exists());
    hold.resolve.send(outcome).unwrap();
    (client.await.unwrap(), sshd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_sftp_upload_waits_for_approval() {
    if !Sshd::available() {
        return;
    }
    let approved = HoldOutcome::Approved {
        by: "alice".into(),
        reason: None,
    };
    let (out, sshd) = held_upload(approved).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("interlock: held for approval"), "{stderr}");
    let written = std::fs::read_to_string(sshd.dir.join("held-upload.txt")).unwrap();
    assert_eq!(written, "held content");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_sftp_upload_is_not_written() {
    if !Sshd::available() {
        return;
    }
    let (out, sshd) = held_upload(HoldOutcome::Expired).await;
    let (_, stderr) = text(&out);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("expired"), "{stderr}");
    assert!(!sshd.dir.join("held-upload.txt").exists());
}

/// Requests the gate saw, as (kind, text).
fn asked(gate: &TestGate) -> Vec<(CommandKind, String)> {
    gate.requests
        .lock()
        .unwrap()
        .iter()
        .filter_map(|r| match r {
            interlock::gate::Request::Command { kind, text } => Some((*kind, text.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_paths_are_normalised_before_they_are_decided() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start("127.0.0.46").unwrap();
    let gate = Arc::new(TestGate {
        block: vec!["/protected/".into()],
        ..TestGate::default()
    });
    let p = proxy(&sshd, Arc::clone(&gate)).await;
    let d = sshd.dir.display();
    std::fs::create_dir_all(sshd.dir.join("protected")).unwrap();
    std::fs::create_dir_all(sshd.dir.join("work")).unwrap();
    std::fs::write(sshd.dir.join("local.txt"), "payload\n").unwrap();
    std::fs::write(sshd.dir.join("work/ok.txt"), "ok\n").unwrap();
    // None of these spells `/protected/` as the rule does; all land there.
    let batch = sshd.dir.join("batch");
    let script = format!(
        "-put {d}/local.txt /tmp/..{d}/protected/a\n\
         cd {d}/work\n\
         -put {d}/local.txt ../protected/b\n\
         -put {d}/local.txt {d}//work/..//protected/./c\n\
         -rename ok.txt ../protected/d\n\
         -symlink {d}/protected/e link-into-protected\n\
         put {d}/local.txt allowed.txt\n"
    );
    std::fs::write(&batch, script).unwrap();
    let out = p.sftp(&batch).await.unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let protected: Vec<_> = std::fs::read_dir(sshd.dir.join("protected"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(protected.is_empty(), "{protected:?}");
    assert!(
        sshd.dir.join("work/ok.txt").exists(),
        "the rename was refused"
    );
    assert!(!sshd.dir.join("work/link-into-protected").exists());
    assert!(sshd.dir.join("work/allowed.txt").exists());
    let asked = asked(&gate);
    for (kind, name) in [
        (CommandKind::FileWrite, "a"),
        (CommandKind::FileWrite, "b"),
        (CommandKind::FileWrite, "c"),
        (CommandKind::FileRename, "d"),
        (CommandKind::FileWrite, "e"),
    ] {
        let want = (kind, format!("{d}/protected/{name}"));
        assert!(asked.contains(&want), "{want:?} in {asked:?}");
    }
    assert!(
        asked.contains(&(CommandKind::FileRename, format!("{d}/work/ok.txt"))),
        "{asked:?}"
    );
    assert!(
        asked
            .iter()
            .all(|(_, t)| !t.contains("..") && !t.contains("//") && !t.contains("/./")),
        "{asked:?}"
    );
    let cmds = gate.commands();
    assert!(
        cmds.iter().any(|(k, t, _)| *k == CommandKind::FileWrite
            && *t == format!("{d}/work/allowed.txt: 8 bytes written")),
        "{cmds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_of_the_sftp_server_is_inspected_like_the_subsystem() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start("127.0.0.47").unwrap();
    let gate = Arc::new(TestGate {
        block: vec!["/protected/".into()],
        ..TestGate::default()
    });
    let p = proxy(&sshd, Arc::clone(&gate)).await;
    let d = sshd.dir.display();
    std::fs::create_dir_all(sshd.dir.join("protected")).unwrap();
    std::fs::write(sshd.dir.join("local.txt"), "payload\n").unwrap();
    let batch = sshd.dir.join("batch");
    std::fs::write(
        &batch,
        format!("-put {d}/local.txt {d}/protected/x\nput {d}/local.txt {d}/fine.txt\n"),
    )
    .unwrap();
    // `sftp -s PATH` runs the server binary with an exec request.
    let mut args = p.options();
    args.extend(["-P".into(), p.addr.port().to_string()]);
    args.extend(["-s".into(), "/usr/lib/openssh/sftp-server".into()]);
    args.extend(["-b".into(), batch.display().to_string()]);
    args.push("root@127.0.0.1".into());
    let out = tokio::process::Command::new("sftp")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert!(!sshd.dir.join("protected/x").exists());
    assert!(sshd.dir.join("fine.txt").exists());
    let asked = asked(&gate);
    let exec = asked
        .iter()
        .position(|(k, t)| *k == CommandKind::Exec && t.contains("sftp-server"));
    let subsystem = asked
        .iter()
        .position(|(k, t)| *k == CommandKind::Subsystem && t == "sftp");
    assert!(exec.is_some() && subsystem > exec, "{asked:?}");
    assert!(
        asked.contains(&(CommandKind::FileWrite, format!("{d}/protected/x"))),
        "{asked:?}"
    );
    let cmds = gate.commands();
    assert!(
        cmds.iter().any(|(k, t, _)| *k == CommandKind::FileWrite
            && *t == format!("{d}/fine.txt: 8 bytes written")),
        "{cmds:?}"
    );
}
