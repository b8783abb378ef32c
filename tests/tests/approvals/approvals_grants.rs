//! `grant: session` end to end: real psql through the daemon, a held
//! write approved over the control socket; the same session's later
//! writes pass without asking, a new session asks again. PostgreSQL on
//! 127.0.0.55.

use std::process::{Command, Stdio};

use anyhow::{Context as _, Result};
use interlock_tests::{postgres::*, *};

fn psql(cg: &TestCgroup, pg: &PgServer, statements: &[&str]) -> Command {
    let (host, port) = (pg.addr.ip().to_string(), pg.addr.port().to_string());
    let mut args = vec![
        "-X",
        "-At",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        &host,
        "-p",
        &port,
        "-U",
        ROLE,
        "-d",
        DATABASE,
    ];
    // Each -c is its own statement, all on one connection (one session).
    for s in statements {
        args.push("-c");
        args.push(s);
    }
    let mut c = cg.command(std::path::Path::new("/usr/bin/psql"), &args);
    c.env("PGPASSWORD", "any").env("PGSSLMODE", "disable");
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn holds(d: &Daemon, n: usize) -> Result<Vec<serde_json::Value>> {
    let ev = d.wait_events_long(&format!("{n} holds"), |e| {
        of_type(e, "approval_requested").len() >= n
    })?;
    Ok(of_type(&ev, "approval_requested")
        .into_iter()
        .cloned()
        .collect())
}

#[test]
fn a_session_grant_covers_the_rest_of_that_session_only() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let pg = PgServer::start("127.0.0.55")?;
    pg.query("CREATE TABLE t (id int); ALTER TABLE t OWNER TO app")?;
    let cg = TestCgroup::new("grant-session")?;
    let secret = pg.password_file()?;
    let policy = Policy::new()
        .postgres("app-db", &pg, &secret)
        .rules(
            "
  - name: writes-once-a-session
    match: {statement: [write]}
    action: require_approval
    approval: {approvers: {users: [daemon]}, timeout: 60s, grant: session}
",
        )
        .yaml();
    let d = Daemon::start(DaemonSpec::with_policy(&cg, &policy, &[]))?;

    // One session, three writes: the first waits for a human, the rest do not.
    let first = psql(
        &cg,
        &pg,
        &[
            "INSERT INTO t VALUES (1)",
            "INSERT INTO t VALUES (2)",
            "UPDATE t SET id = id + 10",
        ],
    )
    .spawn()?;
    let held = holds(&d, 1)?;
    let id = held[0]["approval"]["id"]
        .as_str()
        .context("id")?
        .to_string();
    assert_eq!(held[0]["approval"]["grant"], "session");
    assert_eq!(
        pg.query("SELECT count(*) FROM t")?,
        "0",
        "ran before approval"
    );
    let r = d.cli_as("daemon", None, &["approvals", "approve", &id])?;
    assert!(r.ok, "{r:?}");
    let out = first.wait_with_output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        pg.query("SELECT string_agg(id::text, ',' ORDER BY id) FROM t")?,
        "11,12"
    );
    let ev = d.wait_events("the first session's end", |e| {
        !of_type(e, "session_ended").is_empty()
    })?;
    assert_eq!(of_type(&ev, "approval_requested").len(), 1, "asked once");
    let session = held[0]["session_id"].clone();
    let writes: Vec<&serde_json::Value> = of_type(&ev, "statement")
        .into_iter()
        .filter(|s| s["session_id"] == session)
        .collect();
    assert_eq!(writes.len(), 3, "{writes:#?}");
    for w in &writes {
        assert_eq!(w["decision"]["action"], "approved", "{w}");
        assert_eq!(w["decision"]["rule"], "writes-once-a-session");
    }

    // A new session (same job, same user) asks again.
    let second = psql(&cg, &pg, &["INSERT INTO t VALUES (3)"]).spawn()?;
    let held = holds(&d, 2)?;
    assert_ne!(held[1]["session_id"], session);
    let id = held[1]["approval"]["id"]
        .as_str()
        .context("id")?
        .to_string();
    let r = d.cli_as(
        "daemon",
        None,
        &["approvals", "deny", &id, "--reason", "not now"],
    )?;
    assert!(r.ok, "{r:?}");
    let out = second.wait_with_output()?;
    assert!(!out.status.success(), "a denied write succeeded");
    assert_eq!(pg.query("SELECT count(*) FROM t")?, "2");
    Ok(())
}
