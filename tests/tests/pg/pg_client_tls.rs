//! The client leg over TLS, in process: psql with `sslmode=verify-full`
//! against interlock's CA (by address and by host name), PostgreSQL 17
//! direct TLS with and without ALPN, plaintext smuggled behind an
//! SSLRequest, repeated requests, client TLS off, a certificate that
//! cannot be minted, and passthrough targets with a TLS upstream.
//! Servers on 127.0.0.20.

use std::{process::Command, sync::Arc};

use interlock::{
    gate::ClientLeg,
    postgres::{ClientTls, PgCa, PgTarget, UpstreamTls},
};
use interlock_tests::{
    pg_client::{injected, run},
    pg_gate::{Proxy, TestGate},
    pg_raw as raw,
    postgres::{DATABASE, PASSWORD, PgServer, ROLE, TLS_NAME},
    unique,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const IP: &str = "127.0.0.20";
/// The host name the tests' certificates carry besides the proxy's address.
const HOST: &str = "db.pgtls.test";

struct Ca {
    ca: Arc<PgCa>,
    dir: std::path::PathBuf,
}

impl Ca {
    fn new() -> Ca {
        let dir = std::env::temp_dir().join(unique("interlock-pgca"));
        let ca = Arc::new(PgCa::load_or_create(&dir).unwrap());
        std::fs::write(dir.join("root.pem"), ca.cert_pem()).unwrap();
        Ca { ca, dir }
    }

    fn root(&self) -> String {
        self.dir.join("root.pem").display().to_string()
    }

    fn tls(&self, names: &[&str]) -> ClientTls {
        ClientTls::new(
            self.ca.clone(),
            names.iter().map(|n| n.to_string()).collect(),
        )
    }
}

impl Drop for Ca {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn server(tls: bool) -> PgServer {
    tokio::task::spawn_blocking(move || {
        if tls {
            PgServer::start_tls(IP)
        } else {
            PgServer::start(IP)
        }
    })
    .await
    .unwrap()
    .unwrap()
}

/// A server, a CA, a gate and a proxy presenting a certificate for 127.0.0.1.
async fn tls_proxy() -> (PgServer, Ca, Arc<TestGate>, Proxy) {
    let server = server(false).await;
    let ca = Ca::new();
    let gate = TestGate::new(&[], &[]);
    let mut target = injected(&server);
    target.client_tls = Some(ca.tls(&["127.0.0.1"]));
    let proxy = Proxy::start(target, gate.clone()).await;
    (server, ca, gate, proxy)
}

/// psql through `proxy` dialling `host` (at the proxy's address), with
/// `sslmode` and `extra` libpq settings, as the test role with `password`.
fn psql(
    proxy: &Proxy,
    host: &str,
    password: &str,
    sslmode: &str,
    extra: &[(&str, &str)],
) -> Command {
    let mut c = Command::new("psql");
    c.args(["-X", "-At", "-v", "ON_ERROR_STOP=1"])
        .args(["-h", host, "-p", &proxy.addr.port().to_string()])
        .args(["-U", ROLE, "-d", DATABASE, "-c", "select 40 + 2"])
        .env("PGHOSTADDR", proxy.addr.ip().to_string())
        .env("PGPASSWORD", password)
        .env("PGSSLMODE", sslmode)
        .env("PGCONNECT_TIMEOUT", "30");
    for (k, v) in extra {
        c.env(k, v);
    }
    c
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_verifies_the_minted_certificate_by_address_and_host_name() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let server = server(false).await;
    let ca = Ca::new();
    let gate = TestGate::new(&[], &[]);
    let mut target = injected(&server);
    target.client_tls = Some(ca.tls(&[HOST, "127.0.0.1"]));
    let proxy = Proxy::start(target, gate.clone()).await;
    let root = ca.root();
    let verify = [("PGSSLROOTCERT", root.as_str())];

    // by the dialled address, then by the host name (hostaddr keeps the
    // connection on loopback; libpq checks the certificate for `host`)
    let out = run(psql(&proxy, "127.0.0.1", "any", "verify-full", &verify)).await;
    assert_eq!(ok(&out), "42");
    let out = run(psql(&proxy, HOST, "any", "verify-full", &verify)).await;
    assert_eq!(ok(&out), "42");
    // a name the certificate does not carry is refused by the client
    let out = run(psql(
        &proxy,
        "other.pgtls.test",
        "any",
        "verify-full",
        &verify,
    ))
    .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does not match host name"),
        "{}",
        stderr(&out)
    );
    // without the CA, verify-ca fails: the certificate is interlock's own
    let out = run(psql(
        &proxy,
        "127.0.0.1",
        "any",
        "verify-ca",
        &[("PGSSLROOTCERT", "/dev/null")],
    ))
    .await;
    assert!(!out.status.success(), "{}", stderr(&out));
    // sslmode=disable stays plain
    let out = run(psql(&proxy, "127.0.0.1", "any", "disable", &[])).await;
    assert_eq!(ok(&out), "42");

    proxy.wait_ended(5).await;
    let legs: Vec<ClientLeg> = gate.client_legs().into_iter().map(|l| l.0).collect();
    // libpq checks the host name after the handshake (so that leg is TLS
    // too) and the chain during it (that session never starts)
    assert_eq!(
        legs,
        [
            ClientLeg::Tls,
            ClientLeg::Tls,
            ClientLeg::Tls,
            ClientLeg::Plain
        ],
        "{legs:?}"
    );
    assert!(gate.client_legs().iter().all(|l| l.1.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_needs_the_postgresql_alpn() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let (_server, ca, gate, proxy) = tls_proxy().await;
    let pem = ca.ca.cert_pem().to_string();

    // PostgreSQL 17 direct TLS: TLS first, ALPN "postgresql", then startup
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let mut s = raw::tls(tcp, &pem, "127.0.0.1", &[b"postgresql"])
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));
    let msgs = raw::start_up(&mut s).await;
    assert_eq!(msgs.last().map(|m| m.0), Some(b'Z'), "{msgs:?}");
    raw::send(&mut s, b'Q', b"select current_user\0").await;
    let rows = raw::until_ready(&mut s).await;
    let row = rows.iter().find(|m| m.0 == b'D').expect("a row");
    assert!(row.1.ends_with(ROLE.as_bytes()), "{row:?}");
    drop(s);

    // no ALPN at all: the handshake completes, then interlock hangs up
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let mut s = raw::tls(tcp, &pem, "127.0.0.1", &[]).await.unwrap();
    let _ = s.write_all(&raw::startup(0)).await;
    let _ = s.flush().await;
    let mut buf = Vec::new();
    let n = s.read_to_end(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0, "nothing is answered without the ALPN");

    // another protocol's ALPN: the handshake itself fails
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let Err(err) = raw::tls(tcp, &pem, "127.0.0.1", &[b"http/1.1"]).await else {
        panic!("a handshake without a common ALPN");
    };
    assert!(err.to_string().contains("NoApplicationProtocol"), "{err}");

    let ended = proxy.wait_ended(3).await;
    assert!(
        ended.iter().any(|e| e
            .as_ref()
            .is_err_and(|e| e.contains("without ALPN \"postgresql\""))),
        "{ended:?}"
    );
    assert_eq!(gate.client_legs(), [(ClientLeg::DirectTls, None)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_behind_an_ssl_request_and_repeated_requests_are_refused() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let (server, ca, gate, proxy) = tls_proxy().await;
    let pem = ca.ca.cert_pem().to_string();
    let expect_fatal = |msg: (u8, Vec<u8>), needle: &str| {
        assert_eq!(msg.0, b'E', "{msg:?}");
        assert_eq!(raw::field(&msg.1, b'C'), "08P01");
        let m = raw::field(&msg.1, b'M');
        assert!(m.contains(needle), "{m}");
    };

    // CVE-2021-23214: a startup packet sent with the SSLRequest, before
    // its answer, could be injected by a man in the middle
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let mut both = raw::SSL_REQUEST.to_vec();
    both.extend(raw::startup(0));
    s.write_all(&both).await.unwrap();
    expect_fatal(
        raw::recv(&mut s).await.unwrap(),
        "unencrypted data after SSLRequest",
    );
    assert!(raw::recv(&mut s).await.is_none());

    // an SSLRequest inside the TLS session
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&raw::SSL_REQUEST).await.unwrap();
    assert_eq!(s.read_u8().await.unwrap(), b'S');
    let mut s = raw::tls(s, &pem, "127.0.0.1", &[]).await.unwrap();
    s.write_all(&raw::SSL_REQUEST).await.unwrap();
    s.flush().await.unwrap();
    expect_fatal(
        raw::recv(&mut s).await.unwrap(),
        "an encryption request after negotiation",
    );

    // with client TLS off: 'N', then a second SSLRequest is refused
    let plain = Proxy::start(injected(&server), gate.clone()).await;
    let mut s = TcpStream::connect(plain.addr).await.unwrap();
    s.write_all(&raw::SSL_REQUEST).await.unwrap();
    assert_eq!(s.read_u8().await.unwrap(), b'N');
    s.write_all(&raw::SSL_REQUEST).await.unwrap();
    expect_fatal(
        raw::recv(&mut s).await.unwrap(),
        "repeated encryption requests",
    );

    proxy.wait_ended(2).await;
    plain.wait_ended(1).await;
    let errors = gate.protocol_errors();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors.iter().all(|e| e.starts_with("Client: ")),
        "{errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_when_client_tls_is_off_or_cannot_be_minted() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let server = server(false).await;
    let gate = TestGate::new(&[], &[]);
    let proxy = Proxy::start(injected(&server), gate.clone()).await;

    // client TLS off: 'N'; sslmode=require fails in the client, prefer falls back
    let out = run(psql(&proxy, "127.0.0.1", "any", "require", &[])).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("server does not support SSL, but SSL was required"),
        "{}",
        stderr(&out)
    );
    let out = run(psql(&proxy, "127.0.0.1", "any", "prefer", &[])).await;
    assert_eq!(ok(&out), "42");
    // a direct TLS client gets no handshake
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let ca = Ca::new();
    assert!(
        raw::tls(tcp, ca.ca.cert_pem(), "127.0.0.1", &[b"postgresql"])
            .await
            .is_err()
    );
    let ended = proxy.wait_ended(3).await;
    assert!(
        ended.iter().any(|e| e
            .as_ref()
            .is_err_and(|e| e.contains("direct TLS, but client TLS is off"))),
        "{ended:?}"
    );
    assert_eq!(gate.client_legs(), [(ClientLeg::Plain, None)]);

    // a certificate that cannot be minted: clients that ask get 'N' and
    // the reason is recorded; the others never notice
    let gate = TestGate::new(&[], &[]);
    let mut target = injected(&server);
    target.client_tls = Some(ca.tls(&["bäd.example"]));
    let broken = Proxy::start(target, gate.clone()).await;
    let out = run(psql(&broken, "127.0.0.1", "any", "disable", &[])).await;
    assert_eq!(ok(&out), "42");
    let out = run(psql(&broken, "127.0.0.1", "any", "prefer", &[])).await;
    assert_eq!(ok(&out), "42");
    broken.wait_ended(2).await;
    let legs = gate.client_legs();
    assert_eq!(legs.len(), 2, "{legs:?}");
    assert_eq!(legs[0], (ClientLeg::Plain, None));
    assert_eq!(legs[1].0, ClientLeg::Plain);
    let why = legs[1].1.clone().unwrap_or_default();
    assert!(!why.is_empty(), "{legs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_to_a_tls_upstream_keeps_the_client_leg_plain() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let server = server(true).await;
    let ca = Ca::new();
    let gate = TestGate::new(&[], &[]);
    let mut target = PgTarget::new(server.addr);
    target.tls = UpstreamTls::Require;
    target.client_tls = Some(ca.tls(&["127.0.0.1"]));
    let proxy = Proxy::start(target.clone(), gate.clone()).await;

    // libpq's default (prefer, channel_binding=prefer) works: its SCRAM
    // exchange with the server is relayed over a plain client leg
    let out = run(psql(&proxy, "127.0.0.1", PASSWORD, "prefer", &[])).await;
    assert_eq!(ok(&out), "42");
    // channel binding cannot cross interlock: requiring it fails in the client
    let out = run(psql(
        &proxy,
        "127.0.0.1",
        PASSWORD,
        "prefer",
        &[("PGCHANNELBINDING", "require")],
    ))
    .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("channel binding"), "{}", stderr(&out));
    // a client insisting on TLS is told 'N'
    let out = run(psql(&proxy, "127.0.0.1", PASSWORD, "require", &[])).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("server does not support SSL"),
        "{}",
        stderr(&out)
    );
    proxy.wait_ended(3).await;
    let legs = gate.client_legs();
    assert!(!legs.is_empty());
    assert!(
        legs.iter().all(|(leg, why)| *leg == ClientLeg::Plain
            && why.as_deref().is_some_and(|w| w.contains("passthrough"))),
        "{legs:?}"
    );

    // the server offers SCRAM-SHA-256-PLUS over TLS; the client never sees it
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&raw::startup(0)).await.unwrap();
    let (tag, body) = raw::recv(&mut s).await.unwrap();
    assert_eq!(tag, b'R');
    assert_eq!(&body[..4], &[0, 0, 0, 10], "AuthenticationSASL");
    let mechanisms: Vec<String> = body[4..]
        .split(|b| *b == 0)
        .filter(|m| !m.is_empty())
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    assert_eq!(mechanisms, ["SCRAM-SHA-256"]);
    // ...which the server does offer, over TLS
    let pem = std::fs::read_to_string(server.ca_file()).unwrap();
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(&raw::SSL_REQUEST).await.unwrap();
    assert_eq!(s.read_u8().await.unwrap(), b'S');
    let mut s = raw::tls(s, &pem, TLS_NAME, &[]).await.unwrap();
    s.write_all(&raw::startup(0)).await.unwrap();
    s.flush().await.unwrap();
    let (tag, body) = raw::recv(&mut s).await.unwrap();
    assert_eq!(tag, b'R');
    assert!(
        String::from_utf8_lossy(&body).contains("SCRAM-SHA-256-PLUS"),
        "{body:?}"
    );
}
