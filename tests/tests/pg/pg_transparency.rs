//! What a real libpq driver (psycopg2, `tests/driver/pg_probe.py`) is told
//! about its session is the same directly and through the real daemon: the
//! server's backend pid (`pg_backend_pid()`, BackendKeyData and
//! notification pids agree), a cancel with the key it was given works,
//! `pg_terminate_backend` of that pid ends it with the server's own FATAL,
//! `PQconnectionUsedPassword` is true and a client without a password is
//! refused as the server would refuse it; `client_password: never` lets
//! such a client in (the documented difference). A pipeline the server
//! cuts (pgbench) and a Terminate before any startup packet end as they do
//! directly.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use interlock_tests::{driver_suite::suites_dir, postgres::*, *};
use serde_json::{Value, json};

fn python() -> Option<PathBuf> {
    let p = suites_dir().join("venv/bin/python");
    p.is_file().then_some(p)
}

/// Runs the probe with `dsn`, inside `cg` if given; its JSON line.
fn probe(python: &std::path::Path, dsn: &str, cg: Option<&TestCgroup>) -> Result<Value> {
    let script = workspace().join("tests/driver/pg_probe.py");
    let script = script.to_str().unwrap_or_default();
    let mut cmd = match cg {
        Some(cg) => cg.command(python, &[script, dsn]),
        None => {
            let mut c = std::process::Command::new(python);
            c.args([script, dsn]);
            c
        }
    };
    // No password from anywhere but the DSN.
    cmd.env("PGPASSFILE", "/dev/null").env_remove("PGPASSWORD");
    let out = cmd.output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).with_context(|| {
        format!(
            "probe printed {text:?}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Connects to `addr`, sends `bytes` (a Python bytes literal) and prints
/// what comes back before the close (or "timeout" after 20 s), run in `cg`
/// if given.
fn raw_exchange(
    python: &std::path::Path,
    addr: std::net::SocketAddr,
    bytes: &str,
    cg: Option<&TestCgroup>,
) -> Result<String> {
    let code = format!(
        "import socket\n\
         s = socket.create_connection(('{}', {}))\n\
         s.sendall({bytes})\n\
         s.settimeout(20)\n\
         got = b''\n\
         try:\n\
         \x20   while chunk := s.recv(4096):\n\
         \x20       got += chunk\n\
         \x20   print(repr(got))\n\
         except TimeoutError:\n\
         \x20   print('timeout', repr(got))\n",
        addr.ip(),
        addr.port()
    );
    let mut cmd = match cg {
        Some(cg) => cg.command(python, &["-c", &code]),
        None => {
            let mut c = std::process::Command::new(python);
            c.args(["-c", &code]);
            c
        }
    };
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// pgbench (libpq's pipeline mode) running one pipeline the server cuts
/// short by terminating its own backend; its stderr (what the client
/// made of it) and whether it failed.
fn cut_pipeline(
    pg: &PgServer,
    password: &str,
    script: &std::path::Path,
    cg: Option<&TestCgroup>,
) -> Result<(bool, String)> {
    let port = pg.addr.port().to_string();
    let ip = pg.addr.ip().to_string();
    let script = script.to_str().unwrap_or_default();
    let args = [
        "-n", "-t", "1", "-M", "extended", "-f", script, "-h", &ip, "-p", &port, "-U", ROLE,
        DATABASE,
    ];
    let pgbench = std::path::Path::new("/usr/bin/pgbench");
    let mut cmd = match cg {
        Some(cg) => cg.command(pgbench, &args),
        None => {
            let mut c = std::process::Command::new(pgbench);
            c.args(args);
            c
        }
    };
    let out = cmd
        .env("PGPASSWORD", password)
        .env("PGSSLMODE", "disable")
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    ))
}

fn policy(pg: &PgServer, upstream: &str) -> String {
    format!(
        "version: 1
targets:
  - name: app-db
    protocol: postgres
    match: [{{address: {ip}, port: {port}}}]
    upstream: {upstream}
",
        ip = pg.addr.ip(),
        port = pg.addr.port(),
    )
}

#[test]
fn a_driver_is_told_what_the_server_would_tell_it() -> Result<()> {
    if !privileged() || !PgServer::available() {
        return Ok(());
    }
    let Some(python) = python() else {
        skip_or_fail(
            "psycopg2's venv",
            "no target/driver-suites/venv (cargo xtask setup makes it)",
        );
        return Ok(());
    };
    let pg = PgServer::start("127.0.0.73")?;
    let base = format!(
        "host={} port={} user={ROLE} dbname={DATABASE} sslmode=disable",
        pg.addr.ip(),
        pg.addr.port()
    );
    // (The server has no TLS, and interlock offers its own on the client
    // leg: plaintext on both paths keeps like with like.)
    let with_password = format!("{base} password={PASSWORD}");
    let wrong_password = format!("{base} password=not-the-password");

    let direct = probe(&python, &with_password, None)?;
    assert_eq!(direct["used_password"], true, "{direct}");
    assert_eq!(direct["pid_agrees"], true, "{direct}");
    assert_eq!(direct["notifies"], json!([["probe", "hello", true]]));
    assert_eq!(direct["cancel"], "57014", "{direct}");
    // (psycopg2 reports the close, not the FATAL's text; pgbench below
    // shows the FATAL itself.)
    assert_ne!(direct["terminated"], json!([]), "{direct}");
    let direct_without = probe(&python, &base, None)?;
    let refusal = direct_without["connect_error"].as_str().unwrap_or_default();
    assert!(refusal.contains("no password supplied"), "{direct_without}");

    let secret = pg.password_file()?;
    let injected = |extra: &str| {
        format!(
            "{{user: {ROLE}, password: {{file: {}}}, tls: disable{extra}}}",
            secret.display()
        )
    };
    let cg = TestCgroup::new("pg-transparency")?;
    let d = Daemon::start(DaemonSpec::with_policy(
        &cg,
        &policy(&pg, &injected("")),
        &[],
    ))?;
    // Injected credentials; the client's (wrong) password is asked for and dropped.
    let through = probe(&python, &wrong_password, Some(&cg))?;
    assert_eq!(through, direct, "{}", d.log());
    // No password: refused by the client itself, as directly.
    let without = probe(&python, &base, Some(&cg))?;
    assert_eq!(without, direct_without, "{}", d.log());
    // A Terminate before any startup packet, the client then waiting: the
    // server closes at once without a word, and so does interlock.
    let terminate = "b'X\\0\\0\\0\\x04'";
    let direct_close = raw_exchange(&python, pg.addr, terminate, None)?;
    assert_eq!(direct_close, "b''");
    assert_eq!(
        raw_exchange(&python, pg.addr, terminate, Some(&cg))?,
        direct_close
    );
    // A pipeline the server cuts (it terminates the backend mid-way): the
    // client reads the server's FATAL and nothing of interlock's.
    let dir = scratch("pg-transparency")?;
    let script = dir.path().join("pipeline.sql");
    std::fs::write(
        &script,
        "\\startpipeline\nselect 1;\nselect pg_terminate_backend(pg_backend_pid());\nselect 2;\n\\endpipeline\n",
    )?;
    let direct_cut = cut_pipeline(&pg, PASSWORD, &script, None)?;
    assert!(!direct_cut.0, "{direct_cut:?}");
    assert!(
        direct_cut
            .1
            .contains("terminating connection due to administrator command"),
        "{direct_cut:?}"
    );
    assert_eq!(
        cut_pipeline(&pg, "not-the-password", &script, Some(&cg))?,
        direct_cut
    );
    let ev = d.wait_events("the refused start", |e| {
        of_type(e, "protocol_error")
            .iter()
            .any(|p| p.to_string().contains("startup packet"))
    })?;
    assert!(!of_type(&ev, "protocol_error").is_empty());
    drop(d);

    // `never`: a client without any password gets in, and its driver
    // reports (the one difference) that no password was used.
    let never = injected(", client_password: never");
    let d = Daemon::start(DaemonSpec::with_policy(&cg, &policy(&pg, &never), &[]))?;
    let mut expected = direct.clone();
    expected["used_password"] = json!(false);
    assert_eq!(probe(&python, &base, Some(&cg))?, expected, "{}", d.log());
    drop(d);

    // Passthrough: the server asks the client itself.
    let d = Daemon::start(DaemonSpec::with_policy(
        &cg,
        &policy(&pg, "{tls: disable}"),
        &[],
    ))?;
    assert_eq!(
        probe(&python, &with_password, Some(&cg))?,
        direct,
        "{}",
        d.log()
    );
    assert_eq!(probe(&python, &base, Some(&cg))?, direct_without);
    Ok(())
}
