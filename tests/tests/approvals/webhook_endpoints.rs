//! Webhook endpoints as an operator configures them: batching, several
//! endpoints each with its own secret, `Retry-After` (seconds and
//! HTTP-date), `interlock webhook test` with and without a URL, and a
//! bounded spool whose overflow is counted, reported and shown in
//! `interlock status`. Signatures are checked by the Python
//! `standardwebhooks`. Receivers on 127.0.0.51 - 127.0.0.53.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use interlock_tests::{
    webhook::{
        Mode, Received, Receiver, echo_sessions, event_id, logged_ids, secret_file, verify_ocsf,
        verify_python, verify_rust, webhook_daemon,
    },
    *,
};
use serde_json::Value;

const SECRET_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET_B: &str = "whsec_c2Vjb25kLWtleS1mb3Itcm90YXRpb24=";

fn sessions(cg: &TestCgroup, echo: &EchoServer, n: usize) -> Result<()> {
    echo_sessions(cg, echo, n)
}

fn status(d: &Daemon) -> Result<Value> {
    let out = d.cli(&[
        "status",
        "--json",
        "--socket",
        &d.socket().display().to_string(),
    ])?;
    anyhow::ensure!(out.ok, "{out:?}");
    Ok(serde_json::from_str(&out.stdout)?)
}

#[test]
fn batches_are_signed_arrays_in_log_order() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let cg = TestCgroup::new("whbatch")?;
    let echo = EchoServer::start("127.0.0.2:0")?;
    let scratch = interlock_tests::scratch("whbatch")?;
    let dir = scratch.path().to_path_buf();
    let secrets = secret_file(&dir, "s", &[SECRET_A, SECRET_B])?;
    let port = Receiver::reserve("127.0.0.51")?;
    let url = format!("http://127.0.0.51:{port}/batch");
    let d = webhook_daemon(&cg, &echo, &[url], &secrets, &["--webhook-batch", "4"])?;
    // Down while events pile up, so batches are full.
    sessions(&cg, &echo, 6)?;
    d.wait_events("six ends", |e| of_type(e, "session_ended").len() == 6)?;
    let rx = Receiver::start("127.0.0.51", port, vec![Mode::Status(200)])?;
    let logged = logged_ids(&d);
    rx.wait_delivered(&logged, Duration::from_secs(60))?;
    let got = rx.got();
    let mut sizes = Vec::new();
    let mut order = Vec::new();
    for r in &got {
        let body: Value = serde_json::from_str(&r.body)?;
        let items = body.as_array().context("a batch body is a JSON array")?;
        assert!(!items.is_empty() && items.len() <= 4, "{}", items.len());
        let first = event_id(&items[0]).context("event id")?;
        assert_eq!(r.id, format!("{first}_{}", items.len()), "batch id");
        sizes.push(items.len());
        order.extend(items.iter().filter_map(event_id));
    }
    assert!(sizes.contains(&4), "no full batch: {sizes:?}");
    let want: Vec<&String> = logged.iter().collect();
    let seen: Vec<&String> = order.iter().filter(|id| logged.contains(id)).collect();
    assert_eq!(seen, want, "batches keep the log's order");
    let all: Vec<Value> = got.iter().flat_map(|r| r.events()).collect();
    verify_ocsf(&all)?;
    verify_rust(&got, &[SECRET_A, SECRET_B]);
    verify_python(&got, &[SECRET_A, SECRET_B])
}

/// Endpoint `a` (on 127.0.0.51, answering 200) with its own secret file
/// holding [`SECRET_A`], endpoint `b` (on 127.0.0.52, answering `b_mode`)
/// signing with the shared `--webhook-secret-file` holding [`SECRET_B`].
struct Two {
    d: Daemon,
    a: Receiver,
    b: Receiver,
    /// Holds endpoint a's own secret file `a` (and the shared one, `b`).
    secrets: tempfile::TempDir,
    cg: TestCgroup,
    echo: EchoServer,
}

fn two_endpoints(tag: &str, b_mode: Mode) -> Result<Two> {
    let cg = TestCgroup::new(tag)?;
    let echo = EchoServer::start("127.0.0.2:0")?;
    let scratch = interlock_tests::scratch(tag)?;
    let dir = scratch.path().to_path_buf();
    let own = secret_file(&dir, "a", &[SECRET_A])?;
    let shared = secret_file(&dir, "b", &[SECRET_B])?;
    let a = Receiver::start("127.0.0.51", 0, vec![Mode::Status(200)])?;
    let b = Receiver::start("127.0.0.52", 0, vec![b_mode])?;
    let with_own = format!("{},secret={}", a.url("/a"), own.display());
    let d = webhook_daemon(&cg, &echo, &[with_own, b.url("/b")], &shared, &[])?;
    Ok(Two {
        d,
        a,
        b,
        secrets: scratch,
        cg,
        echo,
    })
}

#[test]
fn two_endpoints_each_get_everything_signed_with_their_own_secret() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let Two {
        d,
        a,
        b,
        cg,
        echo,
        secrets: _secrets,
    } = two_endpoints("whtwo", Mode::Status(204))?;
    sessions(&cg, &echo, 3)?;
    d.wait_events("three ends", |e| of_type(e, "session_ended").len() == 3)?;
    let logged = logged_ids(&d);
    a.wait_delivered(&logged, Duration::from_secs(30))?;
    b.wait_delivered(&logged, Duration::from_secs(30))?;
    verify_python(&a.got(), &[SECRET_A])?;
    verify_python(&b.got(), &[SECRET_B])?;
    // Each endpoint's signature is its own: the other secret does not verify it.
    assert!(verify_python(&a.got()[..1], &[SECRET_B]).is_err());
    assert!(verify_python(&b.got()[..1], &[SECRET_A]).is_err());
    // Status counts per endpoint (acks follow the answers closely: poll).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = status(&d)?;
        let hooks = st["webhooks"].as_array().context("webhooks")?.clone();
        assert_eq!(hooks.len(), 2, "{st}");
        assert_eq!(hooks[0]["endpoint"], a.url("/a"));
        assert_eq!(hooks[1]["endpoint"], b.url("/b"));
        let done = hooks.iter().all(|h| {
            h["pending_events"] == 0 && h["delivered"].as_u64() >= Some(logged.len() as u64)
        });
        if done {
            assert!(hooks.iter().all(|h| h["dropped"] == 0), "{st}");
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "counters never settled: {st}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The gap between the first two requests the receiver got.
fn first_gap(rx: &Receiver) -> Result<Duration> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = rx.got();
        if got.len() >= 2 {
            return Ok(got[1].at.duration_since(got[0].at));
        }
        anyhow::ensure!(Instant::now() < deadline, "no retry after {got:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn retry_after_is_honoured_in_seconds_and_as_a_date() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let cg = TestCgroup::new("whretry")?;
    let echo = EchoServer::start("127.0.0.2:0")?;
    let scratch = interlock_tests::scratch("whretry")?;
    let dir = scratch.path().to_path_buf();
    let secrets = secret_file(&dir, "s", &[SECRET_A])?;
    // A 500 that asks for 3 s (the backoff alone would retry after 0.5 s).
    let seconds = Receiver::start(
        "127.0.0.51",
        0,
        vec![Mode::RetryAfter(500, "3".into()), Mode::Status(200)],
    )?;
    // A 429 with an HTTP-date 4 s after the answer (in whole seconds:
    // more than 3 s).
    let dated = Receiver::start(
        "127.0.0.52",
        0,
        vec![Mode::RetryAt(429, 4), Mode::Status(200)],
    )?;
    let d = webhook_daemon(
        &cg,
        &echo,
        &[seconds.url("/s"), dated.url("/d")],
        &secrets,
        &[],
    )?;
    let gap = first_gap(&seconds)?;
    assert!(gap >= Duration::from_secs(3), "retried after {gap:?}");
    let gap = first_gap(&dated)?;
    assert!(gap >= Duration::from_secs(3), "retried after {gap:?}");
    // The retried event is the same one, and nothing is lost.
    for rx in [&seconds, &dated] {
        let got = rx.got();
        assert_eq!(got[0].id, got[1].id, "a retry resends the same event");
        rx.wait_delivered(&logged_ids(&d), Duration::from_secs(30))?;
    }
    Ok(())
}

#[test]
fn webhook_test_reaches_the_daemon_s_endpoints_or_a_given_url() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let Two {
        d, a, b, secrets, ..
    } = two_endpoints("whtest", Mode::Status(503))?;
    let own = secrets.path().join("a");
    let socket = d.socket().display().to_string();
    let out = d.cli(&["webhook", "test", "--socket", &socket])?;
    assert!(!out.ok, "one endpoint answered 503: {out:?}");
    assert!(
        out.stdout.contains(&format!("{}: 200", a.url("/a"))),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!("{}: 503", b.url("/b"))),
        "{}",
        out.stdout
    );
    let tests = |rx: &Receiver| -> Vec<Received> {
        rx.got()
            .into_iter()
            .filter(|r| {
                r.events()
                    .iter()
                    .any(|e| e["unmapped"]["type"] == "webhook_test")
            })
            .collect()
    };
    let (ta, tb) = (tests(&a), tests(&b));
    assert_eq!((ta.len(), tb.len()), (1, 1));
    verify_python(&ta, &[SECRET_A])?;
    verify_python(&tb, &[SECRET_B])?;
    let body: Value = serde_json::from_str(&ta[0].body)?;
    assert_eq!(body["class_uid"], 1008);
    verify_ocsf(&[body])?;
    // Only root may make the daemon sign and send.
    let r = d.cli_as("nobody", None, &["webhook", "test"])?;
    assert!(!r.ok && r.stderr.contains("(403)"), "{r:?}");
    // Never logged, so never spooled: the test event is not in the audit log.
    assert!(!d.audit_events().iter().any(|e| e["type"] == "webhook_test"));
    // With a URL, the CLI sends one itself (signed with the given file).
    let c = Receiver::start("127.0.0.53", 0, vec![Mode::Status(202)])?;
    let out = d.cli(&[
        "webhook",
        "test",
        &c.url("/c"),
        "--secret-file",
        own.to_str().context("p")?,
    ])?;
    assert!(out.ok && out.stdout.starts_with("202"), "{out:?}");
    verify_python(&c.got(), &[SECRET_A])?;
    // No endpoint answering at all is an error naming it.
    let port = Receiver::reserve("127.0.0.53")?;
    let out = d.cli(&["webhook", "test", &format!("http://127.0.0.53:{port}/x")])?;
    assert!(
        !out.ok && out.stderr.contains("webhook request failed"),
        "{out:?}"
    );
    Ok(())
}

#[test]
fn overflow_is_counted_durably_reported_and_shown_in_status() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let cg = TestCgroup::new("whfull")?;
    let echo = EchoServer::start("127.0.0.2:0")?;
    let scratch = interlock_tests::scratch("whfull")?;
    let dir = scratch.path().to_path_buf();
    let secrets = secret_file(&dir, "s", &[SECRET_A])?;
    let port = Receiver::reserve("127.0.0.51")?;
    let url = format!("http://127.0.0.51:{port}/full");
    let mut d = webhook_daemon(
        &cg,
        &echo,
        std::slice::from_ref(&url),
        &secrets,
        &["--webhook-spool-kib", "16"],
    )?;
    // The receiver is down; 30 sessions (60 events of 1-2 KiB) do not fit.
    sessions(&cg, &echo, 30)?;
    let ev = d.wait_events("an overflow", |e| {
        !of_type(e, "webhook_spool_overflow").is_empty()
    })?;
    let reported: u64 = of_type(&ev, "webhook_spool_overflow")
        .iter()
        .filter_map(|e| e["dropped"].as_u64())
        .sum();
    let st = status(&d)?;
    let hook = &st["webhooks"][0];
    let dropped = hook["dropped"].as_u64().context("dropped")?;
    assert!(
        dropped > 0 && reported <= dropped,
        "{hook} reported {reported}"
    );
    assert!(hook["pending_bytes"].as_u64() <= Some(16 << 10), "{hook}");
    assert!(hook["last_error"].is_string(), "{hook}");
    // The text form says the same (counting on: reports of drops are
    // events too, and may drop more).
    let text = d.cli(&["status", "--socket", &d.socket().display().to_string()])?;
    let line = text
        .stdout
        .lines()
        .find(|l| l.starts_with("webhook:") && l.contains(&url))
        .context("a webhook line")?
        .to_string();
    let shown: u64 = line
        .split(", ")
        .find_map(|part| part.strip_suffix(" dropped"))
        .and_then(|n| n.parse().ok())
        .with_context(|| line.clone())?;
    assert!(shown >= dropped && line.contains("failing:"), "{line}");
    // The count is on disk: a SIGKILL does not lose it.
    d.signal_and_wait(libc::SIGKILL)?;
    d.spawn()?;
    let st = status(&d)?;
    assert!(
        st["webhooks"][0]["dropped"].as_u64() >= Some(dropped),
        "{st}"
    );
    // Back up: what is still spooled arrives, the overflow report with it.
    let rx = Receiver::start("127.0.0.51", port, vec![Mode::Status(200)])?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let overflow = loop {
        let found: Vec<Value> = rx
            .got()
            .iter()
            .flat_map(|r| r.events())
            .filter(|e| e["unmapped"]["type"] == "webhook_spool_overflow")
            .collect();
        if !found.is_empty() {
            break found;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no overflow report delivered\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(overflow[0]["class_uid"], 1008);
    assert!(overflow[0]["unmapped"]["dropped"].as_u64() > Some(0));
    verify_rust(&rx.got(), &[SECRET_A]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h = &status(&d)?["webhooks"][0];
        if h["pending_events"] == 0 {
            assert!(h["delivered"].as_u64() > Some(0), "{h}");
            assert!(h["last_error"].is_null(), "{h}");
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "spool never drained: {h}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[test]
fn status_shows_other_users_no_webhook_paths() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let cg = TestCgroup::new("whredact")?;
    let echo = EchoServer::start("127.0.0.2:0")?;
    let scratch = interlock_tests::scratch("whredact")?;
    let secrets = secret_file(scratch.path(), "s", &[SECRET_A])?;
    let port = Receiver::reserve("127.0.0.51")?;
    // A collector that takes its token in the path.
    let url = format!("http://127.0.0.51:{port}/services/T01/B02/path-token-x9");
    let d = webhook_daemon(&cg, &echo, std::slice::from_ref(&url), &secrets, &[])?;
    let out = d.cli_as("nobody", None, &["status", "--json"])?;
    anyhow::ensure!(out.ok, "{out:?}");
    let st: Value = serde_json::from_str(&out.stdout)?;
    let shown = st["webhooks"][0]["endpoint"].as_str().context("endpoint")?;
    assert!(
        shown.starts_with(&format!("http://127.0.0.51:{port}/… (spool ")),
        "{shown}"
    );
    assert!(!out.stdout.contains("path-token-x9"), "{}", out.stdout);
    let text = d.cli_as("nobody", None, &["status"])?;
    assert!(
        text.ok && !text.stdout.contains("path-token-x9"),
        "{text:?}"
    );
    // Root, who can read the configuration anyway, sees the path.
    assert_eq!(status(&d)?["webhooks"][0]["endpoint"], url);
    Ok(())
}
