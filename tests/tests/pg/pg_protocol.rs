//! Protocol edges: garbage from either side ends only that session with a
//! clear FATAL; protocol 3.2 negotiation; GSSENC/SSL refusal; passthrough
//! SCRAM; blocked sessions. Servers on 127.0.0.9.

use interlock::{gate::Request, postgres::PgTarget};
use interlock_tests::{
    pg_client::{code, connect, injected, start},
    pg_gate::{BLOCK_RULE, Proxy, TestGate},
    pg_raw as raw,
    postgres::{PASSWORD, ROLE},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::error::SqlState;

const IP: &str = "127.0.0.9";

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
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let (server, gate, _) = start(IP, &[], &[]).await;
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

    // A startup packet of an impossible length, or a Terminate sent
    // before any startup packet while the client waits: the server closes
    // without a word (it only logs), and so does interlock, at once; the
    // error is recorded.
    for first in [&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0][..], b"X\0\0\0\x04"] {
        for addr in [server.addr, proxy.addr] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(first).await.unwrap();
            assert_eq!(raw::recv(&mut s).await, None, "{addr} {first:?}");
        }
    }

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
    assert_eq!(errors.len(), 7, "{errors:?}");
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
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
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
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let (server, gate, proxy) = start(IP, &[], &[]).await;

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
