//! Webhook delivery through receiver outages, slowness, errors, SIGKILLs
//! (idle and under load), a spool left behind the audit log, and 410
//! Gone: every logged event arrives, signed (checked here and by the
//! independent Python `standardwebhooks`), as OCSF (checked by the Python
//! `pydantic-ocsf` models), in event order. Receivers on 127.0.0.1 and
//! 127.0.0.50.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{Context as _, Result};
use interlock_tests::{
    webhook::{
        Mode, Receiver, echo_sessions, event_id, logged_ids, secret_file, verify_ocsf,
        verify_python, verify_rust, webhook_daemon,
    },
    *,
};
use serde_json::Value;

const SECRETS: [&str; 2] = [
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "whsec_c2Vjb25kLWtleS1mb3Itcm90YXRpb24=",
];

/// Waits until every logged event was delivered (answered 2xx), then checks
/// the delivered order is the log's order.
fn wait_all_delivered(d: &Daemon, rx: &Receiver, within: Duration) -> Result<Vec<Value>> {
    let logged = logged_ids(d);
    rx.wait_delivered(&logged, within)
        .with_context(|| format!("log:\n{}", d.log()))?;
    let delivered = rx.delivered_ids();
    let order: Vec<&String> = delivered.iter().filter(|id| logged.contains(id)).collect();
    let want: Vec<&String> = logged.iter().collect();
    assert_eq!(order, want, "delivery order differs from the log's");
    Ok(d.events())
}

fn sessions(cg: &TestCgroup, echo: &EchoServer, n: usize) -> Result<()> {
    echo_sessions(cg, echo, n)
}

/// A daemon with one endpoint `url`, signing with both [`SECRETS`].
fn daemon(cg: &TestCgroup, echo: &EchoServer, url: &str, tag: &str) -> Result<Daemon> {
    let secrets = secret_file(&std::env::temp_dir().join(unique(tag)), "s", &SECRETS)?;
    webhook_daemon(cg, echo, &[url.to_string()], &secrets, &[])
}

#[test]
fn every_event_arrives_through_down_slow_500_and_up() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let cg = TestCgroup::new("whoutage")?;
    let echo = EchoServer::start("127.0.0.2:0")?;
    let port = Receiver::reserve("127.0.0.1")?;
    let url = format!("http://127.0.0.1:{port}/hook");
    let d = daemon(&cg, &echo, &url, "whoutage")?;
    sessions(&cg, &echo, 3)?; // down
    std::thread::sleep(Duration::from_secs(2));
    let rx = Receiver::start(
        "127.0.0.1",
        port,
        vec![Mode::Slow(Duration::from_millis(1500))],
    )?;
    sessions(&cg, &echo, 3)?;
    std::thread::sleep(Duration::from_secs(3));
    rx.set(Mode::Status(500));
    sessions(&cg, &echo, 3)?;
    std::thread::sleep(Duration::from_secs(3));
    rx.set(Mode::Status(200));
    sessions(&cg, &echo, 3)?;
    let events = wait_all_delivered(&d, &rx, Duration::from_secs(120))?;
    assert_eq!(of_type(&events, "session_ended").len(), 12);
    let got = rx.got();
    assert!(
        got.iter().any(|r| r.status == 500),
        "no request saw the 500 phase"
    );
    // Each body is the OCSF event, interlock's own event under `unmapped`.
    let mut bodies = Vec::new();
    for r in got.iter().filter(|r| r.status == 200) {
        let body: Value = serde_json::from_str(&r.body)?;
        assert_eq!(event_id(&body).as_deref(), Some(r.id.as_str()));
        assert_eq!(body["unmapped"]["id"].as_str(), Some(r.id.as_str()));
        bodies.push(body);
    }
    let classes = verify_ocsf(&bodies)?;
    assert!(
        classes.contains(&4001) && classes.contains(&1007),
        "{classes:?}"
    );
    verify_rust(&got, &SECRETS);
    verify_python(&got, &SECRETS)
}

#[test]
fn spooled_events_survive_sigkill() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let cg = TestCgroup::new("whkill")?;
    let echo = EchoServer::start("127.0.0.2:0")?;
    let port = Receiver::reserve("127.0.0.1")?;
    let url = format!("http://127.0.0.1:{port}/hook");
    let mut d = daemon(&cg, &echo, &url, "whkill")?;
    sessions(&cg, &echo, 5)?;
    d.wait_events("five ended sessions", |e| {
        of_type(e, "session_ended").len() == 5
    })?;
    let before = logged_ids(&d);
    d.signal_and_wait(libc::SIGKILL)?;
    let rx = Receiver::start("127.0.0.1", port, vec![Mode::Status(200)])?;
    d.spawn()?;
    d.wait_events("the restart", |e| of_type(e, "daemon_started").len() == 2)?;
    wait_all_delivered(&d, &rx, Duration::from_secs(60))?;
    let delivered = rx.delivered_ids();
    for id in &before {
        assert!(delivered.contains(id), "{id} lost across SIGKILL");
    }
    verify_rust(&rx.got(), &SECRETS);
    Ok(())
}

/// A daemon killed between an event's audit record and its spool line
/// (simulated: the spool's last lines are cut while it is down) catches
/// the spool up from the audit log at start; the restart's own `audit_*`
/// records, logged before the spools are attached, arrive too.
#[test]
fn events_missing_from_the_spool_are_caught_up_from_the_audit_log() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let cg = TestCgroup::new("whcatch")?;
    let echo = EchoServer::start("127.0.0.2:0")?;
    let port = Receiver::reserve("127.0.0.50")?;
    let url = format!("http://127.0.0.50:{port}/hook");
    let mut d = daemon(&cg, &echo, &url, "whcatch")?;
    sessions(&cg, &echo, 4)?;
    d.wait_events("four ended sessions", |e| {
        of_type(e, "session_ended").len() == 4
    })?;
    d.signal_and_wait(libc::SIGKILL)?;
    let spool = std::fs::read_dir(d.state_dir.join("spool"))?
        .next()
        .context("a spool directory")??
        .path();
    let queue = std::fs::read_dir(&spool)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("queue-"))
        })
        .context("a queue file")?;
    let text = std::fs::read_to_string(&queue)?;
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 6, "{} spooled", lines.len());
    let cut: Vec<String> = lines[lines.len() - 3..]
        .iter()
        .map(|l| l.split('\t').next().unwrap_or_default().to_string())
        .collect();
    let kept: String = lines[..lines.len() - 3]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&queue, kept)?;
    let rx = Receiver::start("127.0.0.50", port, vec![Mode::Status(200)])?;
    d.spawn()?;
    d.wait_events("the restart", |e| of_type(e, "daemon_started").len() == 2)?;
    wait_all_delivered(&d, &rx, Duration::from_secs(60))?;
    let delivered = rx.delivered_ids();
    for id in &cut {
        assert!(
            delivered.contains(id),
            "{id} was cut from the spool and never caught up"
        );
    }
    // That includes the restart's `audit_tail_sealed`, if the kill left a
    // tail; the caught-up bodies are OCSF events like the others.
    let bodies: Vec<Value> = rx.got().iter().flat_map(|r| r.events()).collect();
    let cut_bodies: Vec<&Value> = bodies
        .iter()
        .filter(|b| event_id(b).is_some_and(|id| cut.contains(&id)))
        .collect();
    assert_eq!(cut_bodies.len(), cut.len(), "one body per caught-up event");
    verify_ocsf(&bodies)?;
    assert!(d.log().contains("caught up"), "{}", d.log());
    Ok(())
}

/// SIGKILL while sessions keep coming: the log still verifies, the
/// unsealed tail is sealed at restart, and every event in the audit log
/// (up to the kill and after) reaches the receiver, de-duplicated by id.
#[test]
fn sigkill_under_load_loses_no_logged_event() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let cg = TestCgroup::new("whload")?;
    let echo = EchoServer::start("127.0.0.2:0")?;
    let port = Receiver::reserve("127.0.0.50")?;
    let rx = Receiver::start("127.0.0.50", port, vec![Mode::Status(200)])?;
    let mut d = daemon(&cg, &echo, &rx.url("/hook"), "whload")?;
    let stop = AtomicBool::new(false);
    let dst = format!("127.0.0.2:{}", echo.addr.port());
    let at_kill = std::thread::scope(|s| -> Result<Vec<String>> {
        let load = s.spawn(|| {
            // Bounded: at most 400 sessions; the kill stops it sooner.
            for n in 0..400 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let _ = client_in(&cg, &["echo", &dst, &format!("l{n}")], &[]);
            }
        });
        let waited = d.wait_events_long("a steady stream", |e| {
            of_type(e, "session_ended").len() >= 20
        });
        let killed = d.signal_and_wait(libc::SIGKILL);
        stop.store(true, Ordering::Relaxed);
        load.join()
            .map_err(|_| anyhow::anyhow!("load thread panicked"))?;
        waited?;
        killed?;
        Ok(logged_ids(&d))
    })?;
    assert!(at_kill.len() >= 40, "{} events logged", at_kill.len());
    let state = d.state_dir.display().to_string();
    // A steady stream leaves records after the last checkpoint (unless the
    // kill fell right behind one, which the seal check below allows).
    let before = d.cli(&["audit", "verify", &state])?;
    assert!(before.ok, "a killed log still verifies: {before:?}");
    let unsealed = before.stdout.contains("unsealed:");
    d.spawn()?;
    if unsealed {
        let sealed: Vec<Value> = d
            .audit_events()
            .into_iter()
            .filter(|e| e["type"] == "audit_tail_sealed")
            .collect();
        assert_eq!(sealed.len(), 1, "the tail is sealed at restart");
        assert_eq!(
            sealed[0]["to_seq"].as_u64(),
            at_kill_last_seq(&d, &at_kill),
            "{}",
            sealed[0]
        );
    }
    // Everything logged, up to the kill and since, reaches the receiver.
    let logged = logged_ids(&d);
    for id in &at_kill {
        assert!(logged.contains(id), "{id} vanished from the log");
    }
    rx.wait_delivered(&logged, Duration::from_secs(90))
        .with_context(|| d.log())?;
    d.signal_and_wait(libc::SIGTERM)?;
    let after = d.cli(&["audit", "verify", &state])?;
    assert!(after.ok && after.stdout.starts_with("ok:"), "{after:?}");
    assert!(!after.stdout.contains("unsealed"), "{}", after.stdout);
    verify_rust(&rx.got(), &SECRETS);
    Ok(())
}

/// The seq of the last of `ids` in the log.
fn at_kill_last_seq(d: &Daemon, ids: &[String]) -> Option<u64> {
    let last = ids.last()?;
    d.audit_events()
        .iter()
        .find(|e| e["id"].as_str() == Some(last.as_str()))
        .and_then(|e| e["seq"].as_u64())
}

#[test]
fn gone_disables_the_endpoint_for_good() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let cg = TestCgroup::new("whgone")?;
    let echo = EchoServer::start("127.0.0.2:0")?;
    let port = Receiver::reserve("127.0.0.1")?;
    let rx = Receiver::start("127.0.0.1", port, vec![Mode::Status(410)])?;
    let url = format!("http://127.0.0.1:{port}/hook");
    let mut d = daemon(&cg, &echo, &url, "whgone")?;
    let ev = d.wait_events("webhook_disabled", |e| {
        !of_type(e, "webhook_disabled").is_empty()
    })?;
    let dis = of_type(&ev, "webhook_disabled")[0];
    assert_eq!(dis["status"], 410);
    assert_eq!(dis["endpoint"], url);
    assert_eq!(rx.got().len(), 1);
    // Kept across a restart: nothing more is sent.
    d.signal_and_wait(libc::SIGTERM)?;
    d.spawn()?;
    sessions(&cg, &echo, 2)?;
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(rx.got().len(), 1, "a disabled endpoint got requests");
    assert!(d.log().contains("disabled"), "{}", d.log());
    let status = d.cli(&[
        "status",
        "--json",
        "--socket",
        &d.socket().display().to_string(),
    ])?;
    let v: Value = serde_json::from_str(&status.stdout)?;
    assert_eq!(v["webhooks"][0]["disabled"], true, "{v}");
    Ok(())
}
