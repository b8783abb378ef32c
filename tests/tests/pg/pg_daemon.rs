//! The PostgreSQL proxy through the whole pipeline: real psql in a scope
//! cgroup, the kernel redirect, the daemon's policy (injected credentials,
//! a blocked class, a held class approved over the control socket), and the
//! audit trail with the deciding rules.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Output, Stdio},
};

use anyhow::Result;
use interlock_tests::{postgres::*, *};

/// psql in `cg` as the test role, dialling `host` at `server`'s port, with `args`.
fn psql_in(cg: &TestCgroup, server: SocketAddr, host: &str, args: &[&str]) -> Command {
    let port = server.port().to_string();
    let mut all = vec![
        "-X", "-At", "-h", host, "-p", &port, "-U", ROLE, "-d", DATABASE,
    ];
    all.extend(args);
    cg.command(std::path::Path::new("/usr/bin/psql"), &all)
}

fn psql(cg: &TestCgroup, pg: &PgServer, sql: &str) -> Command {
    let ip = pg.addr.ip().to_string();
    let mut c = psql_in(cg, pg.addr, &ip, &["-v", "ON_ERROR_STOP=1", "-c", sql]);
    // Any password: the flow identity is the credential, interlock injects the real one.
    c.env("PGPASSWORD", "not-the-password")
        .env("PGSSLMODE", "disable");
    c
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
    let secret = pg.password_file()?;
    let policy = Policy::new()
        .postgres("app-db", &pg, &secret)
        .rules(
            "
  - name: no-truncate
    match: {statement: [truncate, delete_without_where]}
    action: block
    message: use a migration
  - name: writes-need-a-human
    match: {statement: [write]}
    action: require_approval
    approval: {approvers: {users: [daemon]}, timeout: 60s}
",
        )
        .yaml();
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
    // The injected password never reaches an event, a record, the log or any other file.
    assert!(!d.events_text().contains(PASSWORD));
    let leaked = d.files_containing(PASSWORD);
    assert!(leaked.is_empty(), "the upstream password is in {leaked:?}");
    Ok(())
}

/// A policy with the target `app-db` for `pg` (also matched by `host`)
/// with the test role's password injected from a file, then `rules`.
fn app_db(pg: &PgServer, secret: &Path, host: Option<&str>, rules: &str) -> Result<String> {
    let (ip, port) = (pg.addr.ip(), pg.addr.port());
    let by_name = host.map_or(String::new(), |h| {
        format!("{{address: {h}, port: {port}}}, ")
    });
    Ok(format!(
        "version: 1
targets:
  - name: app-db
    protocol: postgres
    match: [{by_name}{{address: {ip}, port: {port}}}]
    upstream: {{user: {ROLE}, password: {{file: {pw}}}, tls: disable}}
{rules}",
        pw = secret.display(),
    ))
}

/// psql in `cg` dialling `host` (at `pg`'s address) with `sslmode` and
/// libpq settings `env`.
fn psql_tls(
    cg: &TestCgroup,
    pg: &PgServer,
    host: &str,
    sslmode: &str,
    env: &[(&str, String)],
) -> Command {
    let mut c = psql_in(cg, pg.addr, host, &["-c", "select 7 * 6"]);
    c.env("PGPASSWORD", "not-the-password")
        .env("PGHOSTADDR", pg.addr.ip().to_string())
        .env("PGSSLMODE", sslmode)
        .env("PGCONNECT_TIMEOUT", "30");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

#[test]
fn jobs_keep_verify_full_against_interlocks_ca_across_restarts() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let pg = PgServer::start("127.0.0.21")?;
    let cg = TestCgroup::new("pg-tls")?;
    // The host name does not resolve (no /etc/hosts edit): jobs reach the
    // address, and libpq checks the certificate for the name they typed.
    let policy = app_db(&pg, &pg.password_file()?, Some("db.pgtls.test"), "")?;
    let mut d = Daemon::start(DaemonSpec::with_policy(&cg, &policy, &[]))?;
    let export = |d: &Daemon| -> Result<String> {
        let out = Command::new(interlock_bin()?)
            .args(["ca", "export", "--state-dir"])
            .arg(&d.state_dir)
            .output()?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    };
    let pem = export(&d)?;
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    assert!(!pem.contains("PRIVATE KEY"));
    let root_dir = interlock_tests::scratch("interlock-root")?;
    let root = root_dir.path().join("root.pem");
    std::fs::write(&root, &pem)?;
    let verify = [("PGSSLROOTCERT", root.display().to_string())];

    let ip = pg.addr.ip().to_string();
    for host in [ip.as_str(), "db.pgtls.test"] {
        let out = psql_tls(&cg, &pg, host, "verify-full", &verify).output()?;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{host}: {stderr}\n{}", d.log());
        assert_eq!(stdout, "42");
    }
    // plain stays possible
    let out = psql_tls(&cg, &pg, &ip, "disable", &[]).output()?;
    assert!(out.status.success(), "{}", text(&out).1);

    let ev = d.wait_events("three ends", |e| of_type(e, "session_ended").len() == 3)?;
    let legs: Vec<&serde_json::Value> = of_type(&ev, "session_started")
        .iter()
        .map(|s| &s["client_leg"])
        .collect();
    assert_eq!(legs, ["tls", "tls", "plain"]);
    // and an investigator reads it in `sessions show`
    let id = of_type(&ev, "session_started")[0]["session_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let out = Command::new(interlock_bin()?)
        .args(["sessions", "show", &id, "--state-dir"])
        .arg(&d.state_dir)
        .output()?;
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("client leg   tls"), "{shown}");

    // restarted, the daemon keeps its CA: the exported file still verifies
    d.signal_and_wait(libc::SIGTERM)?;
    d.spawn()?;
    assert_eq!(export(&d)?, pem);
    let out = psql_tls(&cg, &pg, &ip, "verify-full", &verify).output()?;
    assert!(out.status.success(), "{}\n{}", text(&out).1, d.log());
    drop(d);

    // --no-client-tls answers 'N': a job requiring TLS fails with libpq's
    // clear message, one preferring it goes on in plaintext
    let d = Daemon::start(DaemonSpec::with_policy(&cg, &policy, &["--no-client-tls"]))?;
    let out = psql_tls(&cg, &pg, &ip, "require", &[]).output()?;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("server does not support SSL, but SSL was required"),
        "{stderr}"
    );
    let out = psql_tls(&cg, &pg, &ip, "prefer", &[]).output()?;
    assert!(out.status.success(), "{}", text(&out).1);
    let ev = d.wait_events("two ends", |e| of_type(e, "session_ended").len() == 2)?;
    let started = of_type(&ev, "session_started");
    assert_eq!(started.len(), 1, "the refused job never started a session");
    assert_eq!(started[0]["client_leg"], "plain");
    let _ = std::fs::remove_file(root);
    Ok(())
}

#[test]
fn evasion_attempts_are_decided_by_the_grammar_and_sessions_replay() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let pg = PgServer::start("127.0.0.23")?;
    pg.query(
        "CREATE TABLE items (id int, owner text); INSERT INTO items VALUES (1, 'a'), (2, 'b'); ALTER TABLE items OWNER TO app",
    )?;
    let cg = TestCgroup::new("pg-evasion")?;
    // Outside the server's directory: this test outlives the server (below).
    let secrets = interlock_tests::scratch("interlock-pgpw")?;
    let secret = secrets.path().join("password");
    std::fs::write(&secret, format!("{PASSWORD}\n"))?;
    let policy = app_db(
        &pg,
        &secret,
        None,
        "rules:
  - name: no-destruction
    match: {statement: [drop_table, truncate, delete_without_where, update_without_where, do_block]}
    action: block
    message: not from CI
",
    )?;
    let d = Daemon::start(DaemonSpec::with_policy(&cg, &policy, &[]))?;
    let blocked = [
        "/* harmless */ DROP /* really */ TABLE items",
        "-- a comment line\nDROP TABLE items",
        "dRoP tAbLe ItEmS",
        "DELETE FROM \"items\"",
        "UPDATE public.\"items\" SET owner = 'x'",
        "SELECT 1; DROP TABLE items",
        "WITH gone AS (DELETE FROM items RETURNING *) SELECT count(*) FROM gone",
        "DO $body$ BEGIN EXECUTE 'DROP TABLE items'; END $body$",
        "do language plpgsql $$ begin delete from items; end $$",
        "TRUNCATE ONLY items",
    ];
    for sql in blocked {
        let out = psql(&cg, &pg, sql).output()?;
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{sql} ran");
        assert!(
            stderr.contains("ERROR:  interlock: statement blocked by rule \"no-destruction\""),
            "{sql}: {stderr}"
        );
    }
    assert_eq!(pg.query("SELECT count(*) FROM items")?, "2");
    // text that only looks dangerous is a read
    for sql in [
        "SELECT $$ ; DROP TABLE items; $$",
        "SELECT 'delete from items' AS \"drop table items\"",
        "SELECT count(*) FROM items -- ; DROP TABLE items",
    ] {
        let out = psql(&cg, &pg, sql).output()?;
        assert!(out.status.success(), "{sql}: {}", text(&out).1);
    }

    // one session with several statements, replayed with their timing
    let ip = pg.addr.ip().to_string();
    let mut c = psql_in(
        &cg,
        pg.addr,
        &ip,
        &[
            "-c",
            "SELECT count(*) FROM items",
            "-c",
            "SELECT pg_sleep(0.2)",
            "-c",
            "SELECT missing_column FROM items",
        ],
    );
    c.env("PGPASSWORD", "x").env("PGSSLMODE", "disable");
    let out = c.output()?;
    assert!(!out.status.success(), "the last statement fails");
    let ev = d.wait_events("the replayed session", |e| {
        of_type(e, "statement")
            .iter()
            .any(|s| s["text"] == "SELECT missing_column FROM items")
    })?;
    let stmts = of_type(&ev, "statement");
    let failed = stmts
        .iter()
        .find(|s| s["text"] == "SELECT missing_column FROM items")
        .expect("recorded");
    assert_eq!(failed["error"], "42703");
    let id = failed["session_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let blocked_events = of_type(&ev, "request_blocked");
    assert_eq!(blocked_events.len(), blocked.len(), "{blocked_events:#?}");
    d.wait_events("the session's end", |e| {
        of_type(e, "session_ended")
            .iter()
            .any(|s| s["session_id"] == id.as_str())
    })?;
    let out = Command::new(interlock_bin()?)
        .args(["replay", &id, "--state-dir"])
        .arg(&d.state_dir)
        .output()?;
    let replay = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = replay.lines().collect();
    let find = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not in:\n{replay}"))
    };
    let first = find("statement: SELECT count(*) FROM items -> 1 row");
    let sleep = find("statement: SELECT pg_sleep(0.2) -> 1 row");
    let fail = find("statement: SELECT missing_column FROM items -> error 42703");
    assert!(
        find("session started by") < first && first < sleep && sleep < fail,
        "{replay}"
    );
    assert!(find("session ended") > fail, "{replay}");
    assert!(lines[sleep].contains("(allowed)"), "{replay}");
    // each line is timed from the session's start, in order
    let at = |i: usize| -> f64 {
        lines[i]
            .trim()
            .trim_start_matches('+')
            .split('s')
            .next()
            .unwrap_or("")
            .parse()
            .unwrap_or(-1.0)
    };
    assert!(
        at(first) >= 0.0 && at(first) <= at(sleep) && at(sleep) <= at(fail),
        "{replay}"
    );

    // the server gone: the job is told, the session ends upstream_unreachable
    let addr = pg.addr;
    drop(pg);
    let mut c = psql_in(&cg, addr, &ip, &["-c", "SELECT 1"]);
    let out = c
        .env("PGPASSWORD", "x")
        .env("PGSSLMODE", "disable")
        .output()?;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr
            .contains("interlock: cannot open the upstream session: cannot connect to the server"),
        "{stderr}"
    );
    let ev = d.wait_events("the unreachable session", |e| {
        of_type(e, "session_ended")
            .iter()
            .any(|s| s["outcome"] == "upstream_unreachable")
    })?;
    let unreachable = of_type(&ev, "session_ended")
        .into_iter()
        .find(|s| s["outcome"] == "upstream_unreachable")
        .map(|s| s["error"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    assert!(unreachable.contains("Connection refused"), "{unreachable}");
    Ok(())
}

/// psql in `cg` reading `file` (one statement: psql sends it whole).
fn psql_file(cg: &TestCgroup, pg: &PgServer, file: &Path) -> Command {
    let ip = pg.addr.ip().to_string();
    let f = file.to_string_lossy().into_owned();
    let mut c = psql_in(cg, pg.addr, &ip, &["-v", "ON_ERROR_STOP=1", "-f", &f]);
    c.env("PGPASSWORD", "not-the-password")
        .env("PGSSLMODE", "disable")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// `select 1 in (1, 1, ...)` of about `bytes` bytes: cheap for the server,
/// costly to parse into a tree and walk.
fn long_in_list(dir: &Path, name: &str, bytes: usize) -> Result<std::path::PathBuf> {
    let path = dir.join(name);
    let mut sql = String::with_capacity(bytes + 32);
    sql.push_str("select 1 in (1");
    while sql.len() < bytes {
        sql.push_str(",1");
    }
    sql.push(')');
    std::fs::write(&path, sql)?;
    Ok(path)
}

/// The attack of issue 15 item 6: a job sends statements that take the
/// grammar long to read. Before, classification ran on the daemon's async
/// workers, so a few such sessions stalled every other session (and the
/// heartbeat). Now long texts are classified off the runtime: another
/// session's statements complete while they are still being read, and a
/// text over the size budget is `unparseable` (blocked by a guard that
/// names any class), recorded without its text.
#[test]
fn huge_statements_do_not_stall_other_sessions_and_over_budget_is_unparseable() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let pg = PgServer::start("127.0.0.91")?;
    let cg = TestCgroup::new("pg-classify-budget")?;
    let secret = pg.password_file()?;
    let policy = app_db(
        &pg,
        &secret,
        None,
        "rules:
  - name: guard
    match: {statement: [delete_without_where]}
    action: block
",
    )?;
    // No time budget in reach: the long statements must still be being
    // classified when the other session is done.
    let d = Daemon::start(DaemonSpec::with_policy(
        &cg,
        &policy,
        &["--pg-classify-secs", "3600"],
    ))?;
    let dir = scratch("pg-classify")?;

    // Over the default 1 MiB budget: unparseable, blocked by the guard,
    // recorded without its megabytes.
    let huge = long_in_list(dir.path(), "huge.sql", 3 * 1024 * 1024)?;
    let out = output_within(
        psql_file(&cg, &pg, &huge),
        std::time::Duration::from_secs(300),
    )?;
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "over budget ran: {stderr}");
    assert!(stderr.contains("guard"), "{stderr}");
    let ev = d.wait_events("the refusal", |e| {
        e.iter().any(|v| {
            v.to_string()
                .contains("classification limit of 1048576 bytes")
        })
    })?;
    let refused = ev
        .iter()
        .find(|v| v.to_string().contains("classification limit"))
        .expect("recorded");
    assert!(
        refused.to_string().len() < 64 * 1024,
        "the statement text was recorded"
    );

    // Three sessions send statements under the budget that take long to
    // read; the runtime has fewer workers than that.
    let slow = long_in_list(dir.path(), "slow.sql", 1000 * 1024)?;
    let mut slow_clients = Vec::new();
    for _ in 0..3 {
        slow_clients.push(psql_file(&cg, &pg, &slow).spawn()?);
    }
    d.wait_events_long("three sessions", |e| {
        of_type(e, "session_started").len() >= 4
    })?;
    for i in 0..5 {
        let out = output_within(
            psql(&cg, &pg, &format!("select {i} + 1")),
            std::time::Duration::from_secs(300),
        )?;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}\n{}", d.log());
        assert_eq!(stdout, (i + 1).to_string());
    }
    let mut still = 0;
    for c in &mut slow_clients {
        if matches!(c.try_wait(), Ok(None)) {
            still += 1;
        }
    }
    assert!(
        still > 0,
        "the long statements finished before the short ones: nothing shown"
    );
    // And the long ones complete, answered by the server.
    for c in slow_clients {
        let out = c.wait_with_output()?;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}");
        assert_eq!(stdout, "t");
    }
    Ok(())
}

/// One job cannot take every session the daemon serves: over the
/// per-cgroup cap a PostgreSQL client gets FATAL 53300 naming interlock's
/// limit (as from a server with too many clients), the refusal is
/// recorded, and the job's open sessions carry on; a slot freed is
/// usable again.
#[test]
fn sessions_over_the_cgroup_cap_get_53300_and_the_rest_carry_on() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let pg = PgServer::start("127.0.0.92")?;
    let cg = TestCgroup::new("pg-session-cap")?;
    let secret = pg.password_file()?;
    let policy = app_db(&pg, &secret, None, "")?;
    let d = Daemon::start(DaemonSpec::with_policy(
        &cg,
        &policy,
        &["--max-sessions-per-cgroup", "2"],
    ))?;
    let ip = pg.addr.ip().to_string();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = psql_in(&cg, pg.addr, &ip, &["-v", "ON_ERROR_STOP=1"]);
        c.env("PGPASSWORD", "not-the-password")
            .env("PGSSLMODE", "disable")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        held.push(c.spawn()?);
    }
    d.wait_events_long("two sessions", |e| of_type(e, "session_started").len() == 2)?;

    let out = output_within(
        psql(&cg, &pg, "select 1"),
        std::time::Duration::from_secs(120),
    )?;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("limit of 2 concurrent intercepted sessions per cgroup")
            && stderr.contains("--max-sessions-per-cgroup"),
        "{stderr}"
    );
    let ev = d.wait_events("the refusal", |e| {
        of_type(e, "connection_refused").iter().any(|r| {
            r["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("per cgroup")
        })
    })?;
    assert_eq!(of_type(&ev, "session_started").len(), 2);

    // The held sessions still work.
    for (i, mut c) in held.into_iter().enumerate() {
        use std::io::Write as _;
        let mut stdin = c.stdin.take().expect("stdin");
        writeln!(stdin, "select {i} + 40;")?;
        drop(stdin);
        let out = c.wait_with_output()?;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}");
        assert_eq!(stdout, (i + 40).to_string());
    }
    // Freed: a new session is served.
    d.wait_events("two ends", |e| of_type(e, "session_ended").len() == 2)?;
    let out = output_within(
        psql(&cg, &pg, "select 7"),
        std::time::Duration::from_secs(120),
    )?;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "7");
    Ok(())
}
