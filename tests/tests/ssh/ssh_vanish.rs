//! Peers that vanish mid-session, through the whole pipeline (kernel
//! redirect, real daemon, real sshd and OpenSSH clients): the client killed
//! during a large upload, and the upstream sshd's session process killed
//! during a command and during a shell. Only that session ends, the daemon
//! keeps serving new connections, and what was recorded before stays in
//! the audit trail (commands, the partial upload, the shell recording).
//! The sshd killed mid-upload runs on 127.0.0.48.

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use interlock_tests::{sshjob::Job, *};
use serde_json::Value;

/// The direct children of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let name = e.ok()?.file_name().to_str()?.parse::<u32>().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{name}/stat")).ok()?;
        let after_comm = stat.rsplit_once(')')?.1;
        let ppid: u32 = after_comm.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == pid).then_some(name)
    })
    .collect()
}

fn sigkill(pid: u32) {
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

/// Waits (a setup bound, not a test threshold) until `cond` holds.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Reads `from` until what was read contains `needle`; returns it all.
fn read_until(from: &mut impl std::io::Read, needle: &str) -> Result<String> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = from.read(&mut buf)?;
        if n == 0 {
            bail!("EOF before {needle}: {}", String::from_utf8_lossy(&seen));
        }
        seen.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    Ok(String::from_utf8_lossy(&seen).into_owned())
}

/// Waits for a pid written by the remote side, then kills that process.
fn kill_remote(pid_file: &Path) -> Result<u32> {
    wait_for("the remote pid", || {
        std::fs::read_to_string(pid_file).is_ok_and(|s| s.ends_with('\n'))
    })?;
    let pid: u32 = std::fs::read_to_string(pid_file)?.trim().parse()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert!(comm.starts_with("sshd"), "the parent is sshd's: {comm}");
    sigkill(pid);
    Ok(pid)
}

fn session_of<'a>(ev: &'a [Value], ty: &str, sid: &str) -> Vec<&'a Value> {
    of_type(ev, ty)
        .into_iter()
        .filter(|e| e["session_id"] == sid)
        .collect()
}

/// The session whose command text contains `needle`.
fn session_with(ev: &[Value], needle: &str) -> Result<String> {
    of_type(ev, "command")
        .iter()
        .find(|c| c["text"].as_str().unwrap_or_default().contains(needle))
        .and_then(|c| c["session_id"].as_str())
        .map(str::to_string)
        .with_context(|| format!("no command containing {needle}"))
}

fn ended_closed_or_error(ev: &[Value], sid: &str) {
    let ended = session_of(ev, "session_ended", sid);
    assert_eq!(ended.len(), 1, "{ended:?}");
    let outcome = ended[0]["outcome"].as_str().unwrap_or_default();
    assert!(outcome == "closed" || outcome == "error", "{:?}", ended[0]);
    // The end is the session's last word: whoever waits for it finds every record before it
    // (an upload cut short is recorded by its channel task, which the session waits for).
    let end_seq = ended[0]["seq"].as_u64().unwrap_or(0);
    let late: Vec<_> = session_of(ev, "command", sid)
        .into_iter()
        .filter(|c| c["seq"].as_u64().unwrap_or(u64::MAX) > end_seq)
        .collect();
    assert!(late.is_empty(), "recorded after session_ended: {late:?}");
}

/// The sftp session's commands hold `remote` as an unfinished upload of
/// more than 4 MiB and less than the whole 1 GiB, without a status.
fn partial_upload(commands: &[&Value], remote: &Path) -> Result<()> {
    let texts: Vec<&str> = commands.iter().filter_map(|c| c["text"].as_str()).collect();
    let prefix = format!("{}: ", remote.display());
    let partial = commands
        .iter()
        .find(|c| {
            c["text"].as_str().is_some_and(|t| {
                t.starts_with(&prefix) && t.ends_with("bytes written (unfinished)")
            })
        })
        .with_context(|| format!("the partial upload is recorded: {texts:?}"))?;
    assert!(partial["exit_status"].is_null(), "{partial}");
    let n: u64 = partial["text"]
        .as_str()
        .and_then(|t| t.split(": ").nth(1)?.split(' ').next()?.parse().ok())
        .context("byte count")?;
    assert!((4 << 20..1 << 30).contains(&n), "{n}");
    assert!(
        commands
            .iter()
            .any(|c| c["command_kind"] == "subsystem" && c["text"] == "sftp"),
        "{texts:?}"
    );
    Ok(())
}

/// A new connection still works, and its session ends closed.
fn still_serving(d: &Daemon, job: &Job, cg: &TestCgroup, sshd: &Sshd, ends: usize) -> Result<()> {
    let out = job.ssh(cg, sshd, &[], "echo still-$((40+2))").output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "still-42");
    let ev = d.wait_events("the new session's end", |e| {
        of_type(e, "session_ended").len() == ends
    })?;
    let sid = session_with(&ev, "still-")?;
    assert_eq!(
        session_of(&ev, "session_ended", &sid)[0]["outcome"],
        "closed"
    );
    Ok(())
}

#[test]
fn a_client_killed_mid_upload_ends_only_its_session() -> Result<()> {
    if !privileged() || !Sshd::available() {
        return Ok(());
    }
    let sshd = Sshd::start("127.0.0.3")?;
    let cg = TestCgroup::new("ssh-killclient")?;
    let d = sshjob::daemon(&cg, &sshd, "")?;
    let job = Job::trusting_ca(&d)?;
    let up = sshd.dir.join("up");
    std::fs::create_dir_all(&up)?;
    let small = job.dir.join("small.txt");
    std::fs::write(&small, "small file\n".repeat(100))?;
    // Sparse: no time spent writing it, 1 GiB of zeros on the wire.
    let big = job.dir.join("big.bin");
    std::fs::File::create(&big)?.set_len(1 << 30)?;
    let dest = format!("root@{}:{}/", sshd.addr.ip(), up.display());
    let mut scp = job
        .scp(
            &cg,
            &sshd,
            &[],
            &[
                &small.display().to_string(),
                &big.display().to_string(),
                &dest,
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let remote_big = up.join("big.bin");
    wait_for("the upload to be under way", || {
        std::fs::metadata(&remote_big).is_ok_and(|m| m.len() >= 4 << 20)
    })?;
    // The ssh under scp holds the connection: it vanishes without a word.
    let ssh = children(scp.id());
    assert_eq!(ssh.len(), 1, "scp runs one ssh: {ssh:?}");
    for pid in &ssh {
        sigkill(*pid);
    }
    scp.kill()?;
    let _ = scp.wait();

    let ev = d.wait_events("the killed session's end", |e| {
        !of_type(e, "session_ended").is_empty()
    })?;
    let sid = session_with(&ev, "small.txt")?;
    ended_closed_or_error(&ev, &sid);
    let commands = session_of(&ev, "command", &sid);
    let texts: Vec<&str> = commands.iter().filter_map(|c| c["text"].as_str()).collect();
    let small_done = format!("{}/small.txt: 1100 bytes written", up.display());
    let done = commands.iter().find(|c| c["text"] == small_done.as_str());
    assert_eq!(done.context("small write")?["exit_status"], 0, "{texts:?}");
    partial_upload(&commands, &up.join("big.bin"))?;

    still_serving(&d, &job, &cg, &sshd, 2)
}

#[test]
fn an_upstream_killed_mid_command_ends_only_its_session() -> Result<()> {
    if !privileged() || !Sshd::available() {
        return Ok(());
    }
    let sshd = Sshd::start("127.0.0.3")?;
    let cg = TestCgroup::new("ssh-killupstream")?;
    let d = sshjob::daemon(&cg, &sshd, "")?;
    let job = Job::trusting_ca(&d)?;

    // An exec: its parent is the sshd session process.
    let ppid = sshd.dir.join("exec.ppid");
    let cmd = format!(
        "echo $PPID > {}; echo started; exec sleep 600",
        ppid.display()
    );
    let mut client = job
        .ssh(&cg, &sshd, &[], &cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Killed only once the client saw the command's output.
    let mut stdout = client.stdout.take().context("stdout")?;
    let mut seen = read_until(&mut stdout, "started\n")?;
    kill_remote(&ppid)?;
    std::io::Read::read_to_string(&mut stdout, &mut seen)?;
    assert!(!client.wait()?.success());
    assert_eq!(seen.trim(), "started");
    let ev = d.wait_events("the exec session's end", |e| {
        of_type(e, "session_ended").len() == 1
    })?;
    let sid = session_with(&ev, "exec sleep 600")?;
    ended_closed_or_error(&ev, &sid);
    let exec = session_of(&ev, "command", &sid);
    assert_eq!(exec.len(), 1, "{exec:?}");
    assert_eq!(exec[0]["command_kind"], "exec");
    assert_eq!(exec[0]["decision"]["action"], "allowed");
    assert!(exec[0]["exit_status"].is_null(), "{:?}", exec[0]);
    still_serving(&d, &job, &cg, &sshd, 2)?;

    // A shell: what it showed before the kill stays in its recording.
    let ppid = sshd.dir.join("shell.ppid");
    let mut client = job
        .ssh(&cg, &sshd, &["-tt"], "")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = client.stdin.take().context("stdin")?;
    {
        use std::io::Write as _;
        let line = format!(
            "echo shell-$((6*7))-marker; echo $PPID > {}\n",
            ppid.display()
        );
        stdin.write_all(line.as_bytes())?;
    }
    // Killed only once the client saw the shell's output.
    let mut stdout = client.stdout.take().context("stdout")?;
    read_until(&mut stdout, "shell-42-marker")?;
    kill_remote(&ppid)?;
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stdout, &mut rest);
    let _ = client.wait()?;
    drop(stdin);
    let ev = d.wait_events("the shell session's end", |e| {
        of_type(e, "session_ended").len() == 3
    })?;
    let shell = of_type(&ev, "command")
        .into_iter()
        .find(|c| c["command_kind"] == "shell")
        .context("the shell is recorded")?;
    let sid = shell["session_id"].as_str().unwrap_or_default().to_string();
    ended_closed_or_error(&ev, &sid);
    let replay = std::process::Command::new(interlock_bin()?)
        .args(["replay", &sid, "--state-dir"])
        .arg(&d.state_dir)
        .output()?;
    let shown = String::from_utf8_lossy(&replay.stdout);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(shown.contains("--- terminal recording"), "{shown}");
    assert!(shown.contains("shell-42-marker"), "{shown}");
    still_serving(&d, &job, &cg, &sshd, 4)
}

#[test]
fn a_server_killed_mid_upload_ends_only_its_session() -> Result<()> {
    if !privileged() || !Sshd::available() {
        return Ok(());
    }
    let sshd = Sshd::start("127.0.0.48")?;
    let cg = TestCgroup::new("ssh-killserver")?;
    let d = sshjob::daemon(&cg, &sshd, "")?;
    let job = Job::trusting_ca(&d)?;
    let up = sshd.dir.join("up");
    std::fs::create_dir_all(&up)?;
    // Sparse: no time spent writing it, 1 GiB of zeros on the wire.
    let big = job.dir.join("big.bin");
    std::fs::File::create(&big)?.set_len(1 << 30)?;
    let dest = format!("root@{}:{}/", sshd.addr.ip(), up.display());
    let mut scp = job
        .scp(&cg, &sshd, &[], &[&big.display().to_string(), &dest])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let remote_big = up.join("big.bin");
    wait_for("the upload to be under way", || {
        std::fs::metadata(&remote_big).is_ok_and(|m| m.len() >= 4 << 20)
    })?;
    // The connection's sshd processes (monitor and sftp) go without a word.
    let per_connection = children(sshd.pid());
    assert_eq!(
        per_connection.len(),
        1,
        "one connection: {per_connection:?}"
    );
    for pid in per_connection
        .iter()
        .flat_map(|p| children(*p).into_iter().chain([*p]))
    {
        sigkill(pid);
    }
    let status = scp.wait()?;
    assert!(!status.success(), "the upload cannot have finished");

    let ev = d.wait_events("the session's end", |e| {
        !of_type(e, "session_ended").is_empty()
    })?;
    let sid = session_with(&ev, "big.bin")?;
    ended_closed_or_error(&ev, &sid);
    let commands = session_of(&ev, "command", &sid);
    // What moved before the server vanished stays in the trail.
    partial_upload(&commands, &up.join("big.bin"))?;
    still_serving(&d, &job, &cg, &sshd, 2)
}
