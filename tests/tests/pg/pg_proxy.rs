//! The PostgreSQL proxy in front of a real PostgreSQL 15 server, driven by
//! real clients: psql, pgbench and tokio-postgres (extended protocol,
//! pipelining, transactions, COPY, notifications). Servers on 127.0.0.4.

use std::process::Command;

use futures_util::{SinkExt, TryStreamExt};
use interlock::gate::{Record, Request, StatementClass as C};
use interlock_tests::{
    pg_client::{code, connect, psql, run, start},
    pg_gate::BLOCK_RULE,
    postgres::{DATABASE, PASSWORD, ROLE},
};
use tokio_postgres::{AsyncMessage, error::SqlState};

const IP: &str = "127.0.0.4";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_with_any_password_reaches_a_scram_server_and_blocks_are_enforced() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let (server, gate, proxy) = start(IP, &[C::DropTable], &[]).await;

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
        classes: vec![C::Ddl, C::DropTable],
        opaque: None,
    }));
    assert!(gate.records().iter().any(|r| matches!(r,
        Record::Statement { text, classes, rows: Some(2), error: None, .. }
            if text == "insert into t values (1), (2)" && classes == &vec![C::Write])));
    // the injected password never reaches a record
    assert!(!format!("{:?}", gate.records()).contains(PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_initialises_and_runs_through_the_proxy() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let (server, gate, proxy) = start(IP, &[], &[]).await;
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
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let (server, gate, proxy) = start(IP, &[C::DropTable], &[]).await;
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
async fn large_pipelines_in_both_directions_do_not_stall() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let (_server, _gate, proxy) = start(IP, &[], &[]).await;
    let (client, _m) = connect(&proxy.conninfo(ROLE, "x")).await.unwrap();
    let stmt = client.prepare("select $1::text").await.unwrap();
    let big = "x".repeat(1 << 20);
    // 64 MiB each way, all sent before any result is read
    let futures = (0..64).map(|_| {
        let (client, stmt, big) = (&client, &stmt, &big);
        async move { client.query_one(stmt, &[big]).await }
    });
    let rows = futures_util::future::try_join_all(futures).await.unwrap();
    assert!(rows.iter().all(|r| r.get::<_, &str>(0).len() == 1 << 20));
}
