//! What a statement does, however it is spelled: row filters that do not
//! filter, MERGE actions, code in bodies, new destructive classes.

use super::*;

fn one(sql: &str) -> Classified {
    let mut all = classify(sql);
    assert_eq!(all.len(), 1, "{sql}: {all:?}");
    all.remove(0)
}

fn has(sql: &str, class: C) -> bool {
    one(sql).classes.contains(&class)
}

#[test]
fn filters_that_keep_every_row_are_no_filters() {
    let whole = [
        "delete from t where true",
        "delete from t where 1 = 1",
        "delete from t where 't'",
        "delete from t where 'yes'::boolean",
        "delete from t where id = id",
        "delete from t where t.id = id",
        "delete from t a where a.id >= a.id",
        "delete from t where id is not distinct from id",
        "delete from t where id is null or id is not null",
        "delete from t where not (id is null) or id is null",
        "delete from t where x or true",
        "delete from t where not false",
        "delete from t where 2 > 1 and 'a' = 'a'",
        "delete from t where 1 + 1 = 2",
        "delete from t where 1 in (1, 2)",
        "delete from t where id between id and id",
        "delete from t where name like '%'",
        "delete from t where 'abc' like 'a%'",
        "delete from t where coalesce(null, true)",
        "delete from t where case when 1 = 1 then true else false end",
        "delete from t where (x > 1) is not null or (x > 1) is null",
        "delete from t where (x > 1) is true or (x > 1) is not true",
        "delete from t where exists (select 1)",
        "delete from t where (select true)",
        "delete from t where id in (select id from t)",
        "delete from t where exists (select from t t2 where t2.id = t.id)",
        "delete from t using t t2 where t.id = t2.id",
        "delete from t where now() > '2000-01-01'",
        "delete from t where $1",
        "delete from t where random() = random()",
        "delete from t using u where u.flag",
        "delete from t where exists (select 1 from u where u.x = 1)",
        "update t set a = 1 where true",
        "update t set a = 1 where a = a",
        "update t set a = 1 from u where u.id = 5",
        "with d as (delete from t where 1 = 1 returning *) select * from d",
    ];
    for sql in whole {
        let c = one(sql);
        let all = c.classes.contains(&C::DeleteWithoutWhere)
            || c.classes.contains(&C::UpdateWithoutWhere);
        assert!(all, "{sql}: {:?}", c.classes);
    }
    let filtered = [
        "delete from t where id = 1",
        "delete from t where id = $1",
        "delete from t where false",
        "delete from t where 1 = 2",
        "delete from t where null",
        "delete from t where id is null",
        "delete from t where x > 1 or not x > 1",
        "delete from t where id in (select tid from u)",
        "delete from t where exists (select 1 from u where u.tid = t.id)",
        "delete from t where id = id + 1",
        "delete from t where t is null or t is not null",
        "delete from t where current of c",
        "delete from t using u where u.tid = t.id",
        "update t set a = 1 where id <> id",
    ];
    for sql in filtered {
        let c = one(sql);
        assert!(
            !c.classes.contains(&C::DeleteWithoutWhere)
                && !c.classes.contains(&C::UpdateWithoutWhere),
            "{sql}: {:?}",
            c.classes
        );
    }
}

#[test]
fn merge_actions_are_deletes_and_updates_filtered_by_the_join() {
    use C::*;
    let table: &[(&str, &[C])] = &[
        (
            "merge into t using s on true when matched then delete",
            &[Write, DeleteWithoutWhere],
        ),
        (
            "merge into t using s on 1 = 1 when matched then update set a = 1",
            &[Write, UpdateWithoutWhere],
        ),
        (
            "merge into t using t s on t.id = s.id when matched then delete",
            &[Write, DeleteWithoutWhere],
        ),
        (
            "merge into t using (select * from t) s on t.id = s.id when matched then delete",
            &[Write, DeleteWithoutWhere],
        ),
        (
            "merge into t using s on s.flag when matched then delete",
            &[Write, DeleteWithoutWhere],
        ),
        (
            "merge into t using s on t.id = s.id when matched then delete",
            &[Write],
        ),
        (
            "merge into t using s on true when matched and t.id = 3 then delete",
            &[Write],
        ),
        (
            "merge into t using s on t.id = s.id when not matched then insert values (s.id)",
            &[Write],
        ),
        (
            "merge into t using s on false when not matched by source then delete",
            &[Write, DeleteWithoutWhere],
        ),
        (
            "merge into t using s on true when not matched by source then delete",
            &[Write],
        ),
        (
            "merge into t using s on t.id = s.id when matched then do nothing",
            &[Write],
        ),
    ];
    for (sql, want) in table {
        assert_eq!(one(sql).classes, want.to_vec(), "{sql}");
    }
}

#[test]
fn do_blocks_and_function_bodies_are_read_statement_by_statement() {
    use C::*;
    let table: &[(&str, &[C])] = &[
        (
            "do $$ begin delete from t; end $$",
            &[Write, DeleteWithoutWhere, DoBlock],
        ),
        (
            "do $$ begin drop table t; end $$",
            &[Ddl, DropTable, DoBlock],
        ),
        (
            "do $$ begin execute 'truncate t'; end $$",
            &[Read, Write, Truncate, DoBlock],
        ),
        (
            "do $$ begin execute 'delete ' || 'from t'; end $$",
            &[Read, Write, DeleteWithoutWhere, DoBlock],
        ),
        (
            "do $$ declare n int; begin if n > 0 then update t set a = 1; end if; end $$",
            &[Read, Write, UpdateWithoutWhere, DoBlock],
        ),
        (
            "do $$ begin for i in 1..3 loop perform pg_read_file('x'); end loop; end $$",
            &[Read, DoBlock, DangerousFunction],
        ),
        (
            "do $$ declare x int; begin x := 1; end $$",
            &[Read, DoBlock],
        ),
        ("do $$ begin commit; end $$", &[DoBlock, Transaction]),
        (
            "create function f() returns void language sql as 'delete from t'",
            &[Write, Ddl, DeleteWithoutWhere, CreateFunction],
        ),
        (
            "create function f() returns void language plpgsql as $$ begin truncate t; end $$",
            &[Write, Ddl, Truncate, CreateFunction],
        ),
        (
            "create procedure p() language sql begin atomic delete from t; end",
            &[Write, Ddl, DeleteWithoutWhere, CreateFunction],
        ),
        (
            "create function f(a int) returns int language plpgsql as $$ declare r record; \
             begin for r in select * from t loop delete from t where id = r.id; end loop; return a; end $$",
            &[Read, Write, Ddl, CreateFunction],
        ),
        (
            "do $$ begin execute 'do $i$ begin drop table t; end $i$'; end $$",
            &[Read, Ddl, DropTable, DoBlock],
        ),
    ];
    for (sql, want) in table {
        let c = one(sql);
        assert_eq!(c.classes, want.to_vec(), "{sql}");
        assert_eq!(c.opaque, None, "{sql}");
    }
}

#[test]
fn what_cannot_be_read_is_opaque_with_the_reason() {
    let opaque = |sql: &str| {
        let c = one(sql);
        assert!(c.classes.contains(&C::Opaque), "{sql}: {:?}", c.classes);
        c.opaque.unwrap_or_default()
    };
    let why = opaque("do $$\nbegin\n  execute format('delete from %I', 't');\nend $$");
    assert!(
        why.contains("EXECUTE of a computed string at line 3"),
        "{why}"
    );
    let why = opaque("do $$ declare q text := 'delete from t'; begin execute q; end $$");
    assert!(why.contains("computed string"), "{why}");
    opaque(
        "do $$ declare r record; begin for r in execute 'sel' || current_user loop end loop; end $$",
    );
    opaque("do $$ begin return query execute $1; end $$");
    let why = opaque("do language plpython3u $$ plpy.execute('delete from t') $$");
    assert!(why.contains("plpython3u"), "{why}");
    opaque("create function f() returns int language c as 'lib', 'f'");
    opaque("create function f() returns int language internal as 'int4in'");
    opaque("select query_to_xml(q, true, false, '') from queries");
    // nesting deeper than the limit
    let mut sql = "delete from t".to_string();
    for i in 0..6 {
        sql = format!(
            "do $x{i}$ begin execute '{}'; end $x{i}$",
            sql.replace('\'', "''")
        );
    }
    let why = opaque(&sql);
    assert!(why.contains("nested more than"), "{why}");
}

#[test]
fn calls_of_functions_that_are_not_built_ins_are_listed_for_lookup() {
    assert_eq!(one("select wipe()").calls, vec!["wipe".to_string()]);
    assert_eq!(
        one("call app.purge(1)").calls,
        vec!["app.purge".to_string()]
    );
    assert_eq!(
        one("select count(*), lower(name), now() from t").calls,
        Vec::<String>::new()
    );
    assert_eq!(
        one("select pg_catalog.lower('x')").calls,
        Vec::<String>::new()
    );
    assert_eq!(
        one("select public.lower('x')").calls,
        vec!["public.lower".to_string()]
    );
    assert_eq!(
        one("create trigger tr after insert on t for each row execute function zap()").calls,
        vec!["zap".to_string()]
    );
    assert_eq!(
        one("do $$ begin perform cleanup(); end $$").calls,
        vec!["cleanup".to_string()]
    );
    let f = one("create or replace function Wipe() returns void language sql as 'select 1'");
    assert_eq!(f.defines.as_deref(), Some("wipe"));
    // what a definition from the catalog does
    let body = function_body(
        "CREATE OR REPLACE FUNCTION public.wipe()\n RETURNS void\n LANGUAGE plpgsql\nAS $function$\nbegin delete from t; perform other(); end\n$function$\n",
    );
    assert_eq!(body.classes, vec![C::Read, C::Write, C::DeleteWithoutWhere]);
    assert_eq!(body.calls, vec!["other".to_string()]);
    // trigger functions too (NEW, OLD, TG_OP are theirs)
    let body = function_body(
        "CREATE OR REPLACE FUNCTION public.wipe_trigger()\n RETURNS trigger\n LANGUAGE plpgsql\nAS $function$ begin if tg_op = 'INSERT' then delete from t; end if; return new; end $function$\n",
    );
    assert_eq!(body.opaque, None);
    assert!(
        body.classes.contains(&C::DeleteWithoutWhere),
        "{:?}",
        body.classes
    );
}

#[test]
fn destructive_ddl_and_state_changing_functions_have_classes() {
    use C::*;
    let table: &[(&str, C)] = &[
        ("drop owned by app cascade", DropTable),
        ("drop owned by app", DropSchema),
        ("alter table t drop column c", DropColumn),
        ("alter table t drop c cascade", DropColumn),
        ("drop type mood cascade", DropColumn),
        ("drop view v cascade", DropTable),
        ("drop function f cascade", DropTable),
        (
            "alter table t alter column c type int using 0",
            UpdateWithoutWhere,
        ),
        ("reassign owned by app to bob", RoleChange),
        ("select lo_from_bytea(0, 'x')", LargeObject),
        ("select lo_unlink(123)", Write),
        ("select lo_put(1, 0, 'x')", LargeObject),
        ("select nextval('s')", Sequence),
        ("select setval('s', 1)", Write),
        ("select pg_notify('c', 'x')", Notify),
        ("select pg_advisory_lock(1)", Lock),
        ("lock table t in access exclusive mode", Lock),
        (
            "select pg_create_logical_replication_slot('s', 'test_decoding')",
            DangerousFunction,
        ),
        (
            "select * from pg_logical_slot_peek_changes('s', null, null)",
            DangerousFunction,
        ),
        ("load 'auto_explain'", DangerousFunction),
        ("alter system set archive_command = 'x'", DangerousFunction),
        ("set default_transaction_read_only = off", ReadOnlyOff),
        ("set default_transaction_read_only to false", ReadOnlyOff),
        ("set session default_transaction_read_only = 0", ReadOnlyOff),
        ("reset default_transaction_read_only", ReadOnlyOff),
        ("set default_transaction_read_only to default", ReadOnlyOff),
        ("set transaction_read_only = off", ReadOnlyOff),
        (
            "set session characteristics as transaction read write",
            ReadOnlyOff,
        ),
        ("set transaction read write", ReadOnlyOff),
        ("begin read write", ReadOnlyOff),
        (
            "start transaction isolation level serializable, read write",
            ReadOnlyOff,
        ),
        (
            "select set_config('default_transaction_read_only', 'off', false)",
            ReadOnlyOff,
        ),
        (
            "alter role app set default_transaction_read_only = off",
            ReadOnlyOff,
        ),
    ];
    for (sql, class) in table {
        assert!(has(sql, *class), "{sql}: {:?}", one(sql).classes);
    }
    for sql in [
        "set default_transaction_read_only = on",
        "begin read only",
        "set transaction read only",
        "set search_path = x",
        "select set_config('default_transaction_read_only', 'on', false)",
    ] {
        assert!(!has(sql, ReadOnlyOff), "{sql}");
    }
    assert!(!has("alter table t add column c int", DropColumn));
    assert!(!has("drop table t restrict", DropColumn));
}

#[test]
fn backslashes_are_read_as_the_session_reads_them() {
    // With standard_conforming_strings off, \' does not end a string: the
    // same text hides a DELETE from a parser that assumes it on.
    let sql = "select 'x\\' as a, '; delete from t; select '' as b --'";
    let on = classify_with(sql, true);
    assert_eq!(on.len(), 1, "{on:?}");
    assert_eq!(on[0].classes, vec![C::Read]);
    let off = classify_with(sql, false);
    assert!(
        off.iter()
            .any(|c| c.classes.contains(&C::DeleteWithoutWhere)),
        "{off:?}"
    );
}

#[test]
fn copies_of_columns_out_of_reach_of_masking_are_noticed() {
    let copies = |sql: &str| one(sql).copies;
    assert_eq!(
        copies("create temp table x as select email from users"),
        vec!["email"]
    );
    assert_eq!(copies("select * into temp x from users"), vec!["*"]);
    assert_eq!(copies("insert into x select u from users u"), vec!["*"]);
    assert_eq!(
        copies("select pg_notify('c', email) from users"),
        vec!["email"]
    );
    assert_eq!(
        copies("select lo_from_bytea(0, convert_to(email, 'UTF8')) from users"),
        vec!["email"]
    );
    assert_eq!(
        copies("update users set name = email where id = 1"),
        vec!["email"]
    );
    assert!(
        copies("select email from users").is_empty(),
        "results go to the client, masked"
    );
    assert!(copies("update users set email = 'x' where id = 1").is_empty());
    assert!(copies("delete from users where email = 'x'").is_empty());
}
