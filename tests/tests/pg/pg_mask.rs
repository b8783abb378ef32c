//! Masking by value detectors: DataRow values (text and binary result
//! formats) and COPY OUT data are rewritten; records carry counts only.
//! Servers on 127.0.0.10.

use interlock::gate::{MaskRule, Record, Strategy};
use interlock_tests::{
    pg_client::{code, connect, injected, psql, run},
    pg_gate::{Proxy, TestGate, mask_rule},
    postgres::{PgServer, ROLE},
};
use tokio_postgres::error::SqlState;

fn rule(columns: &[&str], detectors: &[&str]) -> MaskRule {
    mask_rule("mask-pii", columns, detectors, Strategy::Redact)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detectors_mask_rows_and_copy_out() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let server = tokio::task::spawn_blocking(|| PgServer::start("127.0.0.10"))
        .await
        .unwrap()
        .unwrap();
    server
        .query(&format!(
            "create table users (id int, email text, card text, note text);
             insert into users values (1, 'bob@example.com', '4111 1111 1111 1111', 'order 1234'),
                                      (2, null, '4111 1111 1111 1112', 'call alice@example.org');
             alter table users owner to {ROLE}"
        ))
        .unwrap();
    let gate = TestGate::masking(vec![rule(&[], &["email", "card"])]);
    let proxy = Proxy::start(injected(&server), gate.clone()).await;

    // simple protocol, text format
    let out = run(psql(&proxy, ROLE, "select * from users order by id")).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1|****|****|order 1234\n2||4111 1111 1111 1112|call ****"
    );

    // extended protocol, binary format
    let (client, _m) = connect(&proxy.conninfo(ROLE, "x")).await.unwrap();
    let row = client
        .query_one("select email, note from users where id = $1", &[&1i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "****");
    assert_eq!(row.get::<_, String>(1), "order 1234");

    // COPY OUT
    let out = run(psql(
        &proxy,
        ROLE,
        "copy (select email from users order by id) to stdout",
    ))
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "****\n\\N\n");

    let records = gate.records();
    let masked: Vec<_> = records
        .iter()
        .filter(|r| matches!(r, Record::Masked { .. }))
        .collect();
    assert!(
        masked.contains(&&Record::Masked {
            rule: "mask-pii".into(),
            counts: vec![("detector:card".into(), 1), ("detector:email".into(), 2)],
        }),
        "{masked:?}"
    );
    let shown = format!("{records:?}");
    assert!(!shown.contains("bob@example.com") && !shown.contains("4111 1111 1111 1111"));
    // the server's data is untouched
    assert_eq!(
        server
            .query("select email from users where id = 1")
            .unwrap(),
        "bob@example.com"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn column_rules_follow_source_columns_through_aliases() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let server = tokio::task::spawn_blocking(|| PgServer::start("127.0.0.10"))
        .await
        .unwrap()
        .unwrap();
    server
        .query(&format!(
            "create table users (id int, email text, note text);
             insert into users values (1, 'bob@example.com', 'hello'), (2, 'eve@example.com', 'hi');
             alter table users owner to {ROLE}"
        ))
        .unwrap();
    let gate = TestGate::masking(vec![rule(&["public.users.email", "public.users.id"], &[])]);
    let proxy = Proxy::start(injected(&server), gate.clone()).await;

    // simple protocol: an alias does not evade the rule; non-text columns
    // become NULL, and so does a computed one (it could be made of a masked
    // column of `users`)
    let out = run(psql(
        &proxy,
        ROLE,
        "select email as contact, id, note, 1 + 1 as n from users order by note",
    ))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "****||hello|\n****||hi|"
    );

    // extended protocol, prepared statement described once, executed twice
    let (client, _m) = connect(&proxy.conninfo(ROLE, "x")).await.unwrap();
    let stmt = client
        .prepare("select u.email as x, u.note from users u where u.id = $1")
        .await
        .unwrap();
    for id in [1i32, 2] {
        let row = client.query_one(&stmt, &[&id]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "****");
    }
    let row = client.query_one(&stmt, &[&1i32]).await.unwrap();
    assert_eq!(row.get::<_, String>(1), "hello");

    // COPY TO of masked columns is refused rather than leaked
    let err = client
        .batch_execute("copy users to stdout")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(SqlState::INSUFFICIENT_PRIVILEGE));

    let counts: Vec<_> = gate
        .records()
        .into_iter()
        .filter_map(|r| match r {
            Record::Masked { counts, .. } => Some(counts),
            _ => None,
        })
        .collect();
    assert!(
        counts.contains(&vec![
            ("computed".into(), 2),
            ("public.users.email".into(), 2),
            ("public.users.id".into(), 2)
        ]),
        "{counts:?}"
    );
    assert!(
        counts.contains(&vec![("public.users.email".into(), 1)]),
        "{counts:?}"
    );
    assert!(!format!("{:?}", gate.records()).contains("example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masking_that_cannot_be_applied_refuses_the_statement() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let server = tokio::task::spawn_blocking(|| PgServer::start("127.0.0.10"))
        .await
        .unwrap()
        .unwrap();
    // A hash rule on a proxy without a masking key: never `****` in its place.
    let gate = TestGate::masking(vec![mask_rule("hashed", &[], &["email"], Strategy::Hash)]);
    let proxy = Proxy::start(injected(&server), gate).await;
    let (client, _m) = connect(&proxy.conninfo(ROLE, "x")).await.unwrap();
    let err = client.query_one("select 1", &[]).await.unwrap_err();
    assert_eq!(code(&err), Some(SqlState::INSUFFICIENT_PRIVILEGE));
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("no masking key"),
        "{err:?}"
    );
}
