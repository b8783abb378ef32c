//! The runner's time limit, checked for real. `cargo xtask test` runs the
//! ignored test below under nextest's `hang-check` profile (a 10 s limit)
//! and fails unless nextest killed it within the limit, named it, the
//! runner found its daemon's log, and the daemon died with it (the test
//! process runs no `Drop` when killed: the daemon goes by the group kill
//! or its parent-death signal). By hand:
//!
//!   cargo nextest run -p interlock-tests --profile hang-check --run-ignored only \
//!       -E 'binary(harness_time_limit)'

use std::time::Duration;

use anyhow::Result;
use interlock_tests::*;

#[test]
#[ignore = "hangs on purpose; `cargo xtask test` runs it to check the time limit"]
fn a_hanging_test_is_killed_by_the_runner() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let cg = TestCgroup::new("hang")?;
    let d = Daemon::start(DaemonSpec::tcp(&cg, &[9], &[]))?;
    eprintln!("daemon pid {:?}; now hanging", d.pid());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
