//! Upstream authentication methods other than SCRAM (md5, cleartext), and
//! either side going away: the server's backend terminated or killed in
//! the middle of a query, a client leaving with statements in flight or
//! inside a message, a client that never starts up, a client leaving a
//! held session, a client pipelining without bound behind a held
//! statement, a passthrough client that never answers the server. Servers
//! on 127.0.0.22.

use std::time::Duration;

use interlock::{
    gate::StatementClass as C,
    postgres::{PasswordMethods, PgCredentials, PgTarget, Secret},
};
use interlock_tests::{
    pg_client::{code, connect, injected, psql, run},
    pg_gate::{Proxy, TestGate},
    pg_raw as raw,
    postgres::{CLEARTEXT_ROLE, MD5_ROLE, OTHER_PASSWORD, PgServer, ROLE},
};
use tokio::{io::AsyncWriteExt, net::TcpStream};
use tokio_postgres::error::SqlState;

const IP: &str = "127.0.0.22";

async fn server() -> PgServer {
    tokio::task::spawn_blocking(|| PgServer::start(IP))
        .await
        .unwrap()
        .unwrap()
}

fn as_role(server: &PgServer, role: &str) -> PgTarget {
    let mut t = PgTarget::new(server.addr);
    t.credentials = Some(PgCredentials {
        user: Some(role.into()),
        password: Secret::new(OTHER_PASSWORD),
    });
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_and_cleartext_servers_get_the_injected_password_only_when_allowed() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let server = server().await;
    let gate = TestGate::new(&[], &[]);
    // By default (SCRAM only) such a server gets nothing and the client is told why.
    for (role, how) in [(MD5_ROLE, "as md5"), (CLEARTEXT_ROLE, "in cleartext")] {
        let proxy = Proxy::start(as_role(&server, role), gate.clone()).await;
        let out = run(psql(&proxy, "whoever", "select current_user")).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{role}: {stderr}");
        assert!(
            stderr.contains(&format!("the server asked for the password {how}"))
                && stderr.contains("`upstream.password_auth`"),
            "{role}: {stderr}"
        );
    }
    assert!(
        !server
            .log()
            .contains("password authentication failed for user"),
        "{}",
        server.log()
    );
    for role in [MD5_ROLE, CLEARTEXT_ROLE] {
        let mut target = as_role(&server, role);
        target.password_methods = PasswordMethods {
            scram: true,
            md5: true,
            cleartext: true,
        };
        let proxy = Proxy::start(target, gate.clone()).await;
        // the client's own password is wrong; the server asks for md5 / cleartext
        let out = run(psql(&proxy, "whoever", "select current_user")).await;
        assert!(
            out.status.success(),
            "{role}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), role);
        // passthrough relays the same requests to the client
        let pass = Proxy::start(PgTarget::new(server.addr), gate.clone()).await;
        let (client, _m) = connect(&pass.conninfo(role, OTHER_PASSWORD)).await.unwrap();
        let row = client
            .query_one("select current_user::text", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), role);
        let err = connect(&pass.conninfo(role, "wrong")).await.err().unwrap();
        assert_eq!(
            code(&err),
            Some(SqlState::INVALID_PASSWORD),
            "{role}: {err:?}"
        );
    }
    // the server did use those methods (its log names failed attempts by method)
    let log = server.log();
    assert!(
        log.contains(&format!(
            "password authentication failed for user \"{MD5_ROLE}\""
        )),
        "{log}"
    );
    assert!(
        log.contains("Connection matched pg_hba.conf line 2: \"host all md5app 127.0.0.0/8 md5\""),
        "{log}"
    );
    assert!(
        log.contains(
            "Connection matched pg_hba.conf line 3: \"host all pwapp 127.0.0.0/8 password\""
        ),
        "{log}"
    );
    assert!(!format!("{:?}", gate.records()).contains(OTHER_PASSWORD));
}

/// The pid of the backend running `query`, once it runs.
async fn backend_of(server: &PgServer, query: &str) -> i32 {
    loop {
        let pid = server
            .query(&format!(
                "select pid from pg_stat_activity where query = '{query}'"
            ))
            .unwrap();
        if let Ok(pid) = pid.parse() {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_going_away_mid_query_ends_only_that_session() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let server = server().await;
    let gate = TestGate::new(&[], &[]);
    let proxy = Proxy::start(injected(&server), gate.clone()).await;
    let (other, _m) = connect(&proxy.conninfo(ROLE, "x")).await.unwrap();

    // an administrator terminates the backend: the client gets the
    // server's own FATAL and then the close, as it would directly, and the
    // statement is recorded with the server's code
    let mut s = raw::connect(proxy.addr, 0).await;
    raw::send(&mut s, b'Q', b"select pg_sleep(60)\0").await;
    let pid = backend_of(&server, "select pg_sleep(60)").await;
    server
        .admin(&format!("select pg_terminate_backend({pid})"))
        .unwrap();
    let mut errors = vec![];
    while let Some((tag, body)) = raw::recv(&mut s).await {
        if tag == b'E' {
            errors.push((raw::field(&body, b'C'), raw::field(&body, b'M')));
        }
    }
    assert_eq!(
        errors,
        [(
            "57P01".to_string(),
            "terminating connection due to administrator command".to_string()
        )]
    );
    let ended = proxy.wait_ended(1).await;
    assert_eq!(
        ended,
        [Err("the server closed the connection unexpectedly".into())]
    );
    assert!(
        gate.statements()
            .contains(&("select pg_sleep(60)".into(), None, Some("57P01".into()))),
        "{:?}",
        gate.statements()
    );
    // the other session carries on
    let row = other.query_one("select 6 * 7", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);

    // the backend dies without a word (SIGKILL): the client sees the
    // connection close, as it would directly; the statement is recorded
    // as interrupted
    let mut s = raw::connect(proxy.addr, 0).await;
    raw::send(&mut s, b'Q', b"select pg_sleep(61)\0").await;
    let pid = backend_of(&server, "select pg_sleep(61)").await;
    // SAFETY: kill has no memory preconditions; pid is the server's backend.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    assert_eq!(raw::recv(&mut s).await, None);
    proxy.wait_ended(2).await;
    assert!(
        gate.statements()
            .contains(&("select pg_sleep(61)".into(), None, Some("08006".into()))),
        "{:?}",
        gate.statements()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_statement_or_mid_message_is_recorded() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let server = server().await;
    let gate = TestGate::new(&[], &[]);
    let proxy = Proxy::start(injected(&server), gate.clone()).await;

    // statements in flight (pipelined) when the client vanishes
    let mut s = raw::connect(proxy.addr, 0).await;
    raw::send(&mut s, b'Q', b"select pg_sleep(30)\0").await;
    raw::send(&mut s, b'Q', b"select 'after'\0").await;
    backend_of(&server, "select pg_sleep(30)").await;
    drop(s);
    assert_eq!(proxy.wait_ended(1).await, [Ok(())]);
    let stmts = gate.statements();
    assert_eq!(
        stmts,
        [
            ("select pg_sleep(30)".into(), None, Some("08006".into())),
            ("select 'after'".into(), None, Some("08006".into())),
        ]
    );

    // a message cut off by the client's EOF: a clear FATAL, recorded
    let mut s = raw::connect(proxy.addr, 0).await;
    s.write_all(b"Q\0\0\0\x20select").await.unwrap();
    s.shutdown().await.unwrap();
    let (tag, body) = raw::recv(&mut s).await.unwrap();
    assert_eq!(tag, b'E');
    assert_eq!(raw::field(&body, b'C'), "08P01");
    let msg = raw::field(&body, b'M');
    assert!(
        msg.contains(
            "connection closed in the middle of a message (message 'Q', 11 bytes received)"
        ),
        "{msg}"
    );
    proxy.wait_ended(2).await;
    let errors = gate.protocol_errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("Client: connection closed in the middle"),
        "{errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_time_out_and_held_sessions_notice_the_client_leaving() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let server = server().await;
    let gate = TestGate::new(&[], &[]);
    let mut target = injected(&server);
    target.startup_timeout = Duration::from_secs(1);
    let proxy = Proxy::start(target, gate.clone()).await;

    // connected, silent: closed without a word (it has not spoken the protocol)
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    assert!(raw::recv(&mut s).await.is_none());
    // a startup packet begun and not finished: told why
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&raw::startup(0)[..10]).await.unwrap();
    let (tag, body) = raw::recv(&mut s).await.unwrap();
    assert_eq!(tag, b'E');
    assert!(
        raw::field(&body, b'M').contains("no startup packet within 1 s"),
        "{body:?}"
    );
    // passthrough: a client that does not answer the server's SCRAM request
    let mut target = PgTarget::new(server.addr);
    target.startup_timeout = Duration::from_secs(1);
    let pass = Proxy::start(target, gate.clone()).await;
    let mut s = TcpStream::connect(pass.addr).await.unwrap();
    s.write_all(&raw::startup(0)).await.unwrap();
    assert_eq!(raw::recv(&mut s).await.unwrap().0, b'R');
    let (tag, body) = raw::recv(&mut s).await.unwrap();
    assert_eq!(tag, b'E');
    assert!(
        raw::field(&body, b'M')
            .contains("no answer to the server's authentication request within 1 s"),
        "{body:?}"
    );
    proxy.wait_ended(2).await;
    pass.wait_ended(1).await;
    assert_eq!(
        gate.protocol_errors().len(),
        3,
        "{:?}",
        gate.protocol_errors()
    );

    // a session held for approval: the client leaving withdraws the hold
    let holding = TestGate::holding_sessions();
    let proxy = Proxy::start(injected(&server), holding.clone()).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&raw::startup(0)).await.unwrap();
    let (id, _decide) = holding.next_hold().await;
    let (tag, body) = raw::recv(&mut s).await.unwrap();
    assert_eq!(tag, b'N');
    assert!(raw::field(&body, b'M').contains(&id));
    drop(s);
    assert_eq!(proxy.wait_ended(1).await, [Ok(())]);
    assert_eq!(holding.withdrawn(), 1);
    // a held session that is approved goes on
    let s = tokio::spawn(async move {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(&raw::startup(0)).await.unwrap();
        let msgs = raw::until_ready(&mut s).await;
        (s, msgs, proxy)
    });
    let (_, decide) = holding.next_hold().await;
    decide
        .send(interlock::gate::HoldOutcome::Approved {
            by: "alice".into(),
            reason: None,
        })
        .unwrap();
    let (_s, msgs, _proxy) = s.await.unwrap();
    assert_eq!(msgs.last().map(|m| m.0), Some(b'Z'), "{msgs:?}");
    assert_eq!(holding.withdrawn(), 1);
}

/// A client that piles messages behind a held statement is back-pressured
/// (interlock stops reading it once its bounded queue is full) instead of
/// being cut off; once the statement is decided, everything piled runs in
/// order, and other sessions were served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_piled_behind_a_held_statement_wait_and_then_run() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let server = server().await;
    let gate = TestGate::new(&[], &[C::DeleteWithoutWhere]);
    let proxy = Proxy::start(injected(&server), gate.clone()).await;
    let (other, _m) = connect(&proxy.conninfo(ROLE, "x")).await.unwrap();
    let mut s = raw::connect(proxy.addr, 0).await;
    raw::send(&mut s, b'Q', b"delete from pg_class\0").await;
    let (mut rd, mut wr) = s.into_split();
    let (_, decide) = gate.next_hold().await;
    // 200 000 Syncs (1 MB): far more than interlock queues while the
    // statement waits (256 KiB), so the writer is held back by TCP.
    const SYNCS: usize = 200_000;
    let writer = tokio::spawn(async move {
        let syncs: Vec<u8> = std::iter::repeat_n(*b"S\0\0\0\x04", SYNCS)
            .flatten()
            .collect();
        wr.write_all(&syncs).await.map(|()| wr)
    });
    // Other sessions are served while this one is held and piling up.
    assert_eq!(
        other
            .query_one("select 1::int", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    decide
        .send(interlock::gate::HoldOutcome::Denied {
            by: "alice".into(),
            reason: None,
        })
        .unwrap();
    // The held statement's refusal and ReadyForQuery, then one
    // ReadyForQuery per Sync: nothing was dropped, nothing cut off.
    let mut ready = 0usize;
    let mut errors = 0usize;
    while ready < SYNCS + 1 {
        match raw::recv(&mut rd).await {
            Some((b'Z', _)) => ready += 1,
            Some((b'E', _)) => errors += 1,
            Some(_) => {}
            None => panic!("closed after {ready} ReadyForQuery"),
        }
    }
    assert_eq!(errors, 1, "only the held statement was refused");
    let _wr = writer.await.unwrap().unwrap();
    assert!(gate.statements().iter().all(|s| !s.0.contains("delete")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_named_to_the_client() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    // nothing listens on port 1 of this address
    let gate = TestGate::new(&[], &[]);
    let proxy = Proxy::start(PgTarget::new(format!("{IP}:1").parse().unwrap()), gate).await;
    let err = connect(&proxy.conninfo(ROLE, "x")).await.err().unwrap();
    let db = err.as_db_error().expect("a FATAL from interlock");
    assert_eq!(db.code(), &SqlState::CONNECTION_FAILURE);
    assert!(
        db.message().starts_with(
            "interlock: cannot open the upstream session: cannot connect to the server"
        ),
        "{}",
        db.message()
    );
    let ended = proxy.wait_ended(1).await;
    assert!(
        ended[0]
            .as_ref()
            .is_err_and(|e| e.contains("Connection refused")),
        "{ended:?}"
    );
}
