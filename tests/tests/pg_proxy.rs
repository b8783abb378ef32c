//! The PostgreSQL proxy in front of a real PostgreSQL 15 server, driven by
//! real clients (psql, pgbench, tokio-postgres) and raw sockets for
//! protocol abuse. Each test starts its own server on 127.0.0.4.

use std::{process::Command, sync::Arc, time::Duration};

use futures_util::{SinkExt, StreamExt, TryStreamExt};
use interlock::{
    gate::{HoldOutcome, Record, Request, StatementClass as C},
    postgres::{PgCredentials, PgTarget, Secret},
};
use interlock_tests::{
    pg_gate::{BLOCK_RULE, HOLD_RULE, Proxy, TestGate},
    postgres::{DATABASE, PASSWORD, PgServer, ROLE},
};
use tokio_postgres::{AsyncMessage, NoTls, error::SqlState};

const IP: &str = "127.0.0.4";

fn injected(server: &PgServer) -> PgTarget {
    let mut t = PgTarget::new(server.addr);
    t.credentials = Some(PgCredentials {
        user: Some(ROLE.into()),
        password: Secret::new(PASSWORD),
    });
    t
}

async fn start(block: &[C], hold: &[C]) -> (PgServer, Arc<TestGate>, Proxy) {
    let server = tokio::task::spawn_blocking(|| PgServer::start(IP))
        .await
        .unwrap()
        .unwrap();
    let gate = TestGate::new(block, hold);
    let proxy = Proxy::start(injected(&server), gate.clone()).await;
    (server, gate, proxy)
}

/// Runs a client program to completion off the runtime.
async fn run(cmd: Command) -> std::process::Output {
    let mut cmd = cmd;
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn psql(proxy: &Proxy, user: &str, sql: &str) -> Command {
    let mut c = Command::new("psql");
    c.args([
        "-X",
        "-q",
        "-At",
        "-v",
        "VERBOSITY=verbose",
        "-v",
        "ON_ERROR_STOP=1",
    ])
    .args([
        "-h",
        &proxy.addr.ip().to_string(),
        "-p",
        &proxy.addr.port().to_string(),
    ])
    .args(["-U", user, "-d", DATABASE, "-c", sql])
    .env("PGPASSWORD", "wrong")
    .env("PGCONNECT_TIMEOUT", "30");
    c
}

/// Connects tokio-postgres through the proxy; notices and notifications
/// arrive on the returned channel.
async fn connect(
    conninfo: &str,
) -> Result<
    (
        tokio_postgres::Client,
        tokio::sync::mpsc::UnboundedReceiver<AsyncMessage>,
    ),
    tokio_postgres::Error,
> {
    let (client, mut conn) = tokio_postgres::connect(conninfo, NoTls).await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = stream.next().await {
            let _ = tx.send(m);
        }
    });
    Ok((client, rx))
}

fn code(e: &tokio_postgres::Error) -> Option<SqlState> {
    e.as_db_error().map(|d| d.code().clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_with_any_password_reaches_a_scram_server_and_blocks_are_enforced() {
    let (server, gate, proxy) = start(&[C::DropTable], &[]).await;

    // The client's password is wrong and the server requires SCRAM: the
    // proxy injects the real credentials (and the role, whatever user the client named).
    let out = run(psql(
        &proxy,
        "somebody",
        "create table t (id int); insert into t values (1), (2); select current_user, count(*) from t",
    ))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{ROLE}|2")
    );

    let out = run(psql(&proxy, ROLE, "drop table t")).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ERROR:  42501: interlock: statement blocked by rule \"test-block\""),
        "{err}"
    );
    assert!(err.contains("statement: drop table t"), "{err}");
    // the server never saw the DROP
    assert_eq!(server.query("select count(*) from t").unwrap(), "2");

    let stmts = gate.statements();
    assert!(
        stmts.contains(&("insert into t values (1), (2)".into(), Some(2), None)),
        "{stmts:?}"
    );
    assert!(
        stmts.contains(&("select current_user, count(*) from t".into(), Some(1), None)),
        "{stmts:?}"
    );
    assert!(!stmts.iter().any(|s| s.0.contains("drop")), "{stmts:?}");
    assert!(gate.requests().contains(&Request::Statement {
        text: "drop table t".into(),
        classes: vec![C::Ddl, C::DropTable]
    }));
    // the injected password never reaches a record
    assert!(!format!("{:?}", gate.records()).contains(PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_initialises_and_runs_through_the_proxy() {
    let (server, gate, proxy) = start(&[], &[]).await;
    let pgbench = |args: &[&str]| {
        let mut c = Command::new("pgbench");
        c.args([
            "-h",
            &proxy.addr.ip().to_string(),
            "-p",
            &proxy.addr.port().to_string(),
        ])
        .args(["-U", ROLE])
        .args(args)
        .arg(DATABASE)
        .env("PGPASSWORD", "wrong");
        c
    };
    // -i uses COPY FROM STDIN for the accounts table
    let out = run(pgbench(&["-i", "-s", "1"])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        server
            .query("select count(*) from pgbench_accounts")
            .unwrap(),
        "100000"
    );
    let out = run(pgbench(&["-S", "-T", "2", "-c", "2", "-M", "extended"])).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("number of failed transactions: 0"),
        "{stdout}"
    );
    let stmts = gate.statements();
    assert!(
        stmts
            .iter()
            .any(|(t, rows, _)| t.starts_with("copy pgbench_accounts") && *rows == Some(100000)),
        "copy not recorded"
    );
    assert!(
        stmts
            .iter()
            .filter(|(t, _, _)| t.contains("FROM pgbench_accounts WHERE aid = $1"))
            .count()
            > 10
    );
}
