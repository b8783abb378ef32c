//! Protocol features end to end through the proxy: a million-row result
//! (checksummed against a direct connection), LISTEN/NOTIFY between two
//! proxied sessions, ParameterStatus in the middle of a session, Flush in
//! the extended protocol, and clients whose client_encoding is not UTF-8.
//! Servers on 127.0.0.24.

use std::{os::unix::ffi::OsStrExt, process::Command};

use futures_util::StreamExt;
use interlock::gate::StatementClass as C;
use interlock_tests::{
    pg_client::{connect, run, start},
    pg_raw as raw,
    postgres::{DATABASE, PASSWORD, ROLE},
};
use sha2::{Digest, Sha256};
use tokio_postgres::AsyncMessage;

const IP: &str = "127.0.0.24";

/// Row count and SHA-256 of every row of `sql` (an int and a text column).
async fn digest(client: &tokio_postgres::Client, sql: &str) -> (u64, Vec<u8>) {
    let stream = client
        .query_raw(sql, std::iter::empty::<i32>())
        .await
        .unwrap();
    futures_util::pin_mut!(stream);
    let (mut n, mut h) = (0u64, Sha256::new());
    while let Some(row) = stream.next().await {
        let row = row.unwrap();
        h.update(row.get::<_, i32>(0).to_be_bytes());
        h.update(row.get::<_, &str>(1).as_bytes());
        n += 1;
    }
    (n, h.finalize().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_rows_arrive_intact() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let (server, gate, proxy) = start(IP, &[], &[]).await;
    let sql = "select g, md5(g::text) from generate_series(1, 1000000) g";
    let (proxied, _m) = connect(&proxy.conninfo(ROLE, "x")).await.unwrap();
    let direct_info = format!(
        "host={} port={} user={ROLE} password={PASSWORD} dbname={DATABASE}",
        server.addr.ip(),
        server.addr.port()
    );
    let (direct, _d) = connect(&direct_info).await.unwrap();
    let through = digest(&proxied, sql).await;
    assert_eq!(through.0, 1_000_000);
    assert_eq!(through, digest(&direct, sql).await);
    let stmts = gate.statements();
    assert!(
        stmts.contains(&(sql.to_string(), Some(1_000_000), None)),
        "{stmts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_parameter_status_and_flush() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let (_server, gate, proxy) = start(IP, &[], &[]).await;

    // LISTEN in one proxied session, NOTIFY from another
    let (listener, mut messages) = connect(&proxy.conninfo(ROLE, "x")).await.unwrap();
    let (notifier, _m) = connect(&proxy.conninfo(ROLE, "x")).await.unwrap();
    listener.batch_execute("listen jobs").await.unwrap();
    let pid: i32 = notifier
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    notifier
        .batch_execute("notify jobs, 'build 42 done'")
        .await
        .unwrap();
    let note = loop {
        match messages.recv().await.unwrap() {
            AsyncMessage::Notification(n) => break n,
            _ => continue,
        }
    };
    assert_eq!(
        (note.channel(), note.payload(), note.process_id()),
        ("jobs", "build 42 done", pid)
    );

    // ParameterStatus after SET, relayed as the server sent it
    let mut s = raw::connect(proxy.addr, 0).await;
    raw::send(&mut s, b'Q', b"set application_name = 'interlock-test'\0").await;
    let msgs = raw::until_ready(&mut s).await;
    let status = msgs.iter().find(|m| m.0 == b'S').expect("ParameterStatus");
    assert_eq!(status.1, b"application_name\0interlock-test\0");

    // Flush: answers up to it arrive before any Sync
    let mut parse = b"\0select $1::int + 1\0".to_vec();
    parse.extend_from_slice(&[0, 0]);
    raw::send(&mut s, b'P', &parse).await;
    raw::send(&mut s, b'D', b"S\0").await;
    raw::send(&mut s, b'H', b"").await;
    let tags: Vec<u8> = [
        raw::recv(&mut s).await,
        raw::recv(&mut s).await,
        raw::recv(&mut s).await,
    ]
    .into_iter()
    .map(|m| m.unwrap().0)
    .collect();
    assert_eq!(tags, [b'1', b't', b'T']);
    // Bind with one text parameter "41", Execute, Flush
    let mut bind = b"\0\0".to_vec();
    bind.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
    bind.extend_from_slice(b"41");
    bind.extend_from_slice(&[0, 0]);
    raw::send(&mut s, b'B', &bind).await;
    raw::send(&mut s, b'E', b"\0\0\0\0\0").await;
    raw::send(&mut s, b'H', b"").await;
    let got: Vec<(u8, Vec<u8>)> = [
        raw::recv(&mut s).await,
        raw::recv(&mut s).await,
        raw::recv(&mut s).await,
    ]
    .into_iter()
    .map(Option::unwrap)
    .collect();
    assert_eq!(got[0].0, b'2');
    assert_eq!(got[1], (b'D', b"\0\x01\0\0\0\x0242".to_vec()));
    assert_eq!(got[2].0, b'C');
    raw::send(&mut s, b'S', b"").await;
    assert_eq!(raw::recv(&mut s).await.unwrap().0, b'Z');
    let stmts = gate.statements();
    assert!(
        stmts.contains(&("select $1::int + 1".into(), Some(1), None)),
        "{stmts:?}"
    );
}

/// psql through the proxy with `PGCLIENTENCODING=encoding`, running each
/// of `sql` (raw bytes, in that encoding) as its own query.
fn psql_bytes(proxy: &interlock_tests::pg_gate::Proxy, encoding: &str, sql: &[&[u8]]) -> Command {
    let mut c = Command::new("psql");
    c.args(["-X", "-At", "-v", "ON_ERROR_STOP=1"])
        .args(["-h", &proxy.addr.ip().to_string()])
        .args(["-p", &proxy.addr.port().to_string()])
        .args(["-U", ROLE, "-d", DATABASE])
        .env("PGPASSWORD", "x")
        .env("PGCLIENTENCODING", encoding);
    for q in sql {
        c.arg("-c").arg(std::ffi::OsStr::from_bytes(q));
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latin1_clients_are_relayed_byte_for_byte_and_classified_in_utf8() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let (server, gate, proxy) = start(IP, &[C::DropTable, C::Unparseable], &[]).await;
    // LATIN1 'é' is one byte, 0xe9; the database is UTF-8
    let out = run(psql_bytes(
        &proxy,
        "LATIN1",
        &[b"select '\xe9', length('\xe9')".as_slice()],
    ))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"\xe9|1\n");
    let out = run(psql_bytes(
        &proxy,
        "LATIN1",
        &[b"create table caf\xe9 (n int)".as_slice()],
    ))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        server
            .query("select count(*) from pg_class where relname = 'café'")
            .unwrap(),
        "1"
    );
    // classification sees the same statement the server would run
    let out = run(psql_bytes(
        &proxy,
        "LATIN1",
        &[b"drop table caf\xe9".as_slice()],
    ))
    .await;
    assert!(!out.status.success());
    // interlock's own words reach the client in its encoding too
    assert!(
        out.stderr
            .windows(26)
            .any(|w| w == b"statement: drop table caf\xe9"),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("interlock: statement blocked by rule"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // a client switching encoding mid-session is followed
    let out = run(psql_bytes(
        &proxy,
        "UTF8",
        &[
            b"set client_encoding = 'WIN1252'".as_slice(),
            b"select '\x80'".as_slice(),
        ],
    ))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"SET\n\x80\n");
    // bytes that are not valid in the client's encoding are unparseable
    // (here blocked by policy) instead of ending the session
    let out = run(psql_bytes(&proxy, "UTF8", &[b"select '\xe9'".as_slice()])).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("interlock: statement blocked by rule"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stmts = gate.statements();
    for want in [
        "select 'é', length('é')",
        "create table café (n int)",
        "select '€'",
    ] {
        assert!(stmts.iter().any(|s| s.0 == want), "{want}: {stmts:?}");
    }
    assert!(
        gate.protocol_errors().is_empty(),
        "{:?}",
        gate.protocol_errors()
    );
}
