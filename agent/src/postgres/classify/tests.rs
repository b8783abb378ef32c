use super::*;

fn classes(sql: &str) -> Vec<Vec<C>> {
    classify(sql).into_iter().map(|c| c.classes).collect()
}

#[test]
fn every_class_is_produced() {
    use C::*;
    let table: &[(&str, &[C])] = &[
        ("select 1", &[Read]),
        ("show search_path", &[Read]),
        ("table t", &[Read]),
        ("values (1)", &[Read]),
        ("select * from t for update", &[Read, Write]),
        ("select * into t2 from t", &[Read, Write]),
        ("insert into t values (1)", &[Write]),
        ("update t set a = 1 where id = 2", &[Write]),
        ("update t set a = 1", &[Write, UpdateWithoutWhere]),
        ("delete from t where id = 1", &[Write]),
        ("delete from t", &[Write, DeleteWithoutWhere]),
        (
            "merge into t using s on t.id = s.id when matched then delete",
            &[Write],
        ),
        ("create table t (id int)", &[Ddl]),
        ("alter table t add column b int", &[Ddl]),
        ("comment on table t is 'x'", &[Ddl]),
        ("create index on t (id)", &[Ddl]),
        ("drop index i", &[Ddl]),
        ("drop table t", &[Ddl, DropTable]),
        ("drop schema s cascade", &[Ddl, DropTable, DropSchema]),
        ("drop database d", &[Ddl, DropDatabase]),
        ("truncate t", &[Write, Truncate]),
        ("copy t to program 'cat'", &[Read, CopyProgram, CopyTo]),
        ("copy t from program 'cat'", &[Write, CopyProgram, CopyFrom]),
        ("copy t to stdout", &[Read, CopyTo]),
        ("copy (select * from t) to stdout", &[Read, CopyTo]),
        ("copy t from stdin", &[Write, CopyFrom]),
        ("do $$ begin perform 1; end $$", &[Read, DoBlock]),
        (
            "create function f() returns int language sql as 'select 1'",
            &[Read, Ddl, CreateFunction],
        ),
        (
            "create procedure p() language sql as 'select 1'",
            &[Read, Ddl, CreateFunction],
        ),
        ("grant select on t to bob", &[Grant]),
        ("revoke select on t from bob", &[Grant]),
        ("grant admin to bob", &[Grant]),
        ("create role bob", &[RoleChange]),
        ("create user bob password 'x'", &[RoleChange]),
        ("alter role bob superuser", &[RoleChange]),
        ("drop role bob", &[RoleChange]),
        ("alter table t owner to bob", &[Ddl, RoleChange]),
        ("alter role bob rename to alice", &[RoleChange]),
        ("set role bob", &[SetRole]),
        ("reset role", &[SetRole]),
        ("set session authorization bob", &[SetRole]),
        (
            "select pg_read_file('/etc/passwd')",
            &[Read, DangerousFunction],
        ),
        (
            "select pg_catalog.pg_read_binary_file('/x')",
            &[Read, DangerousFunction],
        ),
        ("select * from pg_ls_dir('.')", &[Read, DangerousFunction]),
        (
            "select lo_import('/etc/passwd')",
            &[Read, Write, DangerousFunction, LargeObject],
        ),
        ("select lo_export(1, '/tmp/x')", &[Read, DangerousFunction]),
        (
            "select * from dblink('host=x', 'select 1') as t(a int)",
            &[Read, DangerousFunction],
        ),
        ("select dblink_exec('x')", &[Read, DangerousFunction]),
        ("select pg_terminate_backend(1)", &[Read, DangerousFunction]),
        ("select pg_cancel_backend(1)", &[Read, DangerousFunction]),
        (
            "select set_config('role', 'x', false)",
            &[Read, DangerousFunction],
        ),
        ("select pg_reload_conf()", &[Read, DangerousFunction]),
        ("begin", &[Transaction]),
        (
            "start transaction isolation level serializable",
            &[Transaction],
        ),
        ("commit", &[Transaction]),
        ("rollback", &[Transaction]),
        ("savepoint a", &[Transaction]),
        ("set search_path = x", &[Session]),
        ("reset all", &[SetRole, Session, ReadOnlyOff]),
        ("discard all", &[Session, ReadOnlyOff]),
        ("listen c", &[Session]),
        ("notify c, 'x'", &[Session, Notify]),
        ("prepare p as select 1", &[Session]),
        ("selec 1", &[Unparseable]),
    ];
    for (sql, want) in table {
        assert_eq!(classes(sql), vec![want.to_vec()], "{sql}");
    }
}

#[test]
fn tricky_trees() {
    use C::*;
    // DELETE without WHERE inside a CTE of a SELECT
    assert_eq!(
        classes("with d as (delete from t returning *) select * from d"),
        vec![vec![Read, Write, DeleteWithoutWhere]]
    );
    assert_eq!(
        classes("with u as (update t set a = 1 returning *) select 1"),
        vec![vec![Read, Write, UpdateWithoutWhere]]
    );
    // a dangerous function deep inside a subquery
    assert_eq!(
        classes("select * from t where a in (select length(pg_read_file('/etc/passwd')))"),
        vec![vec![Read, DangerousFunction]]
    );
    assert_eq!(
        classes("select (select pg_ls_dir('.') limit 1) as x"),
        vec![vec![Read, DangerousFunction]]
    );
    // EXPLAIN ANALYZE runs the statement; plain EXPLAIN does not
    assert_eq!(
        classes("explain analyze delete from t"),
        vec![vec![Read, Write, DeleteWithoutWhere]]
    );
    assert_eq!(
        classes("explain (analyze, buffers) update t set a = 1"),
        vec![vec![Read, Write, UpdateWithoutWhere]]
    );
    assert_eq!(classes("explain delete from t"), vec![vec![Read]]);
    assert_eq!(
        classes("explain (analyze false) delete from t"),
        vec![vec![Read]]
    );
    // a DELETE with WHERE inside a CTE of an INSERT
    assert_eq!(
        classes(
            "with d as (delete from t where id = 1 returning *) insert into t2 select * from d"
        ),
        vec![vec![Write]]
    );
    // dangerous function in an INSERT ... SELECT
    assert_eq!(
        classes("insert into t select pg_read_file('x')"),
        vec![vec![Write, DangerousFunction]]
    );
    // a prepared DELETE without WHERE
    assert_eq!(
        classes("prepare p as delete from t"),
        vec![vec![Write, DeleteWithoutWhere, Session]]
    );
    // CALL of a dangerous procedure-like function name
    assert_eq!(
        classes("call dblink_connect('x')"),
        vec![vec![Write, DangerousFunction]]
    );
}

#[test]
fn multi_statement_strings_split_with_their_own_text() {
    let got = classify("begin; delete from t ;\n select 'a;b' ; commit");
    let texts: Vec<&str> = got.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(
        texts,
        vec!["begin", "delete from t", "select 'a;b'", "commit"]
    );
    assert_eq!(got[1].classes, vec![C::Write, C::DeleteWithoutWhere]);
    assert_eq!(got[2].classes, vec![C::Read]);
    assert_eq!(got[3].classes, vec![C::Transaction]);
    // one bad statement makes the whole string unparseable
    let bad = classify("select 1; selec 2");
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].classes, vec![C::Unparseable]);
    assert_eq!(bad[0].text, "select 1; selec 2");
    assert!(classify("").is_empty());
    assert!(classify(" ; -- nothing").is_empty());
    // a NUL byte cannot be parsed
    assert_eq!(classes("select 1\0"), vec![vec![C::Unparseable]]);
    // multibyte text before a statement keeps byte offsets right
    let got = classify("select 'é'; drop table t");
    assert_eq!(got[1].text, "drop table t");
}

#[test]
fn query_strings_run_by_functions_are_classified_too() {
    use C::*;
    let table: &[(&str, &[C])] = &[
        (
            "select query_to_xml('select pg_read_file(''/etc/passwd'')', true, false, '')",
            &[Read, DangerousFunction],
        ),
        (
            "select query_to_xmlschema('delete from t', true, false, '')",
            &[Read, Write, DeleteWithoutWhere],
        ),
        (
            "select query_to_xml_and_xmlschema('select 1'::text, true, false, '')",
            &[Read],
        ),
        // not a constant: nobody can tell what it runs
        (
            "select query_to_xml(q, true, false, '') from queries",
            &[Read, DangerousFunction, Opaque],
        ),
        (
            "select query_to_xml('select ' || 'pg_ls_dir(''.'')', true, false, '')",
            &[Read, DangerousFunction],
        ),
        (
            "select * from ts_stat('select pg_ls_dir(''.'')::tsvector')",
            &[Read, DangerousFunction],
        ),
        (
            "select ts_rewrite('a'::tsquery, 'select pg_read_file(''x'')')",
            &[Read, DangerousFunction],
        ),
        (
            "select ts_rewrite('a'::tsquery, 'b'::tsquery, 'c'::tsquery)",
            &[Read],
        ),
        // passed by name
        (
            "select query_to_xml(nulls => true, query => 'update t set a = 1', tableforest => false, targetns => '')",
            &[Read, Write, UpdateWithoutWhere],
        ),
        // nested query strings, and a string the grammar rejects
        (
            "select query_to_xml('select query_to_xml(''select pg_read_file(''''x'''')'', true, false, '''')', true, false, '')",
            &[Read, DangerousFunction],
        ),
        (
            "select query_to_xml('selec 1', true, false, '')",
            &[Read, Unparseable],
        ),
        ("select table_to_xml('users', true, false, '')", &[Read]),
        (
            "select table_to_xml(t::regclass, true, false, '') from names",
            &[Read, DangerousFunction],
        ),
        ("select cursor_to_xml('c', 10, true, false, '')", &[Read]),
    ];
    for (sql, want) in table {
        assert_eq!(classes(sql), vec![want.to_vec()], "{sql}");
    }
    // deeper than the limit: opaque, fail closed
    let mut sql = "select pg_read_file('x')".to_string();
    for _ in 0..6 {
        sql = format!(
            "select query_to_xml('{}', true, false, '')",
            sql.replace('\'', "''")
        );
    }
    assert!(classes(&sql)[0].contains(&Opaque));
}

#[test]
fn reads_name_every_relation_or_say_any() {
    let reads = |sql: &str| classify(sql).remove(0).reads;
    let named = |names: &[(Option<&str>, &str)]| {
        Reads::Named(
            names
                .iter()
                .map(|(s, n)| RelName {
                    schema: s.map(str::to_string),
                    name: n.to_string(),
                })
                .collect(),
        )
    };
    assert_eq!(
        reads("select lower(u.email) from users u join public.orders o on true"),
        named(&[(None, "users"), (Some("public"), "orders")])
    );
    assert_eq!(
        reads("update accounts set note = note returning note || ''"),
        named(&[(None, "accounts")])
    );
    assert_eq!(
        reads("select (select email from users limit 1), x from t"),
        named(&[(None, "t"), (None, "users")])
    );
    assert_eq!(
        reads("with c as (select * from users) select row_to_json(c) from c"),
        named(&[(None, "c"), (None, "users")])
    );
    assert_eq!(
        reads("select query_to_xml('select email from secrets', true, false, '')"),
        named(&[(None, "secrets")])
    );
    assert_eq!(
        reads("select table_to_xml('\"Odd\".t', true, false, '')"),
        named(&[(Some("Odd"), "t")])
    );
    assert_eq!(
        reads("explain verbose select 1 from users"),
        named(&[(None, "users")])
    );
    for any in [
        "fetch 10 from c",
        "execute p(1)",
        "select cursor_to_xml('c', 1, true, false, '')",
        "select schema_to_xml('public', true, false, '')",
        "select database_to_xml(true, false, '')",
    ] {
        assert_eq!(reads(any), Reads::Any, "{any}");
    }
    let c = classify("fetch 10 from c").remove(0);
    assert!(c.indirect);
    assert!(!classify("select 1").remove(0).indirect);
}

#[test]
fn binary_copies_and_sql_names_are_noticed() {
    let one = |sql: &str| classify(sql).remove(0);
    assert!(one("copy t to stdout (format binary)").binary_copy);
    assert!(one("copy t to stdout with binary").binary_copy);
    assert!(one("copy (select 1) to stdout (format 'binary')").binary_copy);
    assert!(!one("copy t to stdout (format csv)").binary_copy);
    let names = |sql: &str| one(sql).names;
    assert_eq!(
        names("prepare p as select 1"),
        Some(NameChange::Prepare("p".into()))
    );
    assert_eq!(
        names("declare c cursor with hold for select 1"),
        Some(NameChange::Declare("c".into()))
    );
    assert_eq!(names("close c"), Some(NameChange::Close(Some("c".into()))));
    assert_eq!(names("close all"), Some(NameChange::Close(None)));
    assert_eq!(
        names("deallocate p"),
        Some(NameChange::Deallocate(Some("p".into())))
    );
    assert_eq!(names("deallocate all"), Some(NameChange::Deallocate(None)));
    assert_eq!(names("discard all"), Some(NameChange::DiscardAll));
    assert_eq!(names("discard plans"), None);
}

#[test]
fn recorded_text_has_passwords_redacted() {
    let got = classify("create role x login password 'hunter2'; select 1");
    assert_eq!(got[0].text, "create role x login password '<redacted>'");
    assert_eq!(got[0].classes, vec![C::RoleChange]);
    assert_eq!(got[1].text, "select 1");
    let bad = classify("create role x password 'hunter2' nonsense");
    assert_eq!(bad[0].classes, vec![C::Unparseable]);
    assert!(!bad[0].text.contains("hunter2"), "{}", bad[0].text);
}
