//! Big transfers and rsync through the SSH proxy, against a real sshd and
//! the real OpenSSH clients: 100 MiB up and down with scp and sftp, checked
//! by sha256 on both ends and recorded with exact byte counts; a directory
//! tree synced with rsync, then a change synced again.

use std::{path::Path, process::Command, sync::Arc};

use interlock::gate::CommandKind;
use interlock_tests::{
    Sshd,
    sshproxy::{TestGate, proxy, text},
};

const BIG: u64 = 100 * 1024 * 1024;

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success(), "sha256sum {}", path.display());
    let line = String::from_utf8(out.stdout).unwrap();
    line.split_whitespace().next().unwrap().to_string()
}

/// `BIG` bytes of incompressible data.
fn big_file(path: &Path) {
    let status = Command::new("head")
        .args(["-c", &BIG.to_string(), "/dev/urandom"])
        .stdout(std::fs::File::create(path).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(std::fs::metadata(path).unwrap().len(), BIG);
}

fn recorded(gate: &TestGate, kind: CommandKind, text: &str) -> bool {
    gate.commands()
        .iter()
        .any(|(k, t, s)| *k == kind && t == text && *s == Some(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_up_and_down_with_scp_and_sftp() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start("127.0.0.3").unwrap();
    let gate = Arc::new(TestGate::default());
    let p = proxy(&sshd, Arc::clone(&gate)).await;
    let d = sshd.dir.display();
    let src = sshd.dir.join("src.bin");
    big_file(&src);
    let want = sha256(&src);

    // scp (sftp protocol) up, then the uploaded file back down.
    let out = p
        .scp(
            &[],
            &src.display().to_string(),
            &format!("root@127.0.0.1:{d}/scp-up.bin"),
        )
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    assert_eq!(sha256(&sshd.dir.join("scp-up.bin")), want, "scp upload");
    let down = sshd.dir.join("scp-down.bin");
    let out = p
        .scp(
            &[],
            &format!("root@127.0.0.1:{d}/scp-up.bin"),
            &down.display().to_string(),
        )
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    assert_eq!(sha256(&down), want, "scp download");
    let written = format!("{d}/scp-up.bin: {BIG} bytes written");
    let read = format!("{d}/scp-up.bin: {BIG} bytes read");
    assert!(
        recorded(&gate, CommandKind::FileWrite, &written),
        "{:?}",
        gate.commands()
    );
    assert!(
        recorded(&gate, CommandKind::FileRead, &read),
        "{:?}",
        gate.commands()
    );

    // sftp put and get.
    let batch = sshd.dir.join("batch");
    std::fs::write(
        &batch,
        format!("put {d}/src.bin {d}/sftp-up.bin\nget {d}/sftp-up.bin {d}/sftp-down.bin\n"),
    )
    .unwrap();
    let out = p.sftp(&batch).await.unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(sha256(&sshd.dir.join("sftp-up.bin")), want, "sftp put");
    assert_eq!(sha256(&sshd.dir.join("sftp-down.bin")), want, "sftp get");
    let written = format!("{d}/sftp-up.bin: {BIG} bytes written");
    let read = format!("{d}/sftp-up.bin: {BIG} bytes read");
    assert!(
        recorded(&gate, CommandKind::FileWrite, &written),
        "{:?}",
        gate.commands()
    );
    assert!(
        recorded(&gate, CommandKind::FileRead, &read),
        "{:?}",
        gate.commands()
    );
}

/// Every regular file under `root` as (relative path, content).
fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsync_syncs_a_tree_and_then_a_change() {
    if !Sshd::available() {
        return;
    }
    assert!(
        Path::new("/usr/bin/rsync").exists(),
        "rsync is not installed (`cargo xtask setup` installs it)"
    );
    let sshd = Sshd::start("127.0.0.3").unwrap();
    let gate = Arc::new(TestGate::default());
    let p = proxy(&sshd, Arc::clone(&gate)).await;
    let src = sshd.dir.join("tree");
    let dst = sshd.dir.join("synced");
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    std::fs::write(src.join("top.txt"), "top\n").unwrap();
    std::fs::write(src.join("a/one.txt"), "one\n".repeat(5000)).unwrap();
    let blob: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(src.join("a/b/blob.bin"), &blob).unwrap();
    std::fs::write(src.join("a/b/gone.txt"), "to be deleted\n").unwrap();
    let mut ssh = vec!["ssh".to_string(), "-p".into(), p.addr.port().to_string()];
    ssh.extend(p.options());
    // Blocking is fine on a multi-thread runtime: the proxy runs on the other workers.
    let sync = |label: &str| {
        tokio::task::block_in_place(|| {
            let out = Command::new("rsync")
                .args(["-a", "--delete", "-e", &ssh.join(" ")])
                .arg(format!("{}/", src.display()))
                .arg(format!("root@127.0.0.1:{}/", dst.display()))
                .output()
                .unwrap();
            let (stdout, stderr) = text(&out);
            assert_eq!(out.status.code(), Some(0), "{label}: {stdout}\n{stderr}");
        })
    };
    sync("first sync");
    assert_eq!(tree(&dst), tree(&src), "after the first sync");

    // A change: one file edited, one added, one removed.
    std::fs::write(src.join("top.txt"), "top, edited\n").unwrap();
    std::fs::write(src.join("a/new.txt"), "new\n").unwrap();
    std::fs::remove_file(src.join("a/b/gone.txt")).unwrap();
    sync("second sync");
    assert_eq!(tree(&dst), tree(&src), "after the second sync");
    assert!(!dst.join("a/b/gone.txt").exists());

    let execs: Vec<_> = gate
        .commands()
        .into_iter()
        .filter(|(k, t, _)| *k == CommandKind::Exec && t.starts_with("rsync --server"))
        .collect();
    assert_eq!(execs.len(), 2, "{:?}", gate.commands());
    assert!(
        execs
            .iter()
            .all(|(_, t, s)| *s == Some(0) && t.contains(&dst.display().to_string()))
    );
    let decided = gate.requests.lock().unwrap().iter().filter(|r| {
        matches!(r, interlock::gate::Request::Command { kind: CommandKind::Exec, text } if text.starts_with("rsync --server"))
    }).count();
    assert_eq!(decided, 2);
}
