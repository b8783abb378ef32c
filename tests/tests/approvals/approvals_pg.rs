//! Held PostgreSQL statements through the real daemon, as the job would abuse them: a
//! statement whose text carries terminal escapes cannot make an approver's `approvals list`
//! show something else; a prepared statement approved once runs once — `EXECUTE` in SQL
//! (psql) and Bind of a named statement in the extended protocol (`pgbench -M prepared`)
//! are decided again after their one approved execution. PostgreSQL on 127.0.0.73.

use std::{
    path::Path,
    process::{Child, Output, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use interlock_tests::{postgres::*, *};
use serde_json::Value;

fn setup(name: &str) -> Result<(PgServer, TestCgroup, Daemon)> {
    let pg = PgServer::start("127.0.0.73")?;
    pg.query(&format!(
        "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 5);
         ALTER TABLE t OWNER TO {ROLE}"
    ))?;
    let cg = TestCgroup::new(name)?;
    let policy = Policy::new()
        .postgres("db", &pg, &pg.password_file()?)
        .rules(
            "
  - name: writes-wait
    match: {statement: [write, truncate]}
    action: require_approval
    approval: {approvers: {users: [daemon]}, timeout: 120s}
",
        )
        .yaml();
    let d = Daemon::start(DaemonSpec::with_policy(&cg, &policy, &[]))?;
    Ok((pg, cg, d))
}

fn psql(cg: &TestCgroup, pg: &PgServer, statements: &[&str]) -> Result<Child> {
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
    for s in statements {
        args.push("-c");
        args.push(s);
    }
    Ok(cg
        .command(Path::new("/usr/bin/psql"), &args)
        .env("PGPASSWORD", "any")
        .env("PGSSLMODE", "disable")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?)
}

/// The `n`th hold (0-based) once requested: its id and request text.
fn hold(d: &Daemon, n: usize) -> Result<(String, String)> {
    let ev = d.wait_events_long(&format!("hold #{n}"), |e| {
        of_type(e, "approval_requested").len() > n
    })?;
    let a = &of_type(&ev, "approval_requested")[n]["approval"];
    Ok((
        a["id"].as_str().context("id")?.to_string(),
        a["request"]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    ))
}

fn decide(d: &Daemon, verb: &str, id: &str) -> Result<()> {
    let r = d.cli_as("daemon", None, &["approvals", verb, id])?;
    if !r.ok {
        bail!("approvals {verb} {id}: {r:?}");
    }
    Ok(())
}

/// Waits (bounded) for a child and returns its output.
fn finish(child: Child) -> Result<Output> {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => Ok(out?),
        Err(_) => {
            // SAFETY: kill with a pid this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            bail!("the client did not finish")
        }
    }
}

#[test]
fn a_held_statement_cannot_drive_the_approvers_terminal() -> Result<()> {
    if !privileged() || !PgServer::available() {
        return Ok(());
    }
    let (pg, cg, d) = setup("pg-escapes")?;
    // On a terminal this would erase the line and show `SELECT 1` over the TRUNCATE.
    let sneaky = "TRUNCATE t /*\r\x1b[2K\x1b[1A SELECT 1 \u{9b}2K \u{202e}1 TCELES */";
    let client = psql(&cg, &pg, &[sneaky])?;
    let (id, text) = hold(&d, 0)?;
    assert!(
        text.contains('\x1b'),
        "the record keeps the statement as sent: {text:?}"
    );
    for args in [
        vec!["approvals", "list"],
        vec!["approvals", "show", id.as_str()],
    ] {
        let r = d.cli_as("daemon", None, &args)?;
        assert!(r.ok, "{r:?}");
        let unsafe_chars: Vec<char> = r
            .stdout
            .chars()
            .filter(|c| *c != '\n' && interlock::text::is_unsafe(*c))
            .collect();
        assert!(
            unsafe_chars.is_empty(),
            "{args:?} printed {unsafe_chars:?}:\n{}",
            r.stdout
        );
        assert!(r.stdout.contains("TRUNCATE t"), "{}", r.stdout);
    }
    let list = d.cli_as("daemon", None, &["approvals", "list"])?.stdout;
    assert!(
        list.contains("\\r\\x1b[2K\\x1b[1A SELECT 1 \\x9b2K \\u{202e}1 TCELES"),
        "{list}"
    );
    let show = d
        .cli_as("daemon", None, &["approvals", "show", &id])?
        .stdout;
    let v: Value = serde_json::from_str(&show)?;
    assert_eq!(
        v["request"]["request"]["text"],
        text.as_str(),
        "JSON keeps its value"
    );
    decide(&d, "deny", &id)?;
    assert!(!finish(client)?.status.success());
    Ok(())
}

#[test]
fn an_approved_prepared_statement_runs_once_then_asks_again() -> Result<()> {
    if !privileged() || !PgServer::available() {
        return Ok(());
    }
    let (pg, cg, d) = setup("pg-once")?;

    // SQL: PREPARE approved; its first EXECUTE runs; the next one is held again.
    let client = psql(
        &cg,
        &pg,
        &[
            "PREPARE del(int) AS DELETE FROM t WHERE id = $1",
            "EXECUTE del(1)",
            "EXECUTE del(2)",
        ],
    )?;
    let (first, text) = hold(&d, 0)?;
    assert!(text.starts_with("PREPARE del"), "{text}");
    decide(&d, "approve", &first)?;
    let (again, text) = hold(&d, 1)?;
    assert!(
        text.contains("EXECUTE del(2)")
            && text.contains("runs the prepared statement: PREPARE del"),
        "{text}"
    );
    assert_eq!(
        pg.query("SELECT string_agg(id::text, ',' ORDER BY id) FROM t")?,
        "2,3,4,5"
    );
    decide(&d, "deny", &again)?;
    let out = finish(client)?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("denied by daemon"),
        "{out:?}"
    );
    assert_eq!(pg.query("SELECT count(*) FROM t")?, "4");

    // Extended protocol: pgbench prepares the DELETE once (held, approved) and binds it
    // for every transaction: the first runs, the second is decided again.
    let dir = scratch("interlock-pgbench")?;
    let script = dir.path().join("delete.sql");
    std::fs::write(&script, "DELETE FROM t WHERE id = 3;\n")?;
    let (host, port) = (pg.addr.ip().to_string(), pg.addr.port().to_string());
    let bench = cg
        .command(
            Path::new("/usr/bin/pgbench"),
            &[
                "-n",
                "-M",
                "prepared",
                "-t",
                "2",
                "-c",
                "1",
                "-f",
                &script.display().to_string(),
                "-h",
                &host,
                "-p",
                &port,
                "-U",
                ROLE,
                DATABASE,
            ],
        )
        .env("PGPASSWORD", "any")
        .env("PGSSLMODE", "disable")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let (parse, text) = hold(&d, 2)?;
    assert_eq!(text, "DELETE FROM t WHERE id = 3");
    decide(&d, "approve", &parse)?;
    let (bind, text) = hold(&d, 3)?;
    assert!(
        text.contains("again: DELETE FROM t WHERE id = 3"),
        "the second execution was not decided again: {text}"
    );
    assert_eq!(pg.query("SELECT count(*) FROM t")?, "3");
    decide(&d, "deny", &bind)?;
    let out = finish(bench)?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("denied by daemon"), "{said}");
    // The session carries on after the refusal, in step with the server.
    assert_eq!(
        pg.query("SELECT string_agg(id::text, ',' ORDER BY id) FROM t")?,
        "2,4,5"
    );
    assert_eq!(
        of_type(&d.events(), "approval_requested").len(),
        4,
        "no other hold"
    );
    Ok(())
}
