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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    assert!(gate.records().iter().any(|r| matches!(r,
        Record::Statement { text, classes, rows: Some(2), error: None, .. }
            if text == "insert into t values (1), (2)" && classes == &vec![C::Write])));
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

/// Expects a FATAL 08P01 naming `needle`, then EOF.
async fn expect_fatal(s: &mut tokio::net::TcpStream, needle: &str) {
    let (tag, body) = raw::recv(s)
        .await
        .expect("an ErrorResponse before the close");
    assert_eq!(tag, b'E', "{}", String::from_utf8_lossy(&body));
    assert_eq!(raw::field(&body, b'S'), "FATAL");
    assert_eq!(raw::field(&body, b'C'), "08P01");
    let msg = raw::field(&body, b'M');
    assert!(msg.contains(needle), "{msg}");
    assert!(raw::recv(s).await.is_none(), "the session should be closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_a_client_ends_only_that_session() {
    let (server, gate, _) = start(&[], &[]).await;
    let mut target = injected(&server);
    target.max_frame = 1024 * 1024;
    let proxy = Proxy::start(target, gate.clone()).await;
    let (client, _m) = connect(&proxy.conninfo(ROLE, "x")).await.unwrap();

    let mut s = raw::connect(proxy.addr, 0).await;
    s.write_all(b"Q\0\0\0\x02").await.unwrap();
    expect_fatal(&mut s, "declares length 2, below the minimum 4").await;

    let mut s = raw::connect(proxy.addr, 0).await;
    raw::send(&mut s, b'z', b"").await;
    expect_fatal(&mut s, "unknown message type 'z'").await;

    let mut s = raw::connect(proxy.addr, 0).await;
    s.write_all(b"Q\x00\x20\x00\x00").await.unwrap(); // 2 MiB declared, nothing sent
    expect_fatal(&mut s, "above the limit of 1048576 bytes").await;

    let mut s = raw::connect(proxy.addr, 0).await;
    raw::send(&mut s, b'Q', b"select 1").await; // no NUL terminator
    expect_fatal(&mut s, "string without terminator").await;

    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0])
        .await
        .unwrap();
    expect_fatal(&mut s, "startup packet declares length").await;

    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&[0, 0, 0, 8, 0, 2, 0, 0]).await.unwrap();
    expect_fatal(&mut s, "unsupported frontend protocol 2.0").await;

    // the other session carries on
    assert_eq!(
        client
            .query_one("select 41 + 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        42
    );
    let errors = gate.protocol_errors();
    assert_eq!(errors.len(), 6, "{errors:?}");
    assert!(
        errors.iter().all(|e| e.starts_with("Client: ")),
        "{errors:?}"
    );
}

/// A stand-in upstream that authenticates anyone, then answers the first
/// query with `reply` (real servers cannot be made to send garbage).
async fn broken_server(reply: Vec<u8>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.5:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                let len = s.read_u32().await.unwrap() as usize;
                let mut startup = vec![0; len - 4];
                s.read_exact(&mut startup).await.unwrap();
                s.write_all(b"R\0\0\0\x08\0\0\0\0K\0\0\0\x0c\0\0\0\x07\0\0\0\x09Z\0\0\0\x05I")
                    .await
                    .unwrap();
                let _ = raw::recv(&mut s).await;
                s.write_all(&reply).await.unwrap();
                let _ = raw::recv(&mut s).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_a_server_ends_the_session_with_a_clear_error() {
    let gate = TestGate::new(&[], &[]);
    for (reply, needle) in [
        (b"!\0\0\0\x04".to_vec(), "unknown message type '!'"),
        (b"C\0\0\0\x01".to_vec(), "below the minimum"),
        (b"D\x7f\0\0\0".to_vec(), "above the limit"),
        (b"Z\0\0\0\x05X".to_vec(), "malformed"),
    ] {
        let mut target = PgTarget::new(broken_server(reply).await);
        target.max_frame = 1024 * 1024;
        let proxy = Proxy::start(target, gate.clone()).await;
        let mut s = raw::connect(proxy.addr, 0).await;
        raw::send(&mut s, b'Q', b"select 1\0").await;
        let (tag, body) = raw::recv(&mut s).await.unwrap();
        assert_eq!(tag, b'E');
        let msg = raw::field(&body, b'M');
        assert!(
            msg.contains("protocol violation by the server") && msg.contains(needle),
            "{msg}"
        );
        assert!(raw::recv(&mut s).await.is_none());
    }
    let errors = gate.protocol_errors();
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(
        errors.iter().all(|e| e.starts_with("Server: ")),
        "{errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_variants_passthrough_auth_and_session_blocks() {
    let (server, gate, proxy) = start(&[], &[]).await;

    // protocol 3.2: PostgreSQL 15 negotiates down to 3.0, which the client
    // sees, and interlock's own key has the 3.0 size
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&raw::startup(2)).await.unwrap();
    let msgs = raw::until_ready(&mut s).await;
    let tags: Vec<u8> = msgs.iter().map(|m| m.0).collect();
    assert_eq!(tags.first(), Some(&b'v'), "{tags:?}");
    assert_eq!(&msgs[0].1[..4], &[0, 3, 0, 0]); // newest version: 3.0
    assert_eq!(tags.get(1), Some(&b'R'));
    let key = msgs.iter().find(|m| m.0 == b'K').expect("BackendKeyData");
    assert_eq!(key.1.len(), 8);
    raw::send(&mut s, b'Q', b"select 1\0").await;
    assert!(raw::until_ready(&mut s).await.iter().any(|m| m.0 == b'D'));

    // GSSENCRequest and SSLRequest are refused with 'N', then startup proceeds
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30])
        .await
        .unwrap();
    assert_eq!(s.read_u8().await.unwrap(), b'N');
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    assert_eq!(s.read_u8().await.unwrap(), b'N');
    s.write_all(&raw::startup(0)).await.unwrap();
    assert_eq!(raw::until_ready(&mut s).await.last().unwrap().0, b'Z');

    // passthrough: no credentials configured, the client's own SCRAM exchange is relayed
    let pass = Proxy::start(PgTarget::new(server.addr), gate.clone()).await;
    let (client, _m) = connect(&pass.conninfo(ROLE, PASSWORD)).await.unwrap();
    let row = client
        .query_one("select current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), ROLE);
    let err = connect(&pass.conninfo(ROLE, "wrong")).await.err().unwrap();
    assert_eq!(code(&err), Some(SqlState::INVALID_PASSWORD), "{err:?}");

    // a blocked session gets a FATAL naming the rule
    let blocker = TestGate::blocking_sessions();
    let blocked = Proxy::start(injected(&server), blocker.clone()).await;
    let err = connect(&blocked.conninfo(ROLE, "x")).await.err().unwrap();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code(), &SqlState::INSUFFICIENT_PRIVILEGE);
    assert_eq!(db.severity(), "FATAL");
    assert!(db.message().contains(BLOCK_RULE), "{}", db.message());
    assert_eq!(blocker.requests(), vec![Request::Session]);
    drop(gate);
}
