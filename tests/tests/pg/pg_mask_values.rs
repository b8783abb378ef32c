//! Masked values wherever they travel: binary results (tokio-postgres),
//! text of other encodings, error and notice texts, notifications,
//! function-call results, recorded Bind parameters; strategies (partial,
//! hash); binary COPY refused. Servers on 127.0.0.31.

use std::sync::Arc;

use interlock::{
    gate::{MaskRule, Strategy},
    postgres::MaskKey,
};
use interlock_tests::{
    pg_client::{code, connect, injected, psql, run},
    pg_gate::{Proxy, TestGate, mask_rule},
    pg_raw::{connect as raw, recv, send, until_ready},
    postgres::{PgServer, ROLE},
};
use tokio_postgres::{
    AsyncMessage,
    error::SqlState,
    types::{FromSql, Type},
};

const EMAIL: &str = "bob@example.com";

async fn server() -> PgServer {
    let server = tokio::task::spawn_blocking(|| PgServer::start("127.0.0.31"))
        .await
        .unwrap()
        .unwrap();
    server
        .query(&format!(
            "create table users (id int, email text, note text);
             insert into users values (1, '{EMAIL}', 'josé@example.com'), (2, '{EMAIL}', 'café');
             create table uniq (email text unique);
             insert into uniq values ('{EMAIL}');
             create table pii (email text, name varchar(40), code char(20), card8 int8,
                               small int8, doc jsonb, tags text[], blob bytea,
                               at timestamptz, uid uuid);
             insert into pii values ('{EMAIL}', 'x {EMAIL}', '{EMAIL}', 4111111111111111,
                                     42, '{{\"m\": \"{EMAIL}\"}}', '{{{EMAIL}}}', '{EMAIL}',
                                     now(), 'abababab-abab-abab-abab-abababababab');
             create table cards (id int, number text);
             insert into cards values (1, '4111111111111111');
             alter table users owner to {ROLE}; alter table uniq owner to {ROLE};
             alter table pii owner to {ROLE}; alter table cards owner to {ROLE}"
        ))
        .unwrap();
    server
}

/// Any value's raw bytes, whatever its type.
#[derive(Debug, PartialEq)]
struct Raw(Option<Vec<u8>>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw.to_vec())))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

fn detectors() -> MaskRule {
    mask_rule("detect", &[], &["email", "card"], Strategy::Redact)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_results_are_masked_by_type() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let server = server().await;
    let gate = TestGate::masking(vec![detectors()]);
    let proxy = Proxy::start(injected(&server), gate.clone()).await;
    let (client, _m) = connect(&proxy.conninfo(ROLE, "x")).await.unwrap();
    // tokio-postgres asks for every result column in binary
    let row = client.query_one("select * from pii", &[]).await.unwrap();
    let raw = |i: usize| row.get::<_, Raw>(i).0;
    assert_eq!(row.get::<_, String>("email"), "****");
    assert_eq!(row.get::<_, String>("name"), "x ****");
    // char(20): the padding stays
    assert_eq!(row.get::<_, String>("code").trim_end(), "****");
    // a card number in a bigint: found in its decoded form, NULL
    assert_eq!(row.get::<_, Option<i64>>("card8"), None);
    assert_eq!(row.get::<_, Option<i64>>("small"), Some(42));
    // jsonb: version byte kept, the text inside masked
    assert_eq!(raw(5), Some(b"\x01{\"m\": \"****\"}".to_vec()));
    // an array and a bytea cannot be scanned in binary: NULL
    assert_eq!(row.get::<_, Option<Vec<String>>>("tags"), None);
    assert_eq!(row.get::<_, Option<Vec<u8>>>("blob"), None);
    // fixed-width values pass
    assert!(raw(8).is_some());
    assert_eq!(raw(9), Some(vec![0xab; 16]));
    // the same table in text format (psql)
    let out = run(psql(
        &proxy,
        ROLE,
        "select card8, small, tags, blob from pii",
    ))
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "|42|{****}|");

    // column rules in binary: text gets the strategy, other types NULL
    let gate = TestGate::masking(vec![mask_rule(
        "cols",
        &["public.pii.email", "public.pii.small"],
        &[],
        Strategy::Redact,
    )]);
    let proxy = Proxy::start(injected(&server), gate).await;
    let (client, _m) = connect(&proxy.conninfo(ROLE, "x")).await.unwrap();
    let row = client
        .query_one(
            "select pii.email, small, note from pii, users where users.id = 2",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "****");
    assert_eq!(row.get::<_, Option<i64>>(1), None);
    assert_eq!(row.get::<_, String>(2), "café");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_encodings_are_scanned_and_binary_copy_refused() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let server = server().await;
    let gate = TestGate::masking(vec![detectors()]);
    let proxy = Proxy::start(injected(&server), gate.clone()).await;
    // LATIN1: `josé@example.com` arrives as bytes that are not UTF-8
    let mut cmd = psql(&proxy, ROLE, "select note from users order by id");
    cmd.env("PGCLIENTENCODING", "LATIN1");
    let out = run(cmd).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"****\ncaf\xe9\n");

    let out = run(psql(
        &proxy,
        ROLE,
        "copy (select email from users) to stdout (format binary)",
    ))
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("42501") && err.contains("binary COPY") && err.contains("\"detect\""),
        "{err}"
    );
    // text COPY is masked
    let out = run(psql(
        &proxy,
        ROLE,
        "copy (select note from users order by id) to stdout (format csv)",
    ))
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "****\ncafé\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_notices_notifications_and_function_results_are_masked() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let server = server().await;
    let gate = TestGate::masking(vec![
        mask_rule("cols", &["public.users.email"], &[], Strategy::Redact),
        mask_rule("detect", &[], &["email"], Strategy::Redact),
    ]);
    let proxy = Proxy::start(injected(&server), gate.clone()).await;
    let (client, mut messages) = connect(&proxy.conninfo(ROLE, "x")).await.unwrap();

    // The server quotes the value in its error.
    let err = client
        .query_one("select email::int from users limit 1", &[])
        .await
        .unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code(), &SqlState::INVALID_TEXT_REPRESENTATION);
    assert_eq!(
        db.message(),
        "invalid input syntax for type integer: \"****\""
    );
    // A copy of the masked column into a table is refused: masking could
    // not follow the value there.
    let err = client
        .batch_execute("insert into uniq select email from users where id = 1")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(SqlState::INSUFFICIENT_PRIVILEGE));
    // ... the server quotes a value (of a column no rule names: the
    // detector finds it) in the detail of a constraint violation
    let copy = "insert into uniq select email from uniq";
    let err = client.batch_execute(copy).await.unwrap_err();
    assert_eq!(code(&err), Some(SqlState::UNIQUE_VIOLATION));
    let detail = err
        .as_db_error()
        .unwrap()
        .detail()
        .unwrap_or_default()
        .to_string();
    assert!(
        !detail.contains(EMAIL) && detail.contains("interlock"),
        "{detail}"
    );

    // A notice raised with data in it.
    client
        .batch_execute(
            "do $$ begin raise notice 'contact %', (select email from users limit 1); end $$",
        )
        .await
        .unwrap();
    // A notification from another session.
    client.batch_execute("listen news").await.unwrap();
    server
        .query(&format!("notify news, 'write to {EMAIL}'"))
        .unwrap();
    let (mut notice, mut payload) = (None, None);
    while notice.is_none() || payload.is_none() {
        match messages.recv().await.unwrap() {
            AsyncMessage::Notice(n) => notice = Some(n.message().to_string()),
            AsyncMessage::Notification(n) => payload = Some(n.payload().to_string()),
            _ => {}
        }
    }
    assert_eq!(notice.unwrap(), "contact ****");
    assert_eq!(payload.unwrap(), "write to ****");

    // A fast-path function call, btrim(text), result in text format: its
    // source is unknown, so column rules make it NULL, detectors mask it.
    let oid: i32 = server
        .query("select 'btrim(text)'::regprocedure::oid")
        .unwrap()
        .parse()
        .unwrap();
    let mut call = oid.to_be_bytes().to_vec();
    call.extend(1i16.to_be_bytes());
    call.extend(0i16.to_be_bytes());
    call.extend(1i16.to_be_bytes());
    call.extend((EMAIL.len() as i32).to_be_bytes());
    call.extend(EMAIL.as_bytes());
    call.extend(0i16.to_be_bytes());
    let only_detectors =
        Proxy::start(injected(&server), TestGate::masking(vec![detectors()])).await;
    for (p, want) in [(&proxy, None), (&only_detectors, Some(&b"****"[..]))] {
        let mut s = raw(p.addr, 0).await;
        send(&mut s, b'F', &call).await;
        let (tag, body) = recv(&mut s).await.unwrap();
        assert_eq!(tag, b'V', "{}", String::from_utf8_lossy(&body));
        let len = i32::from_be_bytes(body[..4].try_into().unwrap());
        assert_eq!((len >= 0).then(|| &body[4..]), want);
        until_ready(&mut s).await;
    }

    let records = format!("{:?}", gate.records());
    assert!(!records.contains(EMAIL), "{records}");
    assert!(
        gate.masked()
            .iter()
            .any(|(r, c)| r == "detect" && c.iter().any(|(k, _)| k == "detector:email")),
        "{:?}",
        gate.masked()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_and_hash_strategies() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let server = server().await;
    let key = Arc::new(MaskKey::from_bytes([9; 32]));
    let mut target = injected(&server);
    target.mask_key = Some(key.clone());
    let gate = TestGate::masking(vec![
        mask_rule(
            "last4",
            &["public.cards.number", "public.cards.id"],
            &[],
            Strategy::Partial { keep_last: 4 },
        ),
        mask_rule("hashed", &["public.users.email"], &[], Strategy::Hash),
    ]);
    let proxy = Proxy::start(target, gate).await;
    let out = run(psql(&proxy, ROLE, "select number, id from cards")).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "************1111|"
    );
    let hashed = key.hash(EMAIL.as_bytes());
    assert!(hashed.starts_with("h:") && hashed.len() == 18, "{hashed}");
    // equal values hash equal, across rows and sessions, in both formats
    let out = run(psql(&proxy, ROLE, "select email from users order by id")).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{hashed}\n{hashed}")
    );
    let (client, _m) = connect(&proxy.conninfo(ROLE, "x")).await.unwrap();
    let row = client
        .query_one("select email from users where id = 1", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), hashed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_parameters_are_recorded_masked() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let server = server().await;
    let gate = TestGate::masking(vec![
        mask_rule("cols", &["public.users.email"], &[], Strategy::Redact),
        mask_rule("detect", &[], &["email"], Strategy::Redact),
    ]);
    let proxy = Proxy::start(injected(&server), gate.clone()).await;
    let (client, _m) = connect(&proxy.conninfo(ROLE, "x")).await.unwrap();
    // tokio-postgres sends parameters in binary; their types come from the
    // statement's ParameterDescription.
    let rows = client
        .query(
            "select id from users where email = $1 and id > $2 and $3::bytea is not null",
            &[&EMAIL, &0i32, &vec![1u8, 2, 3]],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let recorded = gate.statements_with_params();
    let (_, params) = recorded
        .iter()
        .find(|(t, _)| t.starts_with("select id from users where email = $1"))
        .expect("recorded");
    assert_eq!(
        params,
        &vec![
            Some("****".to_string()),
            Some("0".to_string()),
            Some("<binary 3 bytes>".to_string())
        ]
    );
    assert!(!format!("{:?}", gate.records()).contains(EMAIL));
    // Column rules do not apply to parameters: a value no detector finds is kept.
    client
        .query("select $1::text", &[&"public.users.email"])
        .await
        .unwrap();
    assert!(
        gate.statements_with_params()
            .iter()
            .any(|(_, p)| p == &vec![Some("public.users.email".to_string())])
    );
}
