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
    pg_raw as raw,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_pipelining_transactions_and_copy() {
    let (server, gate, proxy) = start(&[C::DropTable], &[]).await;
    let (mut client, mut messages) = connect(&proxy.conninfo("anyone", "wrong")).await.unwrap();

    // pipelining: tokio-postgres sends all of these before reading any answer
    let stmt = client.prepare("select $1::int * 2").await.unwrap();
    let futures = (0..20).map(|i| {
        let (client, stmt) = (&client, &stmt);
        async move {
            client
                .query_one(stmt, &[&i])
                .await
                .map(|r| r.get::<_, i32>(0))
        }
    });
    let got = futures_util::future::try_join_all(futures).await.unwrap();
    assert_eq!(got, (0..20).map(|i| i * 2).collect::<Vec<_>>());

    client
        .batch_execute(
            "create table acct (id int primary key, bal int); insert into acct values (1, 100)",
        )
        .await
        .unwrap();

    // extended protocol: a block inside a transaction fails the server's transaction too
    let tx = client.build_transaction().start().await.unwrap();
    assert_eq!(
        tx.execute("update acct set bal = 0 where id = $1", &[&1i32])
            .await
            .unwrap(),
        1
    );
    let err = tx.execute("drop table acct", &[]).await.unwrap_err();
    assert_eq!(
        code(&err),
        Some(SqlState::INSUFFICIENT_PRIVILEGE),
        "{err:?}"
    );
    assert!(err.as_db_error().unwrap().message().contains(BLOCK_RULE));
    let err = tx.query_one("select 1", &[]).await.unwrap_err();
    assert_eq!(
        code(&err),
        Some(SqlState::IN_FAILED_SQL_TRANSACTION),
        "{err:?}"
    );
    tx.commit().await.unwrap(); // the server answers ROLLBACK
    assert_eq!(server.query("select bal from acct").unwrap(), "100");

    // simple protocol: the same inside BEGIN ... COMMIT
    client
        .batch_execute("begin; update acct set bal = 1 where id = 1")
        .await
        .unwrap();
    let err = client.batch_execute("drop table acct").await.unwrap_err();
    assert_eq!(code(&err), Some(SqlState::INSUFFICIENT_PRIVILEGE));
    let err = client.batch_execute("select 1").await.unwrap_err();
    assert_eq!(code(&err), Some(SqlState::IN_FAILED_SQL_TRANSACTION));
    client.batch_execute("commit").await.unwrap();
    assert_eq!(server.query("select bal from acct").unwrap(), "100");
    // outside a transaction a block leaves the session idle and usable
    assert!(client.batch_execute("drop table acct").await.is_err());
    assert_eq!(
        client
            .query_one("select count(*) from acct", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        1
    );

    // a blocked statement in the middle of a pipeline: the others run, in order
    let ok1 = client.query_one("select 1::int", &[]);
    let blocked = client.execute("drop table acct", &[]);
    let ok2 = client.query_one("select 2::int", &[]);
    let (ok1, blocked, ok2) = tokio::join!(ok1, blocked, ok2);
    assert_eq!(ok1.unwrap().get::<_, i32>(0), 1);
    assert_eq!(
        code(&blocked.unwrap_err()),
        Some(SqlState::INSUFFICIENT_PRIVILEGE)
    );
    assert_eq!(ok2.unwrap().get::<_, i32>(0), 2);

    // COPY in and out
    let sink = client.copy_in("copy acct from stdin").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"2\t200\n3\t300\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    let out: Vec<bytes::Bytes> = client
        .copy_out("copy (select * from acct order by id) to stdout")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(out.concat(), b"1\t100\n2\t200\n3\t300\n");

    // notices and notifications are relayed
    client
        .batch_execute("listen ch; do $$ begin raise notice 'hello'; end $$")
        .await
        .unwrap();
    server.query("notify ch, 'payload'").unwrap();
    let (mut notice, mut note) = (None, None);
    while notice.is_none() || note.is_none() {
        match messages.recv().await.unwrap() {
            AsyncMessage::Notice(n) => notice = Some(n.message().to_string()),
            AsyncMessage::Notification(n) => {
                note = Some((n.channel().to_string(), n.payload().to_string()))
            }
            _ => {}
        }
    }
    assert_eq!(notice.unwrap(), "hello");
    assert_eq!(note.unwrap(), ("ch".to_string(), "payload".to_string()));

    let stmts = gate.statements();
    assert!(
        stmts.contains(&(
            "update acct set bal = 0 where id = $1".into(),
            Some(1),
            None
        )),
        "{stmts:?}"
    );
    assert!(
        stmts.contains(&("copy acct from stdin".into(), Some(2), None)),
        "{stmts:?}"
    );
    assert!(
        stmts.contains(&(
            "copy (select * from acct order by id) to stdout".into(),
            Some(3),
            None
        )),
        "{stmts:?}"
    );
    assert!(
        stmts.contains(&("select 1".into(), None, Some("25P02".into()))),
        "{stmts:?}"
    );
    assert!(!stmts.iter().any(|s| s.0.contains("drop")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_statements_wait_for_approval_deny_or_cancel() {
    let (server, gate, proxy) = start(&[], &[C::DeleteWithoutWhere]).await;
    server
        .query(&format!(
            "create table t (id int); alter table t owner to {ROLE}"
        ))
        .unwrap();
    let (client, mut messages) = connect(&proxy.conninfo(ROLE, "wrong")).await.unwrap();
    let client = Arc::new(client);

    // approved: runs; the client was told how to approve
    client
        .batch_execute("insert into t values (1), (2)")
        .await
        .unwrap();
    let c = client.clone();
    let run_delete = tokio::spawn(async move { c.execute("delete from t", &[]).await });
    let (id, decide) = gate.next_hold().await;
    let notice = loop {
        let m = messages.recv().await.unwrap();
        if let AsyncMessage::Notice(n) = m {
            break n;
        }
    };
    assert!(notice.message().contains(&id), "{}", notice.message());
    assert!(
        notice
            .message()
            .contains(&format!("interlock approvals approve {id}"))
    );
    assert_eq!(
        server.query("select count(*) from t").unwrap(),
        "2",
        "held statement ran early"
    );
    decide
        .send(HoldOutcome::Approved {
            by: "alice".into(),
            reason: None,
        })
        .unwrap();
    assert_eq!(run_delete.await.unwrap().unwrap(), 2);
    assert_eq!(server.query("select count(*) from t").unwrap(), "0");

    // denied (simple protocol)
    client
        .batch_execute("insert into t values (3)")
        .await
        .unwrap();
    let c = client.clone();
    let run_delete = tokio::spawn(async move { c.batch_execute("delete from t").await });
    let (_, decide) = gate.next_hold().await;
    decide
        .send(HoldOutcome::Denied {
            by: "bob".into(),
            reason: Some("not now".into()),
        })
        .unwrap();
    let err = run_delete.await.unwrap().unwrap_err();
    assert_eq!(code(&err), Some(SqlState::INSUFFICIENT_PRIVILEGE));
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("denied by bob"),
        "{err:?}"
    );
    assert!(err.as_db_error().unwrap().message().contains(HOLD_RULE));

    // expired
    let c = client.clone();
    let run_delete = tokio::spawn(async move { c.execute("delete from t", &[]).await });
    let (_, decide) = gate.next_hold().await;
    decide.send(HoldOutcome::Expired).unwrap();
    let err = run_delete.await.unwrap().unwrap_err();
    assert!(
        err.as_db_error().unwrap().message().contains("expired"),
        "{err:?}"
    );

    // cancelled by the client while held: 57014, and the hold is withdrawn
    let c = client.clone();
    let run_delete = tokio::spawn(async move { c.execute("delete from t", &[]).await });
    let (_, _decide) = gate.next_hold().await;
    client.cancel_token().cancel_query(NoTls).await.unwrap();
    let err = run_delete.await.unwrap().unwrap_err();
    assert_eq!(code(&err), Some(SqlState::QUERY_CANCELED), "{err:?}");
    assert_eq!(gate.withdrawn(), 1);
    assert_eq!(server.query("select count(*) from t").unwrap(), "1");

    // a cancel reaches the server with its real key (interlock's key is mapped)
    let c = client.clone();
    let sleeper = tokio::spawn(async move { c.batch_execute("select pg_sleep(60)").await });
    while server
        .query("select count(*) from pg_stat_activity where query = 'select pg_sleep(60)'")
        .unwrap()
        != "1"
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.cancel_token().cancel_query(NoTls).await.unwrap();
    let err = sleeper.await.unwrap().unwrap_err();
    assert_eq!(code(&err), Some(SqlState::QUERY_CANCELED), "{err:?}");
    assert_eq!(
        client
            .query_one("select 1::int", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );

    // the client leaving during a hold withdraws it
    let mut raw = raw::connect(proxy.addr, 0).await;
    raw::send(&mut raw, b'Q', b"delete from t\0").await;
    let _hold = gate.next_hold().await;
    drop(raw);
    while gate.withdrawn() < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.query("select count(*) from t").unwrap(), "1");
    let stmts = gate.statements();
    assert_eq!(
        stmts.iter().filter(|s| s.0 == "delete from t").count(),
        1,
        "{stmts:?}"
    );
}
