//! Client-side helpers for the PostgreSQL proxy tests: targets, a proxy in
//! front of a fresh server, psql and tokio-postgres through it.

use std::{process::Command, sync::Arc};

use futures_util::StreamExt;
use interlock::{
    gate::StatementClass as C,
    postgres::{PgCredentials, PgTarget, Secret},
};
use tokio_postgres::{AsyncMessage, NoTls, error::SqlState};

use crate::{
    pg_gate::{Proxy, TestGate},
    postgres::{DATABASE, PASSWORD, PgServer, ROLE},
};

/// A target for `server` with the test role's credentials injected.
pub fn injected(server: &PgServer) -> PgTarget {
    let mut t = PgTarget::new(server.addr);
    t.credentials = Some(PgCredentials {
        user: Some(ROLE.into()),
        password: Secret::new(PASSWORD),
    });
    t
}

/// A server on `ip`, a gate blocking `block` and holding `hold`, and a proxy.
pub async fn start(ip: &'static str, block: &[C], hold: &[C]) -> (PgServer, Arc<TestGate>, Proxy) {
    let server = tokio::task::spawn_blocking(move || PgServer::start(ip))
        .await
        .unwrap()
        .unwrap();
    let gate = TestGate::new(block, hold);
    let proxy = Proxy::start(injected(&server), gate.clone()).await;
    (server, gate, proxy)
}

/// Runs a client program to completion off the runtime.
pub async fn run(cmd: Command) -> std::process::Output {
    let mut cmd = cmd;
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// psql through `proxy` as `user` with a wrong password, running `sql`.
pub fn psql(proxy: &Proxy, user: &str, sql: &str) -> Command {
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
pub async fn connect(
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

/// The SQLSTATE of a server error.
pub fn code(e: &tokio_postgres::Error) -> Option<SqlState> {
    e.as_db_error().map(|d| d.code().clone())
}
