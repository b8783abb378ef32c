//! The SSH proxy through the whole pipeline: a real `ssh` client in a scope
//! cgroup connects to a real sshd on 127.0.0.3, the kernel redirects it to
//! the daemon, the policy decides each command, approvals come over the
//! control socket, and everything lands in the audit trail.

use std::{
    path::{Path, PathBuf},
    process::Output,
};

use anyhow::Result;
use interlock_tests::*;
use serde_json::Value;

/// A daemon whose policy intercepts `sshd`, injects its authorized key and
/// pins its host key; `rm` is blocked and `deploy` needs approval.
fn daemon(cg: &TestCgroup, sshd: &Sshd) -> Result<Daemon> {
    let policy = format!(
        "version: 1
targets:
  - name: deploy-host
    protocol: ssh
    match: [{{address: {ip}, port: {port}}}]
    upstream:
      user: root
      key: {{file: {key}}}
      host_key: \"{host_key}\"
rules:
  - name: no-rm
    match: {{command: '^rm\\s'}}
    action: block
    message: deleting files from CI is not allowed
  - name: deploys-need-a-human
    match: {{command: '^deploy'}}
    action: require_approval
    approval: {{approvers: {{users: [daemon]}}, timeout: 60s}}
",
        ip = sshd.addr.ip(),
        port = sshd.addr.port(),
        key = sshd.client_key.display(),
        host_key = sshd.host_public_key.trim(),
    );
    Daemon::start(DaemonSpec::with_policy(cg, &policy, &[]))
}

/// The job's side: a key the server does NOT authorize, and a known_hosts
/// trusting only interlock's SSH CA.
fn job_files(d: &Daemon) -> Result<(PathBuf, PathBuf)> {
    let dir = std::env::temp_dir().join(unique("interlock-sshjob"));
    std::fs::create_dir_all(&dir)?;
    let key = dir.join("job_key");
    ssh_keygen(&key)?;
    let out = std::process::Command::new(interlock_bin()?)
        .args(["ca", "export", "--ssh", "--state-dir"])
        .arg(&d.state_dir)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout)?;
    assert!(line.starts_with("@cert-authority * ssh-ed25519 "), "{line}");
    let known = dir.join("known_hosts");
    std::fs::write(&known, line)?;
    Ok((key, known))
}

fn ssh(cg: &TestCgroup, sshd: &Sshd, key: &Path, known: &Path, cmd: &str) -> Result<Output> {
    let port = sshd.addr.port().to_string();
    let ip = sshd.addr.ip().to_string();
    let known = format!("UserKnownHostsFile={}", known.display());
    let key = key.display().to_string();
    let args = [
        "-p",
        &port,
        "-i",
        &key,
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        &known,
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "ConnectTimeout=20",
        &format!("root@{ip}"),
        cmd,
    ];
    Ok(cg
        .command(std::path::Path::new("/usr/bin/ssh"), &args)
        .output()?)
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn intercepted_ssh_runs_allowed_blocks_forbidden_and_holds_deploys() -> Result<()> {
    if !privileged() || !Sshd::available() {
        return Ok(());
    }
    let sshd = Sshd::start("127.0.0.3")?;
    let cg = TestCgroup::new("ssh-e2e")?;
    let d = daemon(&cg, &sshd)?;
    let (key, known) = job_files(&d)?;
    let marker = sshd.dir.join("rm-target");
    std::fs::write(&marker, "keep me")?;

    // Allowed: runs upstream with the injected key; the CA certificate is trusted.
    let out = ssh(
        &cg,
        &sshd,
        &key,
        &known,
        "echo hello-from-$(hostname -s >/dev/null; echo upstream)",
    )?;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}\n{}", d.log());
    assert_eq!(stdout.trim(), "hello-from-upstream");

    // Blocked: a reason on stderr, non-zero exit, and it never ran.
    let out = ssh(
        &cg,
        &sshd,
        &key,
        &known,
        &format!("rm -f {}", marker.display()),
    )?;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no-rm") && stderr.contains("not allowed"),
        "{stderr}"
    );
    assert!(marker.exists(), "the blocked rm ran upstream");

    // Held: runs once `daemon` approves.
    let child = cg
        .command(
            std::path::Path::new("/usr/bin/ssh"),
            &[
                "-p",
                &sshd.addr.port().to_string(),
                "-i",
                &key.display().to_string(),
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                &format!("UserKnownHostsFile={}", known.display()),
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                &format!("root@{}", sshd.addr.ip()),
                "deploy() { echo deployed; }; deploy",
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let ev = d.wait_events_long("hold", |e| !of_type(e, "approval_requested").is_empty())?;
    let held = of_type(&ev, "approval_requested")[0];
    assert_eq!(held["approval"]["request"]["command_kind"], "exec");
    let id = held["approval"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let r = d.cli_as("daemon", None, &["approvals", "approve", &id])?;
    assert!(r.ok, "{r:?}");
    let out = child.wait_with_output()?;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "deployed");
    assert!(
        stderr.contains(&id),
        "the client was told the approval id: {stderr}"
    );

    // The audit trail: three sessions, each command with its decision and rule.
    let ev = d.wait_events("three ends", |e| of_type(e, "session_ended").len() == 3)?;
    let started = of_type(&ev, "session_started");
    assert!(started.iter().all(|s| s["identity"]["protocol"] == "ssh"));
    assert!(
        started
            .iter()
            .all(|s| s["identity"]["process"]["exe"] == "/usr/bin/ssh")
    );
    let commands: Vec<&Value> = of_type(&ev, "command");
    let deploy = commands
        .iter()
        .find(|c| c["text"].as_str().unwrap_or_default().contains("deploy"))
        .expect("deploy recorded");
    assert_eq!(deploy["decision"]["action"], "approved");
    assert_eq!(deploy["decision"]["rule"], "deploys-need-a-human");
    assert_eq!(deploy["exit_status"], 0);
    assert_eq!(deploy["ocsf"]["class_uid"], 4007);
    let blocked = of_type(&ev, "request_blocked");
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0]["rule"], "no-rm");
    assert!(
        of_type(&ev, "session_ended")
            .iter()
            .all(|e| e["outcome"] == "closed")
    );
    // The injected key is what the server saw; the job's key never was.
    let log = sshd.log();
    assert!(log.contains("Accepted publickey for root"), "{log}");
    Ok(())
}

#[test]
fn a_shell_is_recorded_and_replayed_from_the_audit_trail() -> Result<()> {
    if !privileged() || !Sshd::available() {
        return Ok(());
    }
    let sshd = Sshd::start("127.0.0.3")?;
    let cg = TestCgroup::new("ssh-shell")?;
    let d = daemon(&cg, &sshd)?;
    let (key, known) = job_files(&d)?;
    let mut child = cg
        .command(
            Path::new("/usr/bin/ssh"),
            &[
                "-tt",
                "-p",
                &sshd.addr.port().to_string(),
                "-i",
                &key.display().to_string(),
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                &format!("UserKnownHostsFile={}", known.display()),
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                &format!("root@{}", sshd.addr.ip()),
            ],
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"echo shell-$((6*7))-marker\nexit\n")?;
    }
    let out = child.wait_with_output()?;
    let (stdout, stderr) = text(&out);
    assert!(stdout.contains("shell-42-marker"), "{stdout}\n{stderr}");
    let ev = d.wait_events("shell end", |e| !of_type(e, "session_ended").is_empty())?;
    let sid = of_type(&ev, "session_started")[0]["session_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let shell = of_type(&ev, "command")
        .into_iter()
        .find(|c| c["command_kind"] == "shell")
        .cloned()
        .expect("the shell is recorded");
    assert_eq!(shell["decision"]["action"], "allowed");
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
    assert!(shown.contains("session ended closed"), "{shown}");
    Ok(())
}
