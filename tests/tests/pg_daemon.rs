//! The PostgreSQL proxy through the whole pipeline: real psql in a scope
//! cgroup, the kernel redirect, the daemon's policy (injected credentials,
//! a blocked class, a held class approved over the control socket), and the
//! audit trail with the deciding rules.

use std::process::{Command, Output, Stdio};

use anyhow::Result;
use interlock_tests::{postgres::*, *};

fn psql(cg: &TestCgroup, pg: &PgServer, sql: &str) -> Command {
    psql_in(cg, pg, sql)
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn intercepted_psql_is_decided_per_statement_and_audited() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let pg = PgServer::start("127.0.0.11")?;
    pg.query(
        "CREATE TABLE items (id int, owner text); INSERT INTO items VALUES (1, 'a'), (2, 'b'); ALTER TABLE items OWNER TO app",
    )?;
    let cg = TestCgroup::new("pg-e2e")?;
    let secret = std::env::temp_dir().join(unique("interlock-pgpw"));
    std::fs::write(&secret, format!("{PASSWORD}\n"))?;
    let policy = format!(
        "version: 1
targets:
  - name: app-db
    protocol: postgres
    match: [{{address: {ip}, port: {port}}}]
    upstream: {{user: {ROLE}, password: {{file: {pw}}}, tls: disable}}
rules:
  - name: no-truncate
    match: {{statement: [truncate, delete_without_where]}}
    action: block
    message: use a migration
  - name: writes-need-a-human
    match: {{statement: [write]}}
    action: require_approval
    approval: {{approvers: {{users: [daemon]}}, timeout: 60s}}
",
        ip = pg.addr.ip(),
        port = pg.addr.port(),
        pw = secret.display(),
    );
    let d = Daemon::start(DaemonSpec::with_policy(&cg, &policy, &[]))?;

    let out = psql(&cg, &pg, "SELECT count(*) FROM items").output()?;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}\n{}", d.log());
    assert_eq!(stdout, "2");

    // A DELETE without WHERE hidden in a CTE is blocked with 42501 naming the rule.
    let out = psql(
        &cg,
        &pg,
        "WITH gone AS (DELETE FROM items RETURNING *) SELECT count(*) FROM gone",
    )
    .output()?;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no-truncate") && stderr.contains("use a migration"),
        "{stderr}"
    );
    assert_eq!(
        pg.query("SELECT count(*) FROM items")?,
        "2",
        "the blocked delete ran"
    );

    // A write waits for `daemon`, then runs.
    let child = psql(&cg, &pg, "UPDATE items SET owner = 'c' WHERE id = 1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let ev = d.wait_events_long("hold", |e| !of_type(e, "approval_requested").is_empty())?;
    let held = of_type(&ev, "approval_requested")[0];
    assert_eq!(held["approval"]["request"]["kind"], "statement");
    let id = held["approval"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        pg.query("SELECT owner FROM items WHERE id = 1")?,
        "a",
        "ran before approval"
    );
    let r = d.cli_as(
        "daemon",
        None,
        &["approvals", "approve", &id, "--reason", "CHG-7"],
    )?;
    assert!(r.ok, "{r:?}");
    let out = child.wait_with_output()?;
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&id),
        "the client was told the approval id: {stderr}"
    );
    assert_eq!(pg.query("SELECT owner FROM items WHERE id = 1")?, "c");

    let ev = d.wait_events("three ends", |e| of_type(e, "session_ended").len() == 3)?;
    let stmts = of_type(&ev, "statement");
    let update = stmts
        .iter()
        .find(|s| s["text"].as_str().unwrap_or_default().starts_with("UPDATE"))
        .expect("update recorded");
    assert_eq!(update["decision"]["action"], "approved");
    assert_eq!(update["decision"]["rule"], "writes-need-a-human");
    assert_eq!(update["rows"], 1);
    assert_eq!(update["ocsf"]["class_uid"], 6005);
    let select = stmts
        .iter()
        .find(|s| s["text"] == "SELECT count(*) FROM items")
        .expect("select recorded");
    assert_eq!(select["decision"]["action"], "allowed");
    assert_eq!(select["rows"], 1);
    let blocked = of_type(&ev, "request_blocked");
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0]["rule"], "no-truncate");
    let started = of_type(&ev, "session_started");
    assert!(
        started
            .iter()
            .all(|s| s["identity"]["protocol"] == "postgres")
    );
    assert!(started.iter().all(|s| {
        s["identity"]["process"]["exe"]
            .as_str()
            .unwrap_or_default()
            .ends_with("/psql")
    }));
    // The injected password never reaches an event.
    assert!(!d.events_text().contains(PASSWORD));
    Ok(())
}
