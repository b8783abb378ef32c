//! Many short connections leave the kernel maps no larger than before.

use anyhow::Result;
use interlock_tests::*;

#[test]
fn one_hundred_thousand_short_connections_leave_the_maps_empty() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let cg = TestCgroup::new("bounded")?;
    // ~200,000 events of ~2.5 KB: keep enough rotated events.jsonl files
    // that every session_ended the test counts is still there.
    let d = Daemon::start(DaemonSpec::tcp(
        &cg,
        &[server.addr.port()],
        &["--events-file-keep", "64"],
    ))?;
    let before = (d.map_entries("FLOWS")?, d.map_entries("PEERS")?);
    let n: u64 = std::env::var("INTERLOCK_TEST_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let reply = client_in(
        &cg,
        &["loop", &server.addr.to_string(), &n.to_string()],
        &[],
    )?;
    assert_eq!(reply, format!("done {n} 0"));
    d.wait_events("all sessions ended", |e| {
        of_type(e, "session_ended").len() as u64 == n
    })?;
    let after = (d.map_entries("FLOWS")?, d.map_entries("PEERS")?);
    assert_eq!(
        after, before,
        "FLOWS/PEERS entries before vs after {n} connections"
    );
    Ok(())
}
