//! The state directory holds statements, identities, recordings and keys:
//! only root reads it. The directory is 0711 (others may only reach the
//! control socket in it), everything below 0700 / 0600; what an earlier
//! run or an operator left open is tightened at start with a warning.
//! Receiver on 127.0.0.54.

use std::{
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::Result;
use interlock_tests::{
    webhook::{Receiver, echo_sessions, secret_file, webhook_daemon},
    *,
};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn mode(p: &Path) -> Result<u32> {
    Ok(std::fs::symlink_metadata(p)?.permissions().mode() & 0o7777)
}

/// Every path under `dir` with its mode, sockets marked.
fn walk(dir: &Path, out: &mut Vec<(PathBuf, u32, bool)>) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        out.push((e.path(), mode(&e.path())?, t.is_socket()));
        if t.is_dir() {
            walk(&e.path(), out)?;
        }
    }
    Ok(())
}

/// Modes that let group or others read, write or list, other than the
/// state directory's own 0711 and the control socket's 0666.
fn too_open(state: &Path) -> Result<Vec<String>> {
    let mut all = Vec::new();
    walk(state, &mut all)?;
    Ok(all
        .into_iter()
        .filter(|(_, m, socket)| !socket && m & 0o077 != 0)
        .map(|(p, m, _)| format!("{} {m:o}", p.display()))
        .collect())
}

#[test]
fn state_files_are_private_and_tightened_at_start() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let cg = TestCgroup::new("perms")?;
    let echo = EchoServer::start("127.0.0.2:0")?;
    let scratch = interlock_tests::scratch("perms")?;
    let secrets = secret_file(scratch.path(), "s", &[SECRET])?;
    // A receiver that is down keeps events in the spool.
    let port = Receiver::reserve("127.0.0.54")?;
    let url = format!("http://127.0.0.54:{port}/hook");
    let extra = ["--events-file-kib", "2", "--events-file-keep", "100"];
    let mut d = webhook_daemon(&cg, &echo, &[url], &secrets, &extra)?;
    echo_sessions(&cg, &echo, 4)?;
    d.wait_events("four ends", |e| of_type(e, "session_ended").len() == 4)?;
    let state = d.state_dir.clone();
    assert_eq!(mode(&state)?, 0o711);
    for sub in ["audit", "spool", "recordings"] {
        assert_eq!(mode(&state.join(sub))?, 0o700, "{sub}");
    }
    for f in [
        "events.jsonl",
        "events.jsonl.1",
        "runtime.json",
        "audit/checkpoint.json",
        "audit/host.key",
    ] {
        let p = state.join(f);
        if f != "audit/checkpoint.json" || p.exists() {
            assert_eq!(mode(&p)?, 0o600, "{f}");
        }
    }
    assert_eq!(mode(&d.socket())?, 0o666, "the socket stays connectable");
    assert_eq!(too_open(&state)?, Vec::<String>::new());
    // Another user cannot read the log, nor list the directory...
    let cat = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat"])
        .arg(state.join("events.jsonl"))
        .output()?;
    assert!(!cat.status.success(), "nobody read events.jsonl");
    let ls = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "ls"])
        .arg(&state)
        .output()?;
    assert!(!ls.status.success(), "nobody listed the state directory");
    // ...but still reaches the control socket in it.
    let st = d.cli_as("nobody", None, &["status"])?;
    assert!(st.ok && st.stdout.contains("0 pending"), "{st:?}");

    // Loosened while stopped (an old version, an operator's chmod):
    // tightened at the next start, with a warning naming each.
    d.signal_and_wait(libc::SIGTERM)?;
    let loosened = [
        (state.clone(), 0o755),
        (state.join("audit"), 0o755),
        (state.join("events.jsonl"), 0o644),
        (state.join("audit/segment-000001.jsonl"), 0o644),
    ];
    for (p, m) in &loosened {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(*m))?;
    }
    d.spawn()?;
    assert_eq!(mode(&state)?, 0o711);
    assert_eq!(mode(&state.join("audit"))?, 0o700);
    assert_eq!(mode(&state.join("events.jsonl"))?, 0o600);
    assert_eq!(mode(&state.join("audit/segment-000001.jsonl"))?, 0o600);
    assert_eq!(too_open(&state)?, Vec::<String>::new());
    let log = d.log();
    for (p, _) in &loosened {
        let line = log
            .lines()
            .find(|l| l.contains("tightened") && l.contains(&*p.display().to_string()));
        assert!(line.is_some(), "no warning for {}:\n{log}", p.display());
    }
    Ok(())
}

/// The mode the installed unit (`dist/interlock.service`) has systemd give the state
/// directory before every start.
fn unit_state_directory_mode() -> Result<u32> {
    let unit = std::fs::read_to_string(workspace().join("dist/interlock.service"))?;
    let value = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix("StateDirectoryMode="))
        .ok_or_else(|| anyhow::anyhow!("the unit sets no StateDirectoryMode"))?;
    Ok(u32::from_str_radix(value.trim(), 8)?)
}

#[test]
fn approvers_who_are_not_root_reach_the_socket_of_the_installed_service() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let cg = TestCgroup::new("perms-unit")?;
    let policy = format!(
        "version: 1
targets:
  - name: svc
    protocol: tcp
    match: [{{address: 127.0.0.2, port: {}}}]
rules:
  - name: hold-all
    action: require_approval
    approval: {{approvers: {{users: [daemon]}}, timeout: 60s}}
",
        server.addr.port()
    );
    let mut d = Daemon::start(DaemonSpec::with_policy(&cg, &policy, &[]))?;
    // What systemd does before each start of the installed service.
    d.signal_and_wait(libc::SIGTERM)?;
    std::fs::set_permissions(
        &d.state_dir,
        std::fs::Permissions::from_mode(unit_state_directory_mode()?),
    )?;
    d.spawn()?;
    let client = cg
        .command(
            &testclient(),
            &["echo", &server.addr.to_string(), "via-socket"],
        )
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let ev = d.wait_events("a hold", |e| !of_type(e, "approval_requested").is_empty())?;
    let id = of_type(&ev, "approval_requested")[0]["approval"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // `daemon` is an approver and not root: it must reach control.sock.
    let list = d.cli_as("daemon", None, &["approvals", "list"])?;
    assert!(list.ok && list.stdout.contains(&id), "{list:?}");
    let ok = d.cli_as("daemon", None, &["approvals", "approve", &id])?;
    assert!(ok.ok, "{ok:?}");
    let out = client.wait_with_output()?;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("via-socket"),
        "{out:?}"
    );
    assert_eq!(mode(&d.state_dir)?, 0o711);
    Ok(())
}

/// Any local user can connect to the control socket, so connections are
/// bounded: a job holding connections open idle cannot lock the operators
/// out. Over the cap a connection is closed at once; idle ones are closed
/// after the idle limit, and then the CLI is served again.
#[test]
fn idle_control_connections_are_capped_and_closed() -> Result<()> {
    use std::{io::Read as _, os::unix::net::UnixStream, time::Duration};
    if !privileged() {
        return Ok(());
    }
    let cg = TestCgroup::new("control-cap")?;
    let d = Daemon::start(DaemonSpec::tcp(
        &cg,
        &[9],
        &["--control-connections", "2", "--control-idle-secs", "2"],
    ))?;
    let sock = d.socket().to_string_lossy().into_owned();
    assert!(d.cli(&["status", "--socket", &sock])?.ok);
    let idle: Vec<UnixStream> = (0..2)
        .map(|_| UnixStream::connect(d.socket()))
        .collect::<Result<_, _>>()?;
    // Over the cap: closed without an answer (guard against a hang only).
    let mut third = UnixStream::connect(d.socket())?;
    third.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut buf = [0u8; 16];
    assert_eq!(third.read(&mut buf)?, 0, "the third connection was served");
    let refused = d.cli(&["status", "--socket", &sock])?;
    assert!(!refused.ok, "{refused:?}");
    // The idle ones are closed by the daemon.
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        assert_eq!(s.read(&mut buf)?, 0);
    }
    let served = d.cli(&["status", "--socket", &sock])?;
    assert!(served.ok, "{served:?}\n{}", d.log());
    assert!(
        d.log().contains("--control-connections"),
        "the refusal is logged"
    );
    Ok(())
}
