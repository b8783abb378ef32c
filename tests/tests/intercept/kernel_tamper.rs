//! Someone with root tampering with the kernel side is noticed and, where
//! the daemon can, undone (issue 15, threat model): a removed link pin is
//! pinned again (so a later daemon death still fails closed), a detached
//! link is attached afresh, a map pin swapped for another map is put back,
//! and pins that vanished while no daemon ran are reported at the next start.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};
use interlock_tests::*;
use serde_json::Value;

fn bpftool_json(args: &[&str]) -> Result<Value> {
    let out = Command::new("bpftool").arg("--json").args(args).output()?;
    if !out.status.success() {
        bail!("bpftool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn bpftool(args: &[&str]) -> Result<()> {
    let out = Command::new("bpftool").args(args).output()?;
    if !out.status.success() {
        bail!("bpftool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn findings<'a>(ev: &'a [Value], finding: &str) -> Vec<&'a Value> {
    of_type(ev, "kernel_integrity")
        .into_iter()
        .filter(|e| e["finding"] == finding)
        .collect()
}

/// The pin of `program`'s link on the daemon's (only) scope.
fn link_pin(d: &Daemon, program: &str) -> Result<std::path::PathBuf> {
    std::fs::read_dir(d.pin_dir().join("links"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{program}@")))
        })
        .with_context(|| format!("no {program} link pinned"))
}

fn pinned_id(path: &Path, kind: &str) -> Result<u64> {
    let v = bpftool_json(&[kind, "show", "pinned", &path.display().to_string()])?;
    v["id"].as_u64().context("no id")
}

#[test]
fn a_removed_link_pin_is_reported_and_pinned_again() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let dst = server.addr.to_string();
    let cg = TestCgroup::new("tamperpin")?;
    let mut d = Daemon::start(DaemonSpec::tcp(&cg, &[server.addr.port()], &[]))?;
    let pin = link_pin(&d, "connect4")?;
    let id = pinned_id(&pin, "link")?;
    std::fs::remove_file(&pin)?;
    let ev = d.wait_events("the unpinned link report", |e| {
        !findings(e, "link_unpinned").is_empty()
    })?;
    let f = findings(&ev, "link_unpinned")[0];
    assert_eq!(f["path"], pin.display().to_string());
    assert_eq!(f["repaired"], true);
    assert_eq!(f["ocsf"]["severity_id"], 4, "{f}");
    assert_eq!(
        pinned_id(&pin, "link")?,
        id,
        "the same link is pinned again"
    );
    // So the daemon's death still fails closed.
    d.signal_and_wait(libc::SIGKILL)?;
    let reply = client_in(&cg, &["echo", &dst, "down"], &[])?;
    assert!(reply.starts_with("err ConnectionRefused"), "{reply}");
    assert_eq!(server.connections(), 0);
    Ok(())
}

#[test]
fn a_detached_link_is_reported_and_attached_again() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let dst = server.addr.to_string();
    let cg = TestCgroup::new("tamperdetach")?;
    let d = Daemon::start(DaemonSpec::tcp(&cg, &[server.addr.port()], &[]))?;
    let pin = link_pin(&d, "connect4")?;
    let id = pinned_id(&pin, "link")?;
    bpftool(&["link", "detach", "id", &id.to_string()])?;
    let ev = d.wait_events("the detached link report", |e| {
        !findings(e, "link_detached").is_empty()
    })?;
    assert_eq!(findings(&ev, "link_detached")[0]["repaired"], true);
    assert_ne!(pinned_id(&pin, "link")?, id, "a fresh link is pinned");
    // Interception is back on.
    let before = of_type(&d.events(), "session_started").len();
    assert!(client_in(&cg, &["echo", &dst, "again"], &[])?.ends_with("again"));
    d.wait_events("a session", |e| {
        of_type(e, "session_started").len() > before
    })?;
    Ok(())
}

#[test]
fn a_map_pin_swapped_for_another_map_is_put_back() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let cg = TestCgroup::new("tampermap")?;
    let d = Daemon::start(DaemonSpec::tcp(&cg, &[server.addr.port()], &[]))?;
    let pin = d.pin_dir().join("maps").join("TARGETS");
    let id = pinned_id(&pin, "map")?;
    std::fs::remove_file(&pin)?;
    // An empty map where the next start would look for the targets.
    bpftool(&[
        "map",
        "create",
        &pin.display().to_string(),
        "type",
        "hash",
        "key",
        "4",
        "value",
        "4",
        "entries",
        "1",
        "name",
        "impostor",
    ])?;
    let ev = d.wait_events("the replaced map report", |e| {
        !findings(e, "map_pin_replaced").is_empty()
    })?;
    assert_eq!(findings(&ev, "map_pin_replaced")[0]["repaired"], true);
    assert_eq!(
        pinned_id(&pin, "map")?,
        id,
        "the daemon's map is pinned again"
    );
    Ok(())
}

#[test]
fn pins_gone_while_the_daemon_was_down_are_reported_at_start() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let dst = server.addr.to_string();
    let cg = TestCgroup::new("tampergone")?;
    let mut d = Daemon::start(DaemonSpec::tcp(&cg, &[server.addr.port()], &[]))?;
    d.wait_events("start", |e| !of_type(e, "daemon_started").is_empty())?;
    d.signal_and_wait(libc::SIGKILL)?;
    d.detach()?;
    // Meanwhile nothing is intercepted.
    assert!(client_in(&cg, &["echo", &dst, "direct"], &[])?.ends_with("direct"));
    d.spawn()?;
    let ev = d.wait_events("the vanished pins report", |e| {
        !findings(e, "pins_vanished").is_empty()
    })?;
    assert_eq!(
        findings(&ev, "pins_vanished")[0]["path"],
        d.pin_dir().display().to_string()
    );
    // A plain restart is no finding.
    d.signal_and_wait(libc::SIGTERM)?;
    d.spawn()?;
    d.wait_events("the third start", |e| {
        of_type(e, "daemon_started").len() == 3
    })?;
    assert_eq!(of_type(&d.events(), "kernel_integrity").len(), 1);
    Ok(())
}
