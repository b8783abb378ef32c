//! Column rules cannot be evaded: computed columns of statements reading a
//! masked table (expressions, casts, UNION, subqueries, whole-row values,
//! query strings), views, and statements interlock did not see defined
//! (SQL PREPARE / DECLARE executed through the extended protocol, FETCH,
//! EXECUTE). Servers on 127.0.0.30.

use std::sync::Arc;

use interlock::gate::{Record, Strategy};
use interlock_tests::{
    pg_client::{injected, psql, run},
    pg_gate::{Proxy, TestGate, mask_rule},
    pg_raw::{bind, connect as raw, cstrs, data_rows, execute, send, until_ready},
    postgres::{PgServer, ROLE},
};

const EMAIL: &str = "bob@example.com";

async fn setup() -> (PgServer, Arc<TestGate>, Proxy) {
    let server = tokio::task::spawn_blocking(|| PgServer::start("127.0.0.30"))
        .await
        .unwrap()
        .unwrap();
    server
        .query(&format!(
            "create table users (id int, email text, note text);
             insert into users values (1, '{EMAIL}', 'hello');
             create table orders (id int, item text);
             insert into orders values (7, 'lamp');
             create view contacts as select id, email as contact from users;
             create view contacts2 as select * from contacts;
             alter table users owner to {ROLE}; alter table orders owner to {ROLE};
             alter view contacts owner to {ROLE}; alter view contacts2 owner to {ROLE}"
        ))
        .unwrap();
    let gate = TestGate::masking(vec![mask_rule(
        "mask-email",
        &["public.users.email"],
        &[],
        Strategy::Redact,
    )]);
    let proxy = Proxy::start(injected(&server), gate.clone()).await;
    (server, gate, proxy)
}

async fn psql_out(proxy: &Proxy, sql: &str) -> String {
    let out = run(psql(proxy, ROLE, sql)).await;
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn computed_columns_and_views_of_masked_tables_are_masked() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let (_server, gate, proxy) = setup().await;
    // Each of these puts users.email in a column PostgreSQL reports without
    // a source column (table OID 0), or one of a view.
    let evasions = [
        ("select lower(email) from users", "****"),
        ("select email || '' from users", "****"),
        ("select email::varchar from users", "****"),
        (
            "select email from users union select 'x' order by 1",
            "****\n****",
        ),
        ("select (select email from users limit 1) as e", "****"),
        ("select row_to_json(u) from users u", ""),
        ("select u from users u", ""),
        ("select u::text from users u", "****"),
        (
            "select query_to_xml('select email from users', true, false, '')",
            "",
        ),
        (
            "with c as (select email from users) select upper(email) from c",
            "****",
        ),
        // a view's columns: every column of a view reading users.email
        ("select contact, id from contacts", "****|"),
        ("select contact from contacts2", "****"),
        // computed from a view
        ("select upper(contact) from contacts", "****"),
    ];
    for (sql, want) in evasions {
        let got = psql_out(&proxy, sql).await;
        assert!(!got.contains("example.com"), "{sql} leaked: {got}");
        assert_eq!(got, want, "{sql}");
    }
    // What reads only other tables, and computed values of no table, pass.
    assert_eq!(
        psql_out(&proxy, "select upper(item), id from orders").await,
        "LAMP|7"
    );
    assert_eq!(
        psql_out(&proxy, "select 1 + 1, note from users").await,
        "|hello"
    );
    assert_eq!(psql_out(&proxy, "select 40 + 2").await, "42");
    let masked = gate.masked();
    assert!(
        masked
            .iter()
            .any(|(r, c)| r == "mask-email" && c.contains(&("computed".into(), 1))),
        "{masked:?}"
    );
    assert!(
        masked
            .iter()
            .any(|(_, c)| c.contains(&("public.contacts.contact".into(), 1))),
        "{masked:?}"
    );
    assert!(!format!("{:?}", gate.records()).contains(EMAIL));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_and_cursors_made_in_sql_do_not_evade_masking() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let (_server, gate, proxy) = setup().await;

    // SQL-level PREPARE / EXECUTE and DECLARE / FETCH (simple protocol).
    assert_eq!(
        psql_out(
            &proxy,
            "prepare q as select email, lower(email) from users; execute q"
        )
        .await,
        "****|****"
    );
    assert_eq!(
        psql_out(
            &proxy,
            "begin; declare c cursor for select email, upper(email), note from users; fetch all from c; commit"
        )
        .await,
        "****|****|hello"
    );

    // A statement PREPAREd in SQL, bound and executed in the extended
    // protocol: first without any Describe (nothing known: NULL), then with
    // a portal Describe (resolved: the column rule applies, note passes).
    let mut s = raw(proxy.addr, 0).await;
    send(
        &mut s,
        b'Q',
        &cstrs(&["PREPARE p AS SELECT email, note FROM users"]),
    )
    .await;
    until_ready(&mut s).await;
    send(&mut s, b'B', &bind("", "p", &[])).await;
    send(&mut s, b'E', &execute("")).await;
    send(&mut s, b'S', &[]).await;
    let rows = data_rows(&until_ready(&mut s).await);
    assert_eq!(rows, vec![vec![None, None]]);
    send(&mut s, b'B', &bind("", "p", &[])).await;
    send(&mut s, b'D', &[b'P', 0]).await;
    send(&mut s, b'E', &execute("")).await;
    send(&mut s, b'S', &[]).await;
    let rows = data_rows(&until_ready(&mut s).await);
    assert_eq!(
        rows,
        vec![vec![Some(b"****".to_vec()), Some(b"hello".to_vec())]]
    );

    // A cursor DECLAREd in SQL, executed as a portal.
    send(
        &mut s,
        b'Q',
        &cstrs(&["BEGIN; DECLARE c CURSOR FOR SELECT email, note FROM users; DECLARE d CURSOR FOR SELECT note FROM users"]),
    )
    .await;
    until_ready(&mut s).await;
    send(&mut s, b'D', &[b'P', b'c', 0]).await;
    send(&mut s, b'E', &execute("c")).await;
    send(&mut s, b'E', &execute("d")).await;
    send(&mut s, b'S', &[]).await;
    let rows = data_rows(&until_ready(&mut s).await);
    assert_eq!(
        rows,
        vec![
            vec![Some(b"****".to_vec()), Some(b"hello".to_vec())],
            // undescribed: even `note` is unknown, so it is NULL
            vec![None],
        ]
    );
    send(&mut s, b'Q', &cstrs(&["COMMIT"])).await;
    until_ready(&mut s).await;

    // A Parse rejected by the server does not replace what the name means.
    send(
        &mut s,
        b'P',
        &[cstrs(&["s1", "select lower(email) from users"]), vec![0, 0]].concat(),
    )
    .await;
    send(&mut s, b'D', &[b'S', b's', b'1', 0]).await;
    send(&mut s, b'S', &[]).await;
    until_ready(&mut s).await;
    send(
        &mut s,
        b'P',
        &[cstrs(&["s1", "select 'nothing to see' as x"]), vec![0, 0]].concat(),
    )
    .await;
    send(&mut s, b'S', &[]).await;
    let failed = until_ready(&mut s).await;
    assert!(failed.iter().any(|m| m.0 == b'E'), "{failed:?}");
    send(&mut s, b'B', &bind("", "s1", &[])).await;
    send(&mut s, b'E', &execute("")).await;
    send(&mut s, b'S', &[]).await;
    let rows = data_rows(&until_ready(&mut s).await);
    assert_eq!(rows, vec![vec![Some(b"****".to_vec())]]);

    // What ran is recorded, including what interlock did not see defined.
    let texts: Vec<String> = gate.statements().into_iter().map(|s| s.0).collect();
    for want in [
        "execute q",
        "fetch all from c",
        "execute prepared statement \"p\" (not prepared through interlock)",
        "execute portal \"c\" (not bound through interlock)",
    ] {
        assert!(texts.iter().any(|t| t == want), "{want} not in {texts:?}");
    }
    assert!(!format!("{:?}", gate.records()).contains(EMAIL));
    let masked_rows: u64 = gate
        .records()
        .iter()
        .filter_map(|r| match r {
            Record::Masked { counts, .. } => Some(counts.iter().map(|c| c.1).sum::<u64>()),
            _ => None,
        })
        .sum();
    assert!(masked_rows >= 8, "{:?}", gate.masked());
}
