//! The upstream leg over TLS (require, prefer, verify-full) against a real
//! PostgreSQL 15 server with a certificate from a test CA.

use interlock::postgres::{PgCredentials, PgTarget, Secret, UpstreamTls};
use interlock_tests::{
    pg_gate::{Proxy, TestGate},
    postgres::{PASSWORD, PgServer, ROLE, TLS_NAME},
};
use tokio_postgres::{NoTls, error::SqlState};

fn target(server: &PgServer, tls: UpstreamTls, name: &str) -> PgTarget {
    let mut t = PgTarget::new(server.addr);
    t.credentials = Some(PgCredentials {
        user: Some(ROLE.into()),
        password: Secret::new(PASSWORD),
    });
    t.tls = tls;
    t.server_name = name.into();
    t
}

/// Whether the proxy's upstream session is encrypted, per the server.
async fn upstream_ssl(proxy: &Proxy) -> Result<bool, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(&proxy.conninfo(ROLE, "any"), NoTls).await?;
    tokio::spawn(conn);
    let row = client
        .query_one(
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_modes() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let server = tokio::task::spawn_blocking(|| PgServer::start_tls("127.0.0.6"))
        .await
        .unwrap()
        .unwrap();
    let gate = TestGate::new(&[], &[]);
    let ca = server.ca_file();

    for (tls, name) in [
        (UpstreamTls::Require, "127.0.0.6"),
        (UpstreamTls::Prefer, "127.0.0.6"),
        (
            UpstreamTls::VerifyFull {
                ca_file: ca.clone(),
            },
            TLS_NAME,
        ),
    ] {
        let proxy = Proxy::start(target(&server, tls.clone(), name), gate.clone()).await;
        assert!(upstream_ssl(&proxy).await.unwrap(), "{tls:?}");
    }
    let proxy = Proxy::start(target(&server, UpstreamTls::Disable, "x"), gate.clone()).await;
    assert!(!upstream_ssl(&proxy).await.unwrap());

    // verify-full refuses a certificate for another name, and says why
    let wrong = UpstreamTls::VerifyFull { ca_file: ca };
    let proxy = Proxy::start(target(&server, wrong, "other.example"), gate.clone()).await;
    let err = upstream_ssl(&proxy).await.unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code(), &SqlState::CONNECTION_FAILURE);
    assert!(db.message().contains("certificate"), "{}", db.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_fails_against_a_server_without_tls() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let server = tokio::task::spawn_blocking(|| PgServer::start("127.0.0.6"))
        .await
        .unwrap()
        .unwrap();
    let gate = TestGate::new(&[], &[]);
    let proxy = Proxy::start(target(&server, UpstreamTls::Require, "x"), gate.clone()).await;
    let err = upstream_ssl(&proxy).await.unwrap_err();
    let msg = err.as_db_error().unwrap().message().to_string();
    assert!(msg.contains("does not support TLS"), "{msg}");
    // prefer falls back to plain TCP
    let proxy = Proxy::start(target(&server, UpstreamTls::Prefer, "x"), gate).await;
    assert!(!upstream_ssl(&proxy).await.unwrap());
}
