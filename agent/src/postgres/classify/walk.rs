//! The walk over a whole statement tree: classes that can hide anywhere
//! (writes, DELETE/UPDATE/MERGE actions whose filter keeps no row out,
//! state-changing and dangerous functions), every relation named anywhere
//! (for masking computed columns), the functions called that are not
//! known built-ins (resolved through the catalog before the statement is
//! decided), and the SQL inside functions that run a query string
//! (`query_to_xml('select ...')`), classified as if it had been sent itself.

use std::collections::BTreeSet;

use pg_query::protobuf::{AlterTableType, CmdType, MergeMatchKind};
use serde_json::Value;

use super::{
    RelName,
    body::query_string,
    fold::{Target, filters, filters_unmatched, string_constant},
    functions::{self, FunctionKind},
};
use crate::gate::StatementClass as C;

/// How deep code inside code (query strings, bodies, EXECUTE strings) is
/// followed; deeper is `opaque` (fail closed).
pub(super) const MAX_DEPTH: u8 = 4;

/// What a walk found.
#[derive(Debug, Default)]
pub(super) struct Facts {
    pub(super) classes: BTreeSet<C>,
    pub(super) relations: Vec<RelName>,
    /// Reads something no name in the text says (a whole schema, a table
    /// given by an expression, a cursor).
    pub(super) reads_any: bool,
    /// Rows come from a cursor or prepared statement made earlier.
    pub(super) indirect: bool,
    /// `COPY ... (FORMAT binary)`.
    pub(super) binary_copy: bool,
    /// Query-string nesting level of this walk.
    pub(super) depth: u8,
    /// Why it is `opaque` (the first reason found).
    pub(super) opaque: Option<String>,
    /// Functions called that are not known built-ins (`name` or
    /// `schema.name`, lower-cased as the grammar folds them).
    pub(super) calls: BTreeSet<String>,
    /// Columns whose values the statement copies somewhere else than to
    /// the client (`*` for all of a row, a relation's name for a whole-row
    /// reference): into a table, a notification, a large object, a setting.
    pub(super) copies: BTreeSet<String>,
    /// Aliases of relations (a copied name equal to one copies a whole row).
    pub(super) aliases: BTreeSet<String>,
}

impl Facts {
    /// Marks the statement `opaque`: interlock cannot tell what it does.
    pub(super) fn opaque(&mut self, why: String) {
        self.classes.insert(C::Opaque);
        self.opaque.get_or_insert(why);
    }
}

/// Visits every node of the serialised tree (prost's oneof `Node` serialises
/// as `{"TypeName": {...}}`, so node types are object keys).
pub(super) fn walk(v: &Value, f: &mut Facts) {
    match v {
        Value::Object(map) => {
            // RangeVars are also held directly (INSERT/UPDATE/DELETE
            // targets), not as `{"RangeVar": ...}`: recognise them by shape.
            if let (Some(Value::String(rel)), true) =
                (map.get("relname"), map.contains_key("relpersistence"))
                && !rel.is_empty()
            {
                let schema = map
                    .get("schemaname")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty());
                f.relations.push(RelName {
                    schema: schema.map(str::to_string),
                    name: rel.clone(),
                });
                if let Some(alias) = map
                    .get("alias")
                    .and_then(|a| a.get("aliasname"))
                    .and_then(Value::as_str)
                {
                    f.aliases.insert(alias.to_string());
                }
            }
            for (key, val) in map {
                node(key, val, f);
                walk(val, f);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| walk(i, f)),
        _ => {}
    }
}

fn items<'v>(v: &'v Value, field: &str) -> Vec<&'v Value> {
    v.get(field)
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn node(kind: &str, body: &Value, f: &mut Facts) {
    let absent = |field: &str| body.get(field).is_none_or(Value::is_null);
    let set = &mut f.classes;
    match kind {
        "DeleteStmt" => {
            set.insert(C::Write);
            let target = Target::of(body.get("relation"), &items(body, "using_clause"));
            if !filters(body.get("where_clause"), &target) {
                set.insert(C::DeleteWithoutWhere);
            }
        }
        "UpdateStmt" => {
            set.insert(C::Write);
            let target = Target::of(body.get("relation"), &items(body, "from_clause"));
            if !filters(body.get("where_clause"), &target) {
                set.insert(C::UpdateWithoutWhere);
            }
            copied(body.get("target_list"), f);
        }
        "InsertStmt" => {
            set.insert(C::Write);
            copied(body.get("select_stmt"), f);
        }
        "MergeStmt" => {
            set.insert(C::Write);
            merge(body, set);
            copied(body.get("merge_when_clauses"), f);
        }
        "CreateTableAsStmt" => copied(body.get("query"), f),
        "NotifyStmt" => {
            set.insert(C::Notify);
        }
        "CreateTrigStmt" | "CreateEventTrigStmt" => called(body.get("funcname"), f),
        "CreateCastStmt" => called(body.pointer("/func/objname"), f),
        "DefineStmt" => {
            // CREATE OPERATOR / AGGREGATE / TYPE: the functions they will run.
            for d in items(body, "definition") {
                let Some(def) = d.pointer("/node/DefElem") else {
                    continue;
                };
                if let Some(names) = def.pointer("/arg/node/TypeName/names") {
                    called(Some(names), f);
                }
            }
        }
        "LoadStmt" | "AlterSystemStmt" => {
            set.insert(C::DangerousFunction);
        }
        "SelectStmt" => {
            let locking = body
                .get("locking_clause")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            if locking || !absent("into_clause") {
                set.insert(C::Write);
            }
            if !absent("into_clause") {
                copied(body.get("target_list"), f);
            }
        }
        "FuncCall" => func_call(body, f),
        // CALL holds its FuncCall directly, not as a Node.
        "CallStmt" => {
            if let Some(call) = body.get("funccall") {
                func_call(call, f);
            }
        }
        "AlterTableCmd" => {
            let subtype = body.get("subtype").and_then(Value::as_i64);
            let is = |t: AlterTableType| subtype == Some(i64::from(t as i32));
            if is(AlterTableType::AtChangeOwner) {
                set.insert(C::RoleChange);
            }
            if is(AlterTableType::AtDropColumn) {
                set.insert(C::DropColumn);
            }
            // ALTER COLUMN ... TYPE ... USING expr sets every row's value.
            if is(AlterTableType::AtAlterColumnType)
                && body
                    .pointer("/def/node/ColumnDef/raw_default")
                    .is_some_and(|d| !d.is_null())
            {
                set.insert(C::Write);
                set.insert(C::UpdateWithoutWhere);
            }
        }
        "FetchStmt" | "ExecuteStmt" => f.indirect = true,
        "CopyStmt" => {
            let binary = body
                .get("options")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|o| o.pointer("/node/DefElem"))
                .any(|d| {
                    d.get("defname").and_then(Value::as_str) == Some("format")
                        && d.pointer("/arg/node/String/sval")
                            .and_then(Value::as_str)
                            .is_some_and(|v| v.eq_ignore_ascii_case("binary"))
                });
            f.binary_copy |= binary;
        }
        _ => {}
    }
}

/// The string constant a function argument is, through casts, names and `||`.
fn constant(arg: &Value) -> Option<String> {
    let n = arg.get("node")?;
    if let Some(c) = n.get("NamedArgExpr") {
        return constant(c.get("arg")?);
    }
    string_constant(arg)
}

/// Argument `pos`, or the one passed by name as `name`. With other named
/// arguments in play the position means nothing: `None` (fail closed).
fn argument<'a>(args: &'a [Value], pos: usize, name: &str) -> Option<&'a Value> {
    let named = |a: &&Value| a.pointer("/node/NamedArgExpr").is_some();
    if let Some(a) = args
        .iter()
        .find(|a| a.pointer("/node/NamedArgExpr/name").and_then(Value::as_str) == Some(name))
    {
        return Some(a);
    }
    let a = args.get(pos)?;
    (!named(&a)).then_some(a)
}

/// MERGE actions: a `WHEN MATCHED THEN DELETE/UPDATE` is a delete/update
/// whose row filter is the join condition (and its own AND condition).
fn merge(body: &Value, set: &mut BTreeSet<C>) {
    let source: Vec<&Value> = body.get("source_relation").into_iter().collect();
    let target = Target::of(body.get("relation"), &source);
    let join = body.get("join_condition");
    for w in items(body, "merge_when_clauses") {
        let Some(w) = w.pointer("/node/MergeWhenClause") else {
            continue;
        };
        let int = |k: &str| w.get(k).and_then(Value::as_i64).unwrap_or(0);
        let matched = int("match_kind");
        let joined = if matched == MergeMatchKind::MergeWhenMatched as i64 {
            filters(join, &target)
        } else if matched == MergeMatchKind::MergeWhenNotMatchedBySource as i64 {
            filters_unmatched(join, &target)
        } else {
            continue;
        };
        let unfiltered = !joined && !filters(w.get("condition"), &target);
        let cmd = int("command_type");
        if cmd == CmdType::CmdDelete as i64 && unfiltered {
            set.insert(C::DeleteWithoutWhere);
        } else if cmd == CmdType::CmdUpdate as i64 && unfiltered {
            set.insert(C::UpdateWithoutWhere);
        }
    }
}

/// Every column referenced under `v`, as copied data.
fn copied(v: Option<&Value>, f: &mut Facts) {
    fn go(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(map) => {
                if let Some(c) = map.get("ColumnRef") {
                    let last = c
                        .get("fields")
                        .and_then(Value::as_array)
                        .and_then(|f| f.last())
                        .map(|f| {
                            f.pointer("/node/String/sval")
                                .and_then(Value::as_str)
                                .unwrap_or("*")
                                .to_string()
                        });
                    if let Some(name) = last {
                        out.insert(name);
                    }
                }
                if map.contains_key("A_Star") || map.contains_key("AStar") {
                    out.insert("*".into());
                }
                map.values().for_each(|x| go(x, out));
            }
            Value::Array(items) => items.iter().for_each(|x| go(x, out)),
            _ => {}
        }
    }
    if let Some(v) = v {
        go(v, &mut f.copies);
    }
}

/// A function named by a list of name parts, which the statement will
/// have run (a trigger's, an operator's, a cast's).
fn called(names: Option<&Value>, f: &mut Facts) {
    let parts: Vec<&str> = names
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.pointer("/node/String/sval").and_then(Value::as_str))
        .collect();
    if let Some(name) = functions::needs_lookup(&parts) {
        f.calls.insert(name);
    }
}

fn func_call(body: &Value, f: &mut Facts) {
    let parts: Vec<&str> = body
        .get("funcname")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.pointer("/node/String/sval").and_then(Value::as_str))
        .collect();
    let Some(name) = parts.last().map(|n| n.to_ascii_lowercase()) else {
        return;
    };
    if let Some(lookup) = functions::needs_lookup(&parts) {
        f.calls.insert(lookup);
    }
    let args: &[Value] = body
        .get("args")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for class in functions::classes_of(&name) {
        f.classes.insert(*class);
    }
    if functions::moves_data(&name) {
        copied(body.get("args"), f);
    }
    if functions::kind(&name) == Some(FunctionKind::SetConfig) {
        let setting = argument(args, 0, "setting_name").and_then(constant);
        if setting.is_none_or(|s| functions::is_read_only_setting(&s)) {
            let value = argument(args, 1, "new_value").and_then(constant);
            if value.is_none_or(|v| !functions::is_on(&v)) {
                f.classes.insert(C::ReadOnlyOff);
            }
        }
    }
    match name.as_str() {
        "query_to_xml" | "query_to_xmlschema" | "query_to_xml_and_xmlschema" | "ts_stat" => {
            inner_query(argument(args, 0, "query"), f);
        }
        // ts_rewrite(tsquery, select text); the three-tsquery form runs nothing.
        "ts_rewrite" if args.len() == 2 => inner_query(argument(args, 1, "select"), f),
        "cursor_to_xml" | "cursor_to_xmlschema" => {
            f.indirect = true;
            f.reads_any = true;
        }
        "table_to_xml" | "table_to_xmlschema" | "table_to_xml_and_xmlschema" => {
            match argument(args, 0, "tbl").and_then(constant) {
                Some(t) => f.relations.push(RelName::parse(&t)),
                None => {
                    f.classes.insert(C::DangerousFunction);
                    f.reads_any = true;
                }
            }
        }
        n if n.starts_with("schema_to_xml") || n.starts_with("database_to_xml") => {
            f.reads_any = true;
        }
        _ => {}
    }
}

/// The SQL a function will run: classified and walked as part of this
/// statement when it is a constant; otherwise nobody can say what it does.
fn inner_query(arg: Option<&Value>, f: &mut Facts) {
    match arg.and_then(constant) {
        Some(sql) if pg_query::parse(&sql, 0).is_err() => {
            f.classes.insert(C::Unparseable);
        }
        Some(sql) => query_string(&sql, "query string", f),
        None => {
            f.classes.insert(C::DangerousFunction);
            f.opaque("a function runs a computed query string".into());
            f.reads_any = true;
        }
    }
}
