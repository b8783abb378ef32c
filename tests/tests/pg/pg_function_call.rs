//! FunctionCall (the fast-path protocol libpq's large-object API uses) is
//! decided as a `dangerous_function` statement naming the function OID.

use std::process::Command;

use interlock::{
    gate::{Request, StatementClass as C},
    postgres::{PgCredentials, PgTarget, Secret},
};
use interlock_tests::{
    pg_gate::{Proxy, TestGate},
    postgres::{DATABASE, PASSWORD, PgServer, ROLE},
};

async fn lo_import(proxy: &Proxy, file: &str) -> std::process::Output {
    let mut c = Command::new("psql");
    c.args(["-X", "-v", "VERBOSITY=verbose"])
        .args([
            "-h",
            &proxy.addr.ip().to_string(),
            "-p",
            &proxy.addr.port().to_string(),
        ])
        .args([
            "-U",
            ROLE,
            "-d",
            DATABASE,
            "-c",
            &format!("\\lo_import {file}"),
        ])
        .env("PGPASSWORD", "wrong");
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_calls_are_decided_and_recorded() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let server = tokio::task::spawn_blocking(|| PgServer::start("127.0.0.7"))
        .await
        .unwrap()
        .unwrap();
    let mut target = PgTarget::new(server.addr);
    target.credentials = Some(PgCredentials {
        user: None,
        password: Secret::new(PASSWORD),
    });
    let file = server.dir.join("import.txt");
    std::fs::write(&file, "large object body").unwrap();
    let file = file.to_str().unwrap().to_string();

    // blocked: the import fails and nothing is stored
    let gate = TestGate::new(&[C::DangerousFunction], &[]);
    let proxy = Proxy::start(target.clone(), gate.clone()).await;
    let out = lo_import(&proxy, &file).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("42501") && err.contains("function call (oid"),
        "{err}"
    );
    assert_eq!(
        server
            .query("select count(*) from pg_largeobject_metadata")
            .unwrap(),
        "0"
    );
    assert!(gate.requests().iter().any(|r| matches!(r,
        Request::Statement { text, classes, .. } if text.starts_with("function call (oid") && classes == &vec![C::DangerousFunction])));

    // allowed: the calls run and are recorded
    let gate = TestGate::new(&[], &[]);
    let proxy = Proxy::start(target, gate.clone()).await;
    let out = lo_import(&proxy, &file).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        server
            .query("select count(*) from pg_largeobject_metadata")
            .unwrap(),
        "1"
    );
    let calls = gate
        .statements()
        .into_iter()
        .filter(|s| s.0.starts_with("function call"))
        .count();
    assert!(calls >= 3, "{:?}", gate.statements()); // lo_creat/lo_open/lowrite/lo_close
}
