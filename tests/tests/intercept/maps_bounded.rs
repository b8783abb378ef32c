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
    // On a loaded 2-core machine the daemon's event writer can trail the
    // clients by a while; this is a liveness bound, not a timing claim.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let mut ended = d.count_events("session_ended");
    while ended < n && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_secs(1));
        ended = d.count_events("session_ended");
    }
    assert_eq!(ended, n, "session_ended events after {n} connections");
    let after = (d.map_entries("FLOWS")?, d.map_entries("PEERS")?);
    assert_eq!(
        after, before,
        "FLOWS/PEERS entries before vs after {n} connections"
    );
    Ok(())
}
