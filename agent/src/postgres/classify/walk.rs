//! The walk over a whole statement tree: classes that can hide anywhere
//! (writes, DELETE/UPDATE without WHERE, dangerous functions), every
//! relation named anywhere (for masking computed columns), and the SQL
//! inside functions that run a query string (`query_to_xml('select ...')`),
//! classified as if it had been sent itself.

use std::collections::BTreeSet;

use pg_query::protobuf::AlterTableType;
use serde_json::Value;

use super::{RelName, is_dangerous_function};
use crate::gate::StatementClass as C;

/// How deep query strings inside query strings are followed; deeper ones
/// are `dangerous_function` (fail closed).
const MAX_DEPTH: u8 = 4;

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

fn node(kind: &str, body: &Value, f: &mut Facts) {
    let absent = |field: &str| body.get(field).is_none_or(Value::is_null);
    let set = &mut f.classes;
    match kind {
        "DeleteStmt" => {
            set.insert(C::Write);
            if absent("where_clause") {
                set.insert(C::DeleteWithoutWhere);
            }
        }
        "UpdateStmt" => {
            set.insert(C::Write);
            if absent("where_clause") {
                set.insert(C::UpdateWithoutWhere);
            }
        }
        "InsertStmt" | "MergeStmt" => {
            set.insert(C::Write);
        }
        "SelectStmt" => {
            let locking = body
                .get("locking_clause")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            if locking || !absent("into_clause") {
                set.insert(C::Write);
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
            let owner = i64::from(AlterTableType::AtChangeOwner as i32);
            if body.get("subtype").and_then(Value::as_i64) == Some(owner) {
                set.insert(C::RoleChange);
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

/// The string constant a function argument is, through casts and names.
fn constant(arg: &Value) -> Option<&str> {
    let n = arg.get("node")?;
    if let Some(c) = n.get("TypeCast").or_else(|| n.get("NamedArgExpr")) {
        return constant(c.get("arg")?);
    }
    n.pointer("/AConst/val/Sval/sval").and_then(Value::as_str)
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

fn func_call(body: &Value, f: &mut Facts) {
    let name = body
        .get("funcname")
        .and_then(Value::as_array)
        .and_then(|parts| parts.last())
        .and_then(|p| p.pointer("/node/String/sval"))
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase);
    let Some(name) = name else { return };
    if is_dangerous_function(&name) {
        f.classes.insert(C::DangerousFunction);
    }
    let args: &[Value] = body
        .get("args")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
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
                Some(t) => f.relations.push(RelName::parse(t)),
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
    let sql = arg.and_then(constant);
    match sql {
        Some(sql) if f.depth < MAX_DEPTH => {
            let Ok(parsed) = pg_query::parse(sql, 0) else {
                f.classes.insert(C::Unparseable);
                return;
            };
            let depth = f.depth;
            f.depth += 1;
            for raw in &parsed.protobuf.stmts {
                if let Some(node) = raw.stmt.as_ref().and_then(|n| n.node.as_ref()) {
                    super::statement(node, f);
                }
            }
            f.depth = depth;
        }
        _ => {
            f.classes.insert(C::DangerousFunction);
            f.reads_any = true;
        }
    }
}
