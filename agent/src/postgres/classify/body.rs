//! Code inside a statement: the bodies of DO blocks and of CREATE
//! FUNCTION / PROCEDURE (SQL and PL/pgSQL), and SQL given as a string to
//! run. Each statement found there is classified with the same code as a
//! statement the client sent, its classes added to the outer statement's.
//! What cannot be read (EXECUTE of a computed string, another language,
//! nesting deeper than the limit, a body that does not parse) makes the
//! statement `opaque`, with the reason.

use pg_query::{
    NodeEnum, ParserOptions,
    protobuf::{CreateFunctionStmt, DoStmt},
};
use serde_json::Value;

use super::{
    fold::{kind, string_constant},
    walk::{Facts, MAX_DEPTH},
};
use crate::gate::StatementClass as C;

/// Classifies every statement of `sql` (parsed with `options`) into `f`,
/// one level deeper. Too deep, or not parseable: opaque.
pub(super) fn nested_sql(sql: &str, options: ParserOptions, what: &str, f: &mut Facts) {
    if f.depth >= MAX_DEPTH {
        f.opaque(format!("{what} nested more than {MAX_DEPTH} levels deep"));
        return;
    }
    let parsed = match pg_query::parse(sql, options) {
        Ok(p) => p,
        Err(e) => {
            f.opaque(format!("{what} does not parse: {e}"));
            return;
        }
    };
    let depth = f.depth;
    f.depth += 1;
    for raw in &parsed.protobuf.stmts {
        let text = stmt_text(sql, raw.stmt_location, raw.stmt_len);
        if let Some(node) = raw.stmt.as_ref().and_then(|n| n.node.as_ref()) {
            super::statement(node, text, f);
        }
    }
    f.depth = depth;
}

/// The text of one statement of `sql`, by the parser's location and length.
pub(super) fn stmt_text(sql: &str, location: i32, len: i32) -> &str {
    let start = usize::try_from(location).unwrap_or(0);
    match usize::try_from(len) {
        Ok(0) | Err(_) => sql.get(start..),
        Ok(len) => sql.get(start..start.saturating_add(len)),
    }
    .unwrap_or(sql)
    .trim()
}

/// The string of a DefElem argument (`AS '...'`, `LANGUAGE x`).
fn def_string<'n>(args: &'n [pg_query::protobuf::Node], name: &str) -> Option<&'n str> {
    args.iter().find_map(|a| match a.node.as_ref() {
        Some(NodeEnum::DefElem(d)) if d.defname == name => match d.arg.as_ref()?.node.as_ref()? {
            NodeEnum::String(s) => Some(s.sval.as_str()),
            // CREATE FUNCTION's AS is a list ('body' or 'obj_file', 'symbol').
            NodeEnum::List(l) => l.items.first().and_then(|i| match i.node.as_ref() {
                Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
                _ => None,
            }),
            _ => None,
        },
        _ => None,
    })
}

/// A DO block: PL/pgSQL read statement by statement; another language is opaque.
pub(super) fn do_block(d: &DoStmt, f: &mut Facts) {
    let language = def_string(&d.args, "language").unwrap_or("plpgsql");
    if !language.eq_ignore_ascii_case("plpgsql") {
        f.opaque(format!("DO block in language {language}"));
        return;
    }
    let Some(body) = def_string(&d.args, "as") else {
        return;
    };
    // The same block as the parser reads it, wherever it was written.
    let sql = format!("DO '{}'", body.replace('\'', "''"));
    plpgsql(&sql, "DO block", f);
}

/// A CREATE FUNCTION / PROCEDURE (`text` is the statement): its body's
/// classes are the statement's. The function's own name, for the session's
/// record of functions it defined, is the result.
pub(super) fn create_function(c: &CreateFunctionStmt, text: &str, f: &mut Facts) -> Option<String> {
    let name = c.funcname.last().and_then(|n| match n.node.as_ref() {
        Some(NodeEnum::String(s)) => Some(s.sval.to_lowercase()),
        _ => None,
    });
    let what = format!(
        "body of {} {}",
        if c.is_procedure {
            "procedure"
        } else {
            "function"
        },
        name.as_deref().unwrap_or("?")
    );
    let language = def_string(&c.options, "language");
    match language.map(str::to_ascii_lowercase).as_deref() {
        // BEGIN ATOMIC / RETURN bodies are part of the tree, which the walk covers.
        None | Some("sql") if c.sql_body.is_some() => {}
        Some("sql") => match def_string(&c.options, "as") {
            Some(src) => nested_sql(src, ParserOptions::DEFAULT, &what, f),
            None => f.opaque(format!("{what} has no SQL")),
        },
        Some("plpgsql") if returns_trigger(c) => match def_string(&c.options, "as") {
            Some(src) => plpgsql(&trigger_body(src), &what, f),
            None => f.opaque(format!("{what} has no body")),
        },
        Some("plpgsql") => plpgsql(text, &what, f),
        Some(other) => f.opaque(format!("{what} is in language {other}")),
        None => f.opaque(format!("{what} names no language")),
    }
    name
}

/// Whether a function returns `trigger` or `event_trigger`.
fn returns_trigger(c: &CreateFunctionStmt) -> bool {
    let last = c
        .return_type
        .as_ref()
        .and_then(|t| t.names.last())
        .and_then(|n| match n.node.as_ref() {
            Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
            _ => None,
        });
    matches!(last, Some("trigger" | "event_trigger"))
}

/// A trigger function's body as a plain function with the trigger's own
/// variables declared (the grammar's trigger mode cannot be read back).
fn trigger_body(src: &str) -> String {
    let mut tag = String::from("$interlock$");
    while src.contains(&tag) {
        tag.insert(tag.len() - 1, '_');
    }
    format!(
        "CREATE FUNCTION interlock_trigger() RETURNS record LANGUAGE plpgsql AS {tag}\
         DECLARE new record; old record; tg_name name; tg_when text; tg_level text; tg_op text; \
         tg_relid oid; tg_relname name; tg_table_name name; tg_table_schema name; tg_nargs int; \
         tg_argv text[]; tg_event text; tg_tag text; BEGIN {src}; END {tag}"
    )
}

/// Reads a PL/pgSQL DO block or CREATE FUNCTION (`sql`) with the grammar
/// PostgreSQL compiles it with.
fn plpgsql(sql: &str, what: &str, f: &mut Facts) {
    if f.depth >= MAX_DEPTH {
        f.opaque(format!("{what} nested more than {MAX_DEPTH} levels deep"));
        return;
    }
    match pg_query::parse_plpgsql(sql) {
        Ok(tree) => {
            let depth = f.depth;
            f.depth += 1;
            walk_plpgsql(&tree, what, f);
            f.depth = depth;
        }
        Err(e) => f.opaque(format!("{what} does not parse as PL/pgSQL: {e}")),
    }
}

/// Every SQL expression and statement of a PL/pgSQL tree, and the dynamic
/// statements (EXECUTE, FOR ... IN EXECUTE, RETURN QUERY EXECUTE, OPEN
/// ... FOR EXECUTE), whose string must be a constant to be read.
fn walk_plpgsql(v: &Value, what: &str, f: &mut Facts) {
    match v {
        Value::Object(map) => {
            for (k, val) in map {
                match k.as_str() {
                    "PLpgSQL_expr" => expression(val, what, f),
                    "PLpgSQL_stmt_dynexecute" | "PLpgSQL_stmt_dynfors" => {
                        dynamic(val.get("query"), line(val), "EXECUTE", what, f);
                    }
                    "PLpgSQL_stmt_return_query" if val.get("dynquery").is_some() => {
                        dynamic(
                            val.get("dynquery"),
                            line(val),
                            "RETURN QUERY EXECUTE",
                            what,
                            f,
                        );
                    }
                    "PLpgSQL_stmt_open" if val.get("dynquery").is_some() => {
                        dynamic(
                            val.get("dynquery"),
                            line(val),
                            "OPEN ... FOR EXECUTE",
                            what,
                            f,
                        );
                    }
                    "PLpgSQL_stmt_commit" | "PLpgSQL_stmt_rollback" => {
                        f.classes.insert(C::Transaction);
                    }
                    _ => {}
                }
                walk_plpgsql(val, what, f);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| walk_plpgsql(i, what, f)),
        _ => {}
    }
}

fn line(v: &Value) -> i64 {
    v.get("lineno").and_then(Value::as_i64).unwrap_or(0)
}

/// One PL/pgSQL expression or embedded statement, parsed in its mode.
fn expression(e: &Value, what: &str, f: &mut Facts) {
    let Some(query) = e.get("query").and_then(Value::as_str) else {
        return;
    };
    let mode = e
        .get("parseMode")
        .and_then(Value::as_i64)
        .and_then(|m| i32::try_from(m).ok())
        .unwrap_or(0);
    // Depth stays: an expression is part of the body, not a level of its own.
    let depth = f.depth;
    f.depth = f.depth.saturating_sub(1);
    nested_sql(query, ParserOptions::from(mode), what, f);
    f.depth = depth;
}

/// The string a dynamic statement runs: read when it is a constant, else opaque.
fn dynamic(query: Option<&Value>, line: i64, verb: &str, what: &str, f: &mut Facts) {
    let text = query
        .and_then(|q| q.pointer("/PLpgSQL_expr/query"))
        .and_then(Value::as_str);
    let constant = text.and_then(expression_constant);
    match constant {
        Some(sql) => nested_sql(
            &sql,
            ParserOptions::DEFAULT,
            &format!("{verb} string in the {what}"),
            f,
        ),
        None => f.opaque(format!(
            "{verb} of a computed string at line {line} of the {what}"
        )),
    }
}

/// The string constant a PL/pgSQL expression is, if it is one.
fn expression_constant(expr: &str) -> Option<String> {
    let parsed = pg_query::parse(expr, ParserOptions::PLPGSQL_EXPR).ok()?;
    let [raw] = parsed.protobuf.stmts.as_slice() else {
        return None;
    };
    let tree = serde_json::to_value(raw.stmt.as_ref()?).ok()?;
    let ("SelectStmt", s) = kind(&tree)? else {
        return None;
    };
    let has_from = s
        .get("from_clause")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let targets = s.get("target_list").and_then(Value::as_array)?;
    match (has_from, targets.as_slice()) {
        (false, [only]) => string_constant(only.pointer("/node/ResTarget/val")?),
        _ => None,
    }
}

/// A SQL-language function body text, or a query string a function runs.
pub(super) fn query_string(sql: &str, what: &str, f: &mut Facts) {
    nested_sql(sql, ParserOptions::DEFAULT, what, f);
}
