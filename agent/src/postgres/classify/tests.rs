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
        ("drop schema s cascade", &[Ddl, DropSchema]),
        ("drop database d", &[Ddl, DropDatabase]),
        ("truncate t", &[Write, Truncate]),
        ("copy t to program 'cat'", &[Read, CopyProgram, CopyTo]),
        ("copy t from program 'cat'", &[Write, CopyProgram, CopyFrom]),
        ("copy t to stdout", &[Read, CopyTo]),
        ("copy (select * from t) to stdout", &[Read, CopyTo]),
        ("copy t from stdin", &[Write, CopyFrom]),
        ("do $$ begin perform 1; end $$", &[DoBlock]),
        (
            "create function f() returns int language sql as 'select 1'",
            &[Ddl, CreateFunction],
        ),
        (
            "create procedure p() language sql as 'select 1'",
            &[Ddl, CreateFunction],
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
            &[Read, DangerousFunction],
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
        ("reset all", &[SetRole, Session]),
        ("discard all", &[Session]),
        ("listen c", &[Session]),
        ("notify c, 'x'", &[Session]),
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
