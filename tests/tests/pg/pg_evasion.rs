//! Blocking by what a statement does, not how it is spelled: a guard
//! policy naming the data-destroying classes, tried through the real
//! daemon (kernel redirect, psql in a scope cgroup) against a real
//! PostgreSQL with a table-driven corpus of evasions. Every refused
//! statement is checked to have left the data exactly as it was; the
//! classes each statement carried are read back from the audit events; a
//! benign corpus (dangerous-looking text in literals, comments,
//! identifiers; filtered writes; EXPLAIN without ANALYZE) must pass.

use std::{
    path::Path,
    process::{Command, Output},
};

use anyhow::{Result, bail};
use interlock_tests::{pg_client, pg_gate, postgres::*, *};
use serde_json::Value;

const GUARD: &str = "drop_database, drop_table, drop_schema, drop_column, truncate, \
                     delete_without_where, update_without_where, copy_program";

/// Objects the corpus works on, made by the superuser outside interlock.
const SETUP: &str = "
create table t (id int primary key, a int, name text, flag bool);
insert into t select i, i * 10, 'n' || i, i % 2 = 0 from generate_series(1, 5) i;
create table u (id int, tid int, flag bool, x int);
insert into u values (1, 1, true, 1), (2, 2, false, 2);
create table s (id int);
insert into s values (1);
create schema app;
create table app.kept (id int);
insert into app.kept values (7);
create sequence seq;
create type mood as enum ('ok');
alter table u add column m mood;
create view v as select id from t;
create function wipe() returns void language sql as 'delete from t';
create function wipe_plpgsql() returns void language plpgsql as $$ begin delete from t; end $$;
create procedure purge() language sql as 'delete from t';
create function outer_fn() returns void language sql as 'select wipe()';
create function dyn_exec(q text) returns void language plpgsql as $$ begin execute q; end $$;
create function harmless() returns int language sql as 'select 1';
create function wipe_trigger() returns trigger language plpgsql as $$ begin delete from t; return new; end $$;
alter table t owner to app; alter table u owner to app; alter table s owner to app;
alter schema app owner to app; alter table app.kept owner to app; alter sequence seq owner to app;
alter type mood owner to app; alter view v owner to app;
alter function wipe() owner to app; alter function wipe_plpgsql() owner to app;
alter procedure purge() owner to app; alter function outer_fn() owner to app;
alter function dyn_exec(text) owner to app; alter function harmless() owner to app;
alter function wipe_trigger() owner to app;
";

/// Everything a destroyed or changed row, column, table, schema, sequence
/// or large object would change.
const FINGERPRINT: &str = "select md5(string_agg(line, '|' order by line)) from (
  select 't:' || t::text as line from t
  union all select 'u:' || u::text from u
  union all select 's:' || s::text from s
  union all select 'k:' || k::text from app.kept k
  union all select 'col:' || table_schema || '.' || table_name || '.' || column_name || ':' || data_type
    from information_schema.columns where table_schema in ('public', 'app')
  union all select 'seq:' || last_value::text from seq
  union all select 'lo:' || count(*)::text from pg_largeobject_metadata
  union all select 'ns:' || nspname from pg_namespace where nspname in ('app', 'public')
  union all select 'fn:' || proname || ':' || md5(prosrc) from pg_proc where pronamespace = 'public'::regnamespace
  union all select 'rule:' || rulename from pg_rules where schemaname = 'public'
  union all select 'trg:' || tgname from pg_trigger where not tgisinternal
) x";

/// One evasion: the statement, classes it must carry (at least), whether
/// the guard refuses it.
struct Case {
    sql: &'static str,
    classes: &'static [&'static str],
    refused: bool,
}

const fn refused(sql: &'static str, classes: &'static [&'static str]) -> Case {
    Case {
        sql,
        classes,
        refused: true,
    }
}

const fn allowed(sql: &'static str, classes: &'static [&'static str]) -> Case {
    Case {
        sql,
        classes,
        refused: false,
    }
}

const DWW: &[&str] = &["write", "delete_without_where"];
const UWW: &[&str] = &["write", "update_without_where"];
const OPAQUE: &[&str] = &["opaque"];

/// The evasion corpus.
const CORPUS: &[Case] = &[
    // MERGE actions whose join keeps no row out
    refused("MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE", DWW),
    refused(
        "MERGE INTO t USING s ON 1 = 1 WHEN MATCHED THEN UPDATE SET a = 0",
        UWW,
    ),
    refused(
        "MERGE INTO t USING t AS m ON t.id = m.id WHEN MATCHED THEN DELETE",
        DWW,
    ),
    refused(
        "MERGE INTO t USING (SELECT * FROM t) m ON t.id = m.id WHEN MATCHED THEN UPDATE SET name = NULL",
        UWW,
    ),
    refused(
        "MERGE INTO t USING u ON u.flag WHEN MATCHED THEN DELETE",
        DWW,
    ),
    refused(
        "MERGE INTO t USING s ON s.id = s.id WHEN MATCHED THEN DELETE",
        DWW,
    ),
    refused(
        "MERGE INTO t USING s ON true WHEN MATCHED AND 1 = 1 THEN DELETE",
        DWW,
    ),
    refused(
        "MERGE INTO t USING s ON false WHEN NOT MATCHED BY SOURCE THEN DELETE",
        DWW,
    ),
    // WHERE clauses that hold for every row
    refused("DELETE FROM t WHERE true", DWW),
    refused("DELETE FROM t WHERE 1 = 1", DWW),
    refused("DELETE FROM t WHERE id = id", DWW),
    refused("DELETE FROM t WHERE name IS NULL OR name IS NOT NULL", DWW),
    refused("DELETE FROM t WHERE a > 0 OR true", DWW),
    refused("DELETE FROM t WHERE NOT false", DWW),
    refused("DELETE FROM t WHERE 'a' = 'a'", DWW),
    refused("DELETE FROM t WHERE 2 > 1", DWW),
    refused("DELETE FROM t WHERE 't'::boolean", DWW),
    refused("DELETE FROM t WHERE id IS NOT DISTINCT FROM id", DWW),
    refused("DELETE FROM t WHERE id BETWEEN id AND id", DWW),
    refused("DELETE FROM t WHERE name LIKE '%'", DWW),
    refused("DELETE FROM t WHERE coalesce(NULL, true)", DWW),
    refused("DELETE FROM t WHERE CASE WHEN true THEN true END", DWW),
    refused("DELETE FROM t WHERE 1 IN (1, 2)", DWW),
    refused("DELETE FROM t WHERE EXISTS (SELECT 1)", DWW),
    refused("DELETE FROM t WHERE id IN (SELECT id FROM t)", DWW),
    refused(
        "DELETE FROM t WHERE EXISTS (SELECT 1 FROM t t2 WHERE t2.id = t.id)",
        DWW,
    ),
    refused("DELETE FROM t USING t t2 WHERE t.id = t2.id", DWW),
    refused("DELETE FROM t WHERE now() > '2000-01-01'", DWW),
    refused("DELETE FROM t USING u WHERE u.flag", DWW),
    refused(
        "DELETE FROM t WHERE (a > 1) IS NULL OR (a > 1) IS NOT NULL",
        DWW,
    ),
    refused("DELETE FROM t WHERE 1 + 1 = 2", DWW),
    refused("DeLeTe /* x */ FrOm t WhErE TRUE -- trailing", DWW),
    refused("DELETE FROM \"t\" WHERE (true)", DWW),
    refused("DELETE FROM public.t WHERE NOT (1 = 0)", DWW),
    refused("DELETE FROM ONLY t WHERE id = id", DWW),
    refused("UPDATE t SET a = 0 WHERE true", UWW),
    refused("UPDATE t SET a = 0 WHERE a = a", UWW),
    refused("UPDATE t SET name = 'x' FROM u WHERE u.id = 1", UWW),
    refused("UPDATE t SET a = 0 WHERE 1 = 1 OR a = 5", UWW),
    refused("UPDATE ONLY t SET a = 1 WHERE NOT (1 = 0)", UWW),
    // wrappers
    refused(
        "WITH d AS (DELETE FROM t WHERE 1 = 1 RETURNING *) SELECT count(*) FROM d",
        DWW,
    ),
    refused("EXPLAIN ANALYZE DELETE FROM t WHERE true", DWW),
    refused("PREPARE p AS DELETE FROM t WHERE id = id", DWW),
    // procedural code
    refused(
        "DO $$ BEGIN DELETE FROM t; END $$",
        &["do_block", "delete_without_where"],
    ),
    refused(
        "DO $$ BEGIN EXECUTE 'DELETE FROM t'; END $$",
        &["do_block", "delete_without_where"],
    ),
    refused(
        "DO $$ BEGIN EXECUTE 'TRUNC' || 'ATE t'; END $$",
        &["do_block", "truncate"],
    ),
    refused(
        "DO $$ BEGIN EXECUTE format('DROP TABLE %I', 't'); END $$",
        OPAQUE,
    ),
    refused(
        "DO $$ DECLARE q text := 'DELETE FROM t'; BEGIN EXECUTE q; END $$",
        OPAQUE,
    ),
    refused(
        "DO $$ BEGIN IF true THEN DROP TABLE u; END IF; END $$",
        &["drop_table"],
    ),
    refused("DO $$ BEGIN PERFORM wipe(); END $$", DWW),
    refused(
        "DO $$ DECLARE r record; BEGIN FOR r IN EXECUTE 'SELECT 1' LOOP DELETE FROM t; END LOOP; END $$",
        DWW,
    ),
    refused(
        "DO $do$ BEGIN EXECUTE 'DO $i$ BEGIN TRUNCATE t; END $i$'; END $do$",
        &["truncate"],
    ),
    refused(
        "DO LANGUAGE plpgsql $$ BEGIN UPDATE t SET a = 0; END $$",
        UWW,
    ),
    refused("DO $$ BEGIN DELETE FROM t WHERE id = id; END $$", DWW),
    // stored code: its body is what it does
    refused(
        "CREATE FUNCTION evil() RETURNS void LANGUAGE sql AS 'DELETE FROM t'",
        &["create_function", "delete_without_where"],
    ),
    refused(
        "CREATE OR REPLACE FUNCTION harmless() RETURNS int LANGUAGE plpgsql AS $$ BEGIN TRUNCATE t; RETURN 1; END $$",
        &["truncate"],
    ),
    refused(
        "CREATE PROCEDURE evilp() LANGUAGE sql BEGIN ATOMIC DELETE FROM t; END",
        DWW,
    ),
    refused(
        "CREATE FUNCTION dyn2(q text) RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE q; END $$",
        OPAQUE,
    ),
    refused(
        "CREATE FUNCTION sneaky() RETURNS int LANGUAGE sql AS $$ SELECT 1; DELETE FROM t WHERE true; SELECT 2 $$",
        DWW,
    ),
    refused("CREATE RULE r AS ON INSERT TO s DO ALSO DELETE FROM t", DWW),
    refused(
        "CREATE TRIGGER tr AFTER INSERT ON s FOR EACH ROW EXECUTE FUNCTION wipe_trigger()",
        DWW,
    ),
    // calls of functions and procedures that destroy
    refused("SELECT wipe()", DWW),
    refused("SELECT * FROM wipe()", DWW),
    refused("SELECT wipe_plpgsql()", DWW),
    refused("CALL purge()", DWW),
    refused("SELECT outer_fn()", DWW),
    refused("SELECT dyn_exec('DELETE FROM t')", OPAQUE),
    refused("SELECT public.wipe()", DWW),
    refused("SELECT count(*) FROM t WHERE wipe() IS NULL", DWW),
    refused("SELECT \"wipe\"()", DWW),
    refused("VALUES (wipe())", DWW),
    refused("INSERT INTO s (id) SELECT 1 WHERE wipe() IS NOT NULL", DWW),
    refused("WITH x AS (SELECT wipe()) SELECT * FROM x", DWW),
    refused("SELECT (SELECT wipe())", DWW),
    refused("SELECT wipe() FROM generate_series(1, 1)", DWW),
    refused("SELECT not_in_the_catalog()", OPAQUE),
    // destructive DDL
    refused("DROP OWNED BY app CASCADE", &["drop_table", "drop_schema"]),
    refused("ALTER TABLE t DROP COLUMN name", &["drop_column"]),
    refused("ALTER TABLE t DROP name CASCADE", &["drop_column"]),
    refused("ALTER TABLE t ALTER COLUMN a TYPE int USING 0", UWW),
    refused("DROP SCHEMA app CASCADE", &["drop_schema", "drop_table"]),
    refused("DROP TYPE mood CASCADE", &["drop_column"]),
    refused("DROP VIEW v CASCADE", &["drop_table"]),
    refused("DROP SEQUENCE seq CASCADE", &["drop_table"]),
    refused("DROP TABLE IF EXISTS u", &["drop_table"]),
    refused("TRUNCATE ONLY t", &["truncate"]),
    refused("COPY t TO PROGRAM 'cat'", &["copy_program"]),
    refused("COPY (SELECT 1) TO PROGRAM 'true'", &["copy_program"]),
    // not blocked by this guard, but carrying their own classes
    allowed("SELECT nextval('seq')", &["write", "sequence"]),
    allowed("SELECT pg_notify('c', 'x')", &["notify"]),
    allowed(
        "SET default_transaction_read_only = off",
        &["read_only_off"],
    ),
    allowed(
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        &["read_only_off"],
    ),
    allowed("SELECT lo_from_bytea(0, 'x')", &["write", "large_object"]),
    allowed("SELECT pg_advisory_lock(42)", &["lock"]),
    allowed("SELECT harmless()", &["read"]),
];

/// Statements that must run untouched.
const BENIGN: &[&str] = &[
    "SELECT 'DELETE FROM t' AS text",
    "SELECT $$DROP TABLE t$$",
    "SELECT 1 -- DELETE FROM t",
    "/* TRUNCATE t */ SELECT count(*) FROM t",
    "SELECT \"delete\" FROM (SELECT 1 AS \"delete\") x",
    "SELECT * FROM t WHERE name = 'x; DROP TABLE t'",
    "SELECT format('DELETE FROM %I', 't')",
    "SELECT E'\\\\' || 'TRUNCATE t'",
    "DELETE FROM t WHERE id = 999",
    "UPDATE t SET a = a WHERE id = 1",
    "DELETE FROM t WHERE id IN (SELECT tid FROM u WHERE x = 42)",
    "DELETE FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.tid = t.id AND u.x = 42)",
    "UPDATE t SET a = a FROM u WHERE u.tid = t.id AND u.x = 42",
    "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = t.a",
    "EXPLAIN DELETE FROM t",
    "EXPLAIN UPDATE t SET a = 0",
    "EXPLAIN (ANALYZE false) DELETE FROM t WHERE true",
    "SELECT count(*) FROM t WHERE true",
    "DO $$ BEGIN PERFORM 1; END $$",
    "DO $$ BEGIN RAISE NOTICE 'DROP TABLE t'; END $$",
    "DO $$ DECLARE n int; BEGIN SELECT count(*) INTO n FROM t WHERE id = 1; END $$",
    "SELECT harmless()",
    "CREATE FUNCTION fine() RETURNS int LANGUAGE sql AS 'SELECT 42'",
    "SELECT fine()",
    "BEGIN; DELETE FROM t WHERE id = 1; ROLLBACK",
    "COPY t TO STDOUT",
    "PREPARE q AS SELECT * FROM t WHERE id = $1; EXECUTE q(1)",
    "SELECT id FROM t ORDER BY id LIMIT 1",
];

/// psql in `cg` through the daemon, one `-c` per statement (one session).
fn psql(cg: &TestCgroup, pg: &PgServer, sqls: &[&str]) -> Command {
    let port = pg.addr.port().to_string();
    let ip = pg.addr.ip().to_string();
    let mut args = vec![
        "-X",
        "-At",
        "-h",
        &ip,
        "-p",
        &port,
        "-U",
        ROLE,
        "-d",
        DATABASE,
        "-v",
        "ON_ERROR_STOP=1",
    ];
    for s in sqls {
        args.push("-c");
        args.push(s);
    }
    let mut c = cg.command(Path::new("/usr/bin/psql"), &args);
    c.env("PGPASSWORD", "not-the-password")
        .env("PGSSLMODE", "disable")
        .env("PGCONNECT_TIMEOUT", "30");
    c
}

fn run(mut c: Command) -> Result<Output> {
    Ok(c.output()?)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The classes the audit trail recorded for `text`: from its
/// `request_blocked` event, else its `statement` event.
fn recorded_classes(events: &[Value], text: &str) -> Option<Vec<String>> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect()
    };
    events
        .iter()
        .find(|e| e["type"] == "request_blocked" && e["request"]["text"] == text)
        .map(|e| strings(&e["request"]["classes"]))
        .or_else(|| {
            events
                .iter()
                .find(|e| e["type"] == "statement" && e["text"] == text)
                .map(|e| strings(&e["classes"]))
        })
}

#[test]
fn statements_are_blocked_by_what_they_do() -> Result<()> {
    if !privileged() || !PgServer::available() {
        return Ok(());
    }
    assert!(
        CORPUS.len() >= 80,
        "the corpus has {} statements",
        CORPUS.len()
    );
    let pg = PgServer::start("127.0.0.61")?;
    pg.query(SETUP)?;
    let cg = TestCgroup::new("pg-evasion")?;
    let secret = pg.password_file()?;
    let policy = Policy::new()
        .postgres("app-db", &pg, &secret)
        .rules(&format!(
            "
  - name: guard
    match: {{target: [app-db], statement: [{GUARD}]}}
    action: block
    message: guarded
"
        ))
        .yaml();
    let d = Daemon::start(DaemonSpec::with_policy(&cg, &policy, &[]))?;

    let mut failures = Vec::new();
    let mut before = pg.query(FINGERPRINT)?;
    for case in CORPUS {
        let out = run(psql(&cg, &pg, &[case.sql]))?;
        let err = stderr(&out);
        let blocked = err.contains("42501") || err.contains("blocked by rule \"guard\"");
        if case.refused {
            if out.status.success() || !err.contains("guard") {
                failures.push(format!("not refused: {}\n  {err}", case.sql));
            }
            let after = pg.query(FINGERPRINT)?;
            if after != before {
                failures.push(format!("data changed by refused statement: {}", case.sql));
                before = after;
            }
        } else {
            if blocked {
                failures.push(format!("refused: {}\n  {err}", case.sql));
            }
            before = pg.query(FINGERPRINT)?;
        }
    }
    // A session that turns standard_conforming_strings off cannot hide a
    // statement in what interlock would read as a string.
    let out = run(psql(
        &cg,
        &pg,
        &[
            "SET standard_conforming_strings = off",
            "select 'x\\' as a, '; delete from t; select '' as b --'",
        ],
    ))?;
    if !stderr(&out).contains("guard") {
        failures.push(format!("backslash evasion not refused: {}", stderr(&out)));
    }
    if pg.query(FINGERPRINT)? != before {
        failures.push("data changed by the backslash evasion".into());
    }

    // The benign corpus passes untouched.
    for sql in BENIGN {
        let out = run(psql(&cg, &pg, &[sql]))?;
        if !out.status.success() {
            failures.push(format!(
                "benign statement failed: {sql}\n  {}",
                stderr(&out)
            ));
        }
    }

    // Each statement carried the classes it must, in the audit trail.
    let ev = d.wait_events("every session ended", |e| {
        // one session per statement, and the backslash-evasion session
        of_type(e, "session_ended").len() > CORPUS.len() + BENIGN.len()
    })?;
    for case in CORPUS {
        // psql sends the text as given; records hold each statement trimmed.
        let text = case.sql.trim();
        match recorded_classes(&ev, text) {
            Some(got) => {
                for want in case.classes {
                    if !got.iter().any(|g| g == want) {
                        failures.push(format!("{text}: classes {got:?} lack {want}"));
                    }
                }
            }
            None => failures.push(format!("no record of: {text}")),
        }
    }
    // Opaque refusals say why, in the trail.
    let dynamic = ev
        .iter()
        .find(|e| {
            e["type"] == "request_blocked"
                && e["request"]["text"]
                    == "DO $$ BEGIN EXECUTE format('DROP TABLE %I', 't'); END $$"
        })
        .map(|e| {
            e["request"]["opaque"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_default();
    if !dynamic.contains("EXECUTE of a computed string at line 1") {
        failures.push(format!("opaque reason not recorded: {dynamic:?}"));
    }
    if !failures.is_empty() {
        bail!(
            "{} failures:\n{}\n{}",
            failures.len(),
            failures.join("\n"),
            d.log()
        );
    }
    Ok(())
}

/// The classes of the last statement request whose text is `text`.
fn classes_of(gate: &pg_gate::TestGate, text: &str) -> Vec<interlock::gate::StatementClass> {
    gate.requests()
        .into_iter()
        .rev()
        .find_map(|r| match r {
            interlock::gate::Request::Statement {
                text: t, classes, ..
            } if t == text => Some(classes),
            _ => None,
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_text_changes_meaning_when_its_function_does() {
    use interlock::gate::StatementClass as C;
    if !PgServer::available() {
        return;
    }
    let (server, gate, proxy) = pg_client::start("127.0.0.62", &[], &[]).await;
    server
        .query(
            "create table t (id int); insert into t values (1);
             create function flip() returns int language sql as 'select 1';
             alter table t owner to app; alter function flip() owner to app;",
        )
        .unwrap();
    let (client, _m) = pg_client::connect(&proxy.conninfo(ROLE, "x"))
        .await
        .unwrap();
    client.simple_query("SELECT flip()").await.unwrap();
    assert_eq!(classes_of(&gate, "SELECT flip()"), vec![C::Read]);
    // replaced in this session: the cached lookup is forgotten
    client
        .simple_query(
            "CREATE OR REPLACE FUNCTION flip() RETURNS int LANGUAGE sql AS 'DELETE FROM t; SELECT 2'",
        )
        .await
        .unwrap();
    client.simple_query("SELECT 0").await.unwrap();
    let _ = client.simple_query("SELECT flip()").await;
    let c = classes_of(&gate, "SELECT flip()");
    assert!(c.contains(&C::DeleteWithoutWhere), "{c:?}");
    // replaced inside an open transaction the catalog connection cannot
    // see: the body the session gave it counts too
    client.simple_query("BEGIN").await.unwrap();
    client
        .simple_query(
            "CREATE OR REPLACE FUNCTION flip() RETURNS int LANGUAGE sql AS 'TRUNCATE t; SELECT 3'",
        )
        .await
        .unwrap();
    client
        .simple_query("CREATE FUNCTION brand_new() RETURNS int LANGUAGE sql AS 'SELECT 4'")
        .await
        .unwrap();
    let _ = client.simple_query("SELECT flip(), brand_new()").await;
    let c = classes_of(&gate, "SELECT flip(), brand_new()");
    assert!(c.contains(&C::Truncate), "{c:?}");
    assert!(
        !c.contains(&C::Opaque),
        "brand_new is known from this session: {c:?}"
    );
    client.simple_query("ROLLBACK").await.unwrap();
    // a function nobody defined, in the catalog or this session: opaque
    let _ = client.simple_query("SELECT nobody_made_this()").await;
    let c = classes_of(&gate, "SELECT nobody_made_this()");
    assert!(c.contains(&C::Opaque), "{c:?}");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_values_do_not_leave_through_copies_notifications_or_statistics() {
    use interlock::gate::Strategy;
    if !PgServer::available() {
        return;
    }
    let server = tokio::task::spawn_blocking(|| PgServer::start("127.0.0.63"))
        .await
        .unwrap()
        .unwrap();
    server
        .query(
            "create table users (id int, email text); \
             insert into users select i, 'user' || i || '@example.com' from generate_series(1, 50) i; \
             alter table users owner to app; analyze users;",
        )
        .unwrap();
    let rule = pg_gate::mask_rule("emails", &["public.users.email"], &[], Strategy::Redact);
    let gate = pg_gate::TestGate::masking(vec![rule]);
    let proxy = pg_gate::Proxy::start(pg_client::injected(&server), gate.clone()).await;
    let (client, _m) = pg_client::connect(&proxy.conninfo(ROLE, "x"))
        .await
        .unwrap();
    // copies into a table, a notification, a large object: refused
    for sql in [
        "CREATE TEMP TABLE stash AS SELECT email FROM users",
        "SELECT * INTO TEMP stash2 FROM users",
        "SELECT pg_notify('leak', email) FROM users",
        "SELECT lo_from_bytea(0, convert_to(email, 'UTF8')) FROM users",
        "UPDATE users SET email = email WHERE false",
    ] {
        let err = client.simple_query(sql).await.unwrap_err();
        assert_eq!(
            pg_client::code(&err),
            Some(tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {err}"
        );
    }
    assert_eq!(
        server
            .query("select count(*) from pg_largeobject_metadata")
            .unwrap(),
        "0"
    );
    // the planner's sample values of the masked column are masked too
    let rows = client
        .simple_query("SELECT most_common_vals::text, histogram_bounds::text FROM pg_stats WHERE tablename = 'users' AND attname = 'email'")
        .await
        .unwrap();
    let text = format!("{rows:?}");
    assert!(!text.contains("@example.com"), "{text}");
    // reading the column itself is masked as before; copies of other columns pass
    client
        .simple_query("CREATE TEMP TABLE ids AS SELECT id FROM users")
        .await
        .unwrap();
    drop(server);
}
