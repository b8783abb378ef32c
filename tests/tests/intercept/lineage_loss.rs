//! A full process-record ring is counted and reported, never silent.

use anyhow::Result;
use interlock_tests::*;

#[test]
fn dropped_process_records_are_reported() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let cg = TestCgroup::new("ringfull")?;
    // A one-page ring holds four records; a burst of 300 background
    // processes (fork, exec, exit each) overflows it long before the daemon
    // can drain it.
    let d = Daemon::start(DaemonSpec::tcp(&cg, &[9], &["--process-ring-kib", "4"]))?;
    let burst = cg
        .command(
            std::path::Path::new("/bin/sh"),
            &["-c", "for i in $(seq 300); do /bin/true & done; wait"],
        )
        .output()?;
    assert!(burst.status.success());
    let ev = d.wait_events("a loss report", |e| {
        !of_type(e, "process_records_lost").is_empty()
    })?;
    let lost = of_type(&ev, "process_records_lost")[0];
    assert!(lost["lost"].as_u64() > Some(0), "{lost}");
    assert!(d.log().contains("process records dropped"), "{}", d.log());
    Ok(())
}
