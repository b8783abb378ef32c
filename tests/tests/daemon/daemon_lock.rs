//! One daemon per instance and per state directory: a second `interlock
//! run` on a held instance, a held state directory, or both, refuses to
//! start and names the running daemon's pid; it touches neither the first
//! one's pins nor its audit log, whose chain stays intact. `interlock
//! detach` refuses to pull a running daemon's pins.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use interlock_tests::*;

/// Runs `interlock ARGS` to its end (at most 30 s: a daemon that starts
/// instead of refusing is killed and fails the test); returns whether it
/// succeeded and its stderr.
fn run_to_end(dir: &Path, args: &[&str]) -> Result<(bool, String)> {
    let log = dir.join(format!("second-{}.log", unique("run")));
    let mut child = Command::new(interlock_bin()?)
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok((st.success(), std::fs::read_to_string(&log)?));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "`interlock {}` kept running: {}",
                args.join(" "),
                std::fs::read_to_string(&log)?
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_daemon_is_refused_naming_the_first_and_the_chain_stays_intact() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    // DaemonSpec::tcp intercepts 127.0.0.2.
    let server = EchoServer::start("127.0.0.2:0")?;
    let dst = server.addr.to_string();
    let cg = TestCgroup::new("lock")?;
    let mut d = Daemon::start(DaemonSpec::tcp(&cg, &[server.addr.port()], &[]))?;
    let pid = d.pid().context("pid")?;
    let reply = client_in(&cg, &["echo", &dst, "one"], &[])?;
    ensure!(
        reply.starts_with("ok echo ") && reply.ends_with(" one"),
        "{reply}\n{}",
        d.log()
    );
    let scratch = scratch("interlock-lock")?;
    let other_state = scratch.path().join("other-state");
    let policy = d.policy_path().display().to_string();
    let state = d.state_dir.display().to_string();
    let other = other_state.display().to_string();
    let other_instance = unique("t-other");
    let run = |instance: &str, state_dir: &str| {
        run_to_end(
            scratch.path(),
            &[
                "run",
                "--policy",
                &policy,
                "--instance",
                instance,
                "--state-dir",
                state_dir,
                "--scope",
                cg.scope(),
            ],
        )
    };
    let holder = format!("is in use by another interlock process (pid {pid})");

    // The same instance and state directory (a second `cargo xtask run`).
    let (ok, err) = run(&d.instance, &state)?;
    ensure!(!ok && err.contains(&holder), "{err}");
    ensure!(err.contains(&format!("state directory {state}")), "{err}");
    // Another instance name on the same state directory.
    let (ok, err) = run(&other_instance, &state)?;
    ensure!(!ok && err.contains(&holder), "{err}");
    ensure!(err.contains("--state-dir"), "{err}");
    // The same instance name with a state directory of its own.
    let (ok, err) = run(&d.instance, &other)?;
    ensure!(!ok && err.contains(&holder), "{err}");
    ensure!(
        err.contains(&format!("instance `{}`", d.instance)) && err.contains("--instance"),
        "{err}"
    );
    ensure!(
        !other_state.join("audit").exists(),
        "a refused daemon opened an audit log"
    );
    // No detach of a running daemon's pins.
    let detach = d.cli(&["detach", "--instance", &d.instance])?;
    ensure!(!detach.ok && detach.stderr.contains(&holder), "{detach:?}");
    ensure!(d.pin_dir().join("maps").exists(), "pins were removed");

    // The first daemon never noticed: it still intercepts and is still ready.
    let reply = client_in(&cg, &["echo", &dst, "two"], &[])?;
    ensure!(
        reply.starts_with("ok echo ") && reply.ends_with(" two"),
        "{reply}\n{}",
        d.log()
    );
    ensure!(d.state_dir.join("runtime.json").exists());
    d.signal_and_wait(libc::SIGTERM)?;
    // Its lock went with it: the same instance and state directory start again.
    d.spawn()?;
    let reply = client_in(&cg, &["echo", &dst, "three"], &[])?;
    ensure!(
        reply.starts_with("ok echo ") && reply.ends_with(" three"),
        "{reply}\n{}",
        d.log()
    );
    d.signal_and_wait(libc::SIGTERM)?;

    let verify = d.cli(&["audit", "verify", &state])?;
    ensure!(verify.ok, "{verify:?}");
    let chain = d.audit_events();
    let starts: Vec<_> = of_type(&chain, "daemon_started")
        .iter()
        .map(|e| e["pid"].as_u64())
        .collect();
    ensure!(starts.len() == 2, "only the two real starts: {starts:?}");
    ensure!(starts[0] == Some(u64::from(pid)), "{starts:?}");
    ensure!(of_type(&chain, "session_started").len() == 3);
    Ok(())
}
