//! The SSH proxy through the whole pipeline: a real `ssh` client in a scope
//! cgroup connects to a real sshd on 127.0.0.3, the kernel redirects it to
//! the daemon, the policy decides each command, approvals come over the
//! control socket, and everything lands in the audit trail.

use std::process::{Output, Stdio};

use anyhow::Result;
use interlock_tests::{sshjob::Job, *};
use serde_json::Value;

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
    let d = sshjob::daemon(&cg, &sshd, "")?;
    let job = Job::trusting_ca(&d)?;
    let marker = sshd.dir.join("rm-target");
    std::fs::write(&marker, "keep me")?;

    // Allowed: runs upstream with the injected key; the CA certificate is trusted.
    let out = job
        .ssh(
            &cg,
            &sshd,
            &[],
            "echo hello-from-$(hostname -s >/dev/null; echo upstream)",
        )
        .output()?;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}\n{}", d.log());
    assert_eq!(stdout.trim(), "hello-from-upstream");

    // Blocked: a reason on stderr, non-zero exit, and it never ran.
    let out = job
        .ssh(&cg, &sshd, &[], &format!("rm -f {}", marker.display()))
        .output()?;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no-rm") && stderr.contains("not allowed"),
        "{stderr}"
    );
    assert!(marker.exists(), "the blocked rm ran upstream");

    // Held: runs once `daemon` approves.
    let child = job
        .ssh(&cg, &sshd, &[], "deploy() { echo deployed; }; deploy")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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
    let d = sshjob::daemon(&cg, &sshd, "")?;
    let job = Job::trusting_ca(&d)?;
    let mut child = job
        .ssh(&cg, &sshd, &["-tt"], "")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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

#[test]
fn a_fixed_host_key_is_presented_instead_of_a_certificate() -> Result<()> {
    if !privileged() || !Sshd::available() {
        return Ok(());
    }
    let sshd = Sshd::start("127.0.0.3")?;
    let presented = sshd.dir.join("presented_host_key");
    ssh_keygen(&presented)?;
    let public = std::fs::read_to_string(sshd.dir.join("presented_host_key.pub"))?;
    let cg = TestCgroup::new("ssh-hostkey")?;
    let extra = format!(
        "      presented_host_key: {{file: {}}}",
        presented.display()
    );
    let d = sshjob::daemon(&cg, &sshd, &extra)?;

    // Pinned in known_hosts: accepted, and the command runs upstream.
    let line = format!(
        "[{}]:{} {}",
        sshd.addr.ip(),
        sshd.addr.port(),
        public.trim()
    );
    let pinned = Job::with_known_hosts(&line)?;
    let out = pinned.ssh(&cg, &sshd, &[], "echo pinned-ok").output()?;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}\n{}", d.log());
    assert_eq!(stdout.trim(), "pinned-ok");

    // No certificate is presented: trusting only the CA fails, as does
    // pinning the real server's key.
    let ca_only = Job::trusting_ca(&d)?;
    let out = ca_only.ssh(&cg, &sshd, &[], "echo must-not-run").output()?;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success() && stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("Host key verification failed"), "{stderr}");
    let line = format!(
        "[{}]:{} {}",
        sshd.addr.ip(),
        sshd.addr.port(),
        sshd.host_public_key.trim()
    );
    let server_key = Job::with_known_hosts(&line)?;
    let out = server_key
        .ssh(&cg, &sshd, &[], "echo must-not-run")
        .output()?;
    assert!(!out.status.success() && out.stdout.is_empty());

    // A key that cannot be read refuses the session and says why.
    std::fs::write(&presented, "not a key")?;
    let out = pinned.ssh(&cg, &sshd, &[], "echo must-not-run").output()?;
    assert!(!out.status.success() && out.stdout.is_empty());
    let ev = d.wait_events("the refusal", |e| {
        !of_type(e, "connection_refused").is_empty()
    })?;
    let reason = of_type(&ev, "connection_refused")[0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("deploy-host") && reason.contains("presented_host_key"),
        "{reason}"
    );
    let commands = of_type(&ev, "command");
    assert_eq!(
        commands.len(),
        1,
        "only the pinned session ran: {commands:?}"
    );
    assert_eq!(commands[0]["text"], "echo pinned-ok");
    Ok(())
}

#[test]
fn an_approved_sftp_upload_is_audited_with_its_decision() -> Result<()> {
    if !privileged() || !Sshd::available() {
        return Ok(());
    }
    let sshd = Sshd::start("127.0.0.3")?;
    let cg = TestCgroup::new("ssh-sftp-audit")?;
    let d = sshjob::daemon(&cg, &sshd, "")?;
    let job = Job::trusting_ca(&d)?;
    let local = job.dir.join("upload.txt");
    std::fs::write(&local, "approved content\n")?;
    let remote = sshd.dir.join("approve-me.txt");
    let dest = format!("root@{}:{}", sshd.addr.ip(), remote.display());
    let mut child = job
        .scp(&cg, &sshd, &[], &[&local.display().to_string(), &dest])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // One hold: the attributes scp sets afterwards through the same
    // handle are part of the approved write. (Any further hold would be
    // approved too, and fail the count below rather than hang.)
    let mut approved = 0;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        let wanted = approved + 1;
        let ev = d.wait_events_long("a hold or the end", |e| {
            of_type(e, "approval_requested").len() >= wanted
                || !of_type(e, "session_ended").is_empty()
        })?;
        let Some(held) = of_type(&ev, "approval_requested").get(approved).copied() else {
            continue;
        };
        assert_eq!(held["approval"]["request"]["command_kind"], "file_write");
        assert_eq!(
            held["approval"]["request"]["text"],
            remote.display().to_string()
        );
        let id = held["approval"]["id"].as_str().unwrap_or_default();
        let r = d.cli_as("daemon", None, &["approvals", "approve", id])?;
        assert!(r.ok, "{r:?}");
        approved += 1;
    };
    assert!(status.success());
    assert_eq!(
        approved,
        1,
        "{:?}",
        of_type(&d.events(), "approval_requested")
    );
    assert_eq!(std::fs::read_to_string(&remote)?, "approved content\n");
    let ev = d.wait_events("the end", |e| !of_type(e, "session_ended").is_empty())?;
    let want = format!("{}: 17 bytes written", remote.display());
    let write = of_type(&ev, "command")
        .into_iter()
        .find(|c| c["text"] == want.as_str())
        .cloned()
        .expect("the upload is recorded");
    assert_eq!(write["decision"]["action"], "approved", "{write}");
    assert_eq!(write["decision"]["rule"], "uploads-need-a-human", "{write}");
    assert_eq!(write["exit_status"], 0);
    Ok(())
}

/// The job chooses the user in `ssh USER@host` and the variables it sends;
/// neither may choose what the injected key does upstream. A target that
/// allow-lists users refuses any other at authentication (recorded with who
/// tried), rules see the login, and `env` requests reach the server only
/// when `upstream.env` lists them — although this sshd accepts `INTERLOCK_*`.
#[test]
fn logins_and_env_are_the_policys_not_the_jobs() -> Result<()> {
    if !privileged() || !Sshd::available() {
        return Ok(());
    }
    let sshd = Sshd::start("127.0.0.3")?;
    let cg = TestCgroup::new("ssh-logins")?;
    // The injected key is authorized for every local user (AuthorizedKeysFile is one file).
    let other = TestUser::create("ilsu", None);
    let rules = format!(
        "  - name: root-does-not-touch
    match: {{ssh_user: [root], command: '^touch '}}
    action: block
    message: root may not touch files
  - name: no-sessions-as-{u}
    match: {{ssh_requested_user: ['{u}']}}
    action: block
    message: not as this user
",
        u = other.name
    );
    let d = sshjob::daemon_with_login(
        &cg,
        &sshd,
        &format!("users: [root, {}]", other.name),
        "      env: [INTERLOCK_OK, LC_*]",
        &rules,
        &[],
    )?;
    let job = Job::trusting_ca(&d)?;

    // A user the target does not list: refused before anything reaches sshd.
    let out = job.ssh_as(&cg, &sshd, "nobody", &[], "id").output()?;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stderr.contains("login as `nobody` is not allowed")
            && stderr.contains("upstream.users: root"),
        "{stderr}"
    );
    assert!(!sshd.log().contains("for nobody"), "{}", sshd.log());

    // A rule on the login user decides commands: root may not touch, the request is the same.
    let marker = sshd.dir.join("touched-by-root");
    let out = job
        .ssh(&cg, &sshd, &[], &format!("touch {}", marker.display()))
        .output()?;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("root may not touch files"), "{stderr}");
    assert!(!marker.exists());

    // A session rule on the requested user: the session is decided at login.
    let out = job.ssh_as(&cg, &sshd, &other.name, &[], "id").output()?;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("not as this user"), "{stderr}");

    // env: the listed ones pass, the rest (LD_PRELOAD, BASH_ENV, an INTERLOCK_* the
    // server would accept) are refused and the command still runs.
    let out = job
        .ssh(
            &cg,
            &sshd,
            &[
                "-o",
                "SetEnv=INTERLOCK_OK=yes INTERLOCK_EVIL=evil-value LD_PRELOAD=/tmp/evil.so BASH_ENV=/tmp/evil.sh LC_TIME=C",
            ],
            // LC_TIME passes interlock (its record below) but not this sshd's AcceptEnv.
            "echo ok=$INTERLOCK_OK evil=$INTERLOCK_EVIL",
        )
        .output()?;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}\n{}", d.log());
    assert_eq!(stdout.trim(), "ok=yes evil=");

    let ev = d.wait_events("four ends", |e| of_type(e, "session_ended").len() == 4)?;
    let started = of_type(&ev, "session_started");
    // Who tried `nobody`: the session's start names the process, the rule and the login.
    let nobody = started
        .iter()
        .find(|s| s["ssh_login"]["requested"] == "nobody")
        .expect("the refused login is recorded");
    assert_eq!(nobody["decision"]["action"], "blocked");
    assert_eq!(nobody["decision"]["rule"], "upstream.users");
    assert_eq!(nobody["identity"]["process"]["exe"], "/usr/bin/ssh");
    assert!(nobody["ssh_login"].get("upstream").is_none(), "{nobody}");
    let as_other = started
        .iter()
        .find(|s| s["ssh_login"]["requested"] == other.name.as_str())
        .expect("the other user's session");
    assert_eq!(
        as_other["decision"]["rule"],
        format!("no-sessions-as-{}", other.name)
    );
    let blocked = of_type(&ev, "request_blocked");
    assert!(
        blocked.iter().any(|b| b["rule"] == "root-does-not-touch"),
        "{blocked:?}"
    );
    let env_refused: Vec<&str> = blocked
        .iter()
        .filter(|b| b["request"]["kind"] == "env")
        .map(|b| {
            assert_eq!(b["rule"], "upstream.env");
            b["request"]["name"].as_str().unwrap_or_default()
        })
        .collect();
    for name in ["INTERLOCK_EVIL", "LD_PRELOAD", "BASH_ENV"] {
        assert!(env_refused.contains(&name), "{name}: {env_refused:?}");
    }
    // The job's own command line (`-o SetEnv=...`) is its process's recorded argv; apart
    // from that identity, nothing recorded holds a refused variable's value.
    let mut without_identity = ev.clone();
    for e in &mut without_identity {
        if let Some(o) = e.as_object_mut() {
            o.remove("identity");
        }
    }
    let all = serde_json::to_string(&without_identity)?;
    assert!(
        !all.contains("evil-value") && !all.contains("/tmp/evil"),
        "a refused variable's value is never recorded: {all}"
    );
    let ended = of_type(&ev, "session_ended");
    let with_env = ended
        .iter()
        .find(|e| !e["ssh_env"].is_null())
        .expect("the env session's end");
    let passed = with_env["ssh_env"].as_array().cloned().unwrap_or_default();
    assert!(
        passed.contains(&Value::from("INTERLOCK_OK=yes"))
            && passed.contains(&Value::from("LC_TIME=C"))
            && !passed
                .iter()
                .any(|v| v.as_str().unwrap_or_default().contains("EVIL")),
        "{passed:?}"
    );
    assert_eq!(with_env["ssh_login"]["upstream"], "root");
    assert_eq!(
        ended.iter().filter(|e| e["outcome"] == "blocked").count(),
        2,
        "{ended:?}"
    );
    Ok(())
}

/// Without a session rule on the login the session is decided before the
/// banner; a login the target does not allow is still refused, as a blocked
/// request of that session. And a target that lets the job choose the user
/// is refused by `policy check`, naming it.
#[test]
fn a_refused_login_after_the_banner_is_recorded_and_open_users_are_refused() -> Result<()> {
    if !privileged() || !Sshd::available() {
        return Ok(());
    }
    let sshd = Sshd::start("127.0.0.3")?;
    let cg = TestCgroup::new("ssh-login-banner")?;
    let d = sshjob::daemon_with_login(&cg, &sshd, "users: [root]", "", "", &[])?;
    let job = Job::trusting_ca(&d)?;
    let out = job.ssh_as(&cg, &sshd, "daemon", &[], "id").output()?;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("login as `daemon` is not allowed"),
        "{stderr}"
    );
    assert!(!sshd.log().contains("for daemon"), "{}", sshd.log());
    let ev = d.wait_events("its end", |e| of_type(e, "session_ended").len() == 1)?;
    let blocked = of_type(&ev, "request_blocked");
    assert!(
        blocked
            .iter()
            .all(|b| b["request"]["kind"] == "login" && b["request"]["user"] == "daemon"),
        "{blocked:?}"
    );
    assert!(!blocked.is_empty());
    assert!(
        of_type(&ev, "session_ended")
            .iter()
            .all(|e| e["outcome"] == "blocked"),
        "{ev:?}"
    );
    drop(d);

    // The attack this closes: no user at all, so `ssh root@` was root with the key.
    let policy = sshd.dir.join("open-users.yaml");
    std::fs::write(
        &policy,
        format!(
            "version: 1\ntargets:\n  - name: open-host\n    protocol: ssh\n    match: [{{address: {}, port: {}}}]\n    upstream:\n      key: {{file: {}}}\n      host_key: \"{}\"\n",
            sshd.addr.ip(),
            sshd.addr.port(),
            sshd.client_key.display(),
            sshd.host_public_key.trim()
        ),
    )?;
    let out = std::process::Command::new(interlock_bin()?)
        .args(["policy", "check"])
        .arg(&policy)
        .output()?;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("open-host") && stderr.contains("upstream.users"),
        "{stderr}"
    );
    Ok(())
}
