//! Host-name targets follow their name: re-resolved periodically; every
//! address the name resolved to stays intercepted for `--resolve-keep-secs`
//! after lookups stop returning it (round-robin and failover names return
//! a subset each time), and a failed lookup keeps them all (a DNS outage
//! never opens a hole).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use interlock_tests::*;

/// A line of /etc/hosts the test owns; removed on drop.
struct HostsEntry {
    name: String,
}

impl HostsEntry {
    fn set(name: &str, ip: Option<&str>) -> Result<()> {
        let text = std::fs::read_to_string("/etc/hosts")?;
        let mut kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.split_whitespace().any(|w| w == name))
            .collect();
        let line = ip.map(|ip| format!("{ip} {name}"));
        if let Some(l) = &line {
            kept.push(l);
        }
        std::fs::write("/etc/hosts", kept.join("\n") + "\n")?;
        Ok(())
    }
}

impl Drop for HostsEntry {
    fn drop(&mut self) {
        let _ = HostsEntry::set(&self.name, None);
    }
}

fn intercepted(d: &Daemon, cg: &TestCgroup, dst: &str, tag: &str) -> Result<bool> {
    let before = of_type(&d.events(), "session_started").len();
    let reply = client_in(cg, &["echo", dst, tag], &[])?;
    if !reply.ends_with(tag) {
        bail!("no reply from {dst}: {reply}");
    }
    // The session is logged before the relay answers.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if of_type(&d.events(), "session_started").len() > before {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(false)
}

fn wait_until(what: &str, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f()? {
        if Instant::now() > deadline {
            bail!("timed out: {what}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(())
}

#[test]
fn host_targets_follow_their_name_and_survive_failed_lookups() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let a = EchoServer::start("127.0.0.61:0")?;
    let port = a.addr.port();
    let b = EchoServer::start(&format!("127.0.0.62:{port}"))?;
    let (dst_a, dst_b) = (a.addr.to_string(), b.addr.to_string());
    let name = format!("{}.interlock.test", unique("resolve"));
    let _entry = HostsEntry { name: name.clone() };
    HostsEntry::set(&name, Some("127.0.0.61"))?;

    let cg = TestCgroup::new("resolve")?;
    let policy = format!(
        "version: 1\ntargets:\n  - name: byname\n    protocol: tcp\n    match:\n      - {{ address: {name}, port: {port} }}\n"
    );
    let d = Daemon::start(DaemonSpec::with_policy(
        &cg,
        &policy,
        &["--resolve-every-secs", "1", "--resolve-keep-secs", "4"],
    ))?;
    assert!(
        intercepted(&d, &cg, &dst_a, "a1")?,
        "the name's address is a target"
    );
    assert!(
        !intercepted(&d, &cg, &dst_b, "b1")?,
        "another address is not"
    );

    // The name moves (or rotates): the next re-resolution follows it,
    // and the address it no longer returns stays intercepted for a while...
    HostsEntry::set(&name, Some("127.0.0.62"))?;
    wait_until("the moved name to be intercepted", || {
        intercepted(&d, &cg, &dst_b, "b2")
    })?;
    assert!(
        intercepted(&d, &cg, &dst_a, "a2")?,
        "an address the name resolved to a moment ago was reachable directly"
    );
    // ...until it has not been seen for --resolve-keep-secs.
    wait_until("the old address to be let go", || {
        Ok(!intercepted(&d, &cg, &dst_a, "a3")?)
    })?;
    assert!(intercepted(&d, &cg, &dst_b, "b3")?);

    // The name stops resolving: its last address stays intercepted.
    HostsEntry::set(&name, None)?;
    wait_until("a failed lookup to be logged", || {
        Ok(d.log().contains("keeping its last addresses"))
    })?;
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        intercepted(&d, &cg, &dst_b, "b4")?,
        "a failed lookup must not drop the target, however long it lasts"
    );
    Ok(())
}
