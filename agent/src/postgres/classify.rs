//! Statement classification with the real PostgreSQL grammar (libpg_query).
//! Statement-level classes come from the top node; classes that can hide
//! anywhere (writes, DELETE/UPDATE without WHERE, dangerous functions) come
//! from a walk over the whole tree, CTEs and subqueries included.

use std::collections::BTreeSet;

use pg_query::NodeEnum;
use pg_query::protobuf::{AlterTableType, ObjectType, VariableSetKind};
use serde_json::Value;

use crate::gate::StatementClass as C;

#[cfg(test)]
mod tests;

/// One statement of a query string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classified {
    /// The statement's own text (trimmed, without the separating `;`).
    pub text: String,
    /// Its classes, sorted and deduplicated.
    pub classes: Vec<C>,
}

/// Functions whose call is `dangerous_function` (compared on the last name
/// part, lower-cased; every `dblink*` function too).
const DANGEROUS: &[&str] = &[
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_execute_server_program",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_stat_file",
    "pg_ls_dir",
    "pg_ls_logdir",
    "pg_ls_waldir",
    "pg_ls_tmpdir",
    "pg_ls_archive_statusdir",
    "pg_file_write",
    "pg_file_rename",
    "pg_file_unlink",
    "lo_import",
    "lo_export",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "set_config",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_switch_wal",
];

/// Whether calling `name` (possibly schema-qualified) is dangerous.
pub fn is_dangerous_function(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name).to_ascii_lowercase();
    last.starts_with("dblink") || DANGEROUS.contains(&last.as_str())
}

/// Splits `sql` into statements and classifies each. A string the grammar
/// rejects is one `unparseable` statement; an empty string (or only
/// comments) has none.
pub fn classify(sql: &str) -> Vec<Classified> {
    let parsed = match pg_query::parse(sql, 0) {
        Ok(p) => p,
        Err(_) => {
            return vec![Classified {
                text: sql.trim().to_string(),
                classes: vec![C::Unparseable],
            }];
        }
    };
    let mut out = Vec::new();
    for raw in &parsed.protobuf.stmts {
        let start = usize::try_from(raw.stmt_location).unwrap_or(0);
        let text = match usize::try_from(raw.stmt_len) {
            Ok(0) | Err(_) => sql.get(start..),
            Ok(len) => sql.get(start..start.saturating_add(len)),
        }
        .unwrap_or(sql)
        .trim();
        let mut set = BTreeSet::new();
        if let Some(node) = raw.stmt.as_ref().and_then(|n| n.node.as_ref()) {
            statement(node, &mut set);
        }
        if set.is_empty() {
            set.insert(C::Ddl);
        }
        out.push(Classified {
            text: text.to_string(),
            classes: set.into_iter().collect(),
        });
    }
    out
}

/// Classes of one top-level statement.
fn statement(node: &NodeEnum, set: &mut BTreeSet<C>) {
    use NodeEnum as N;
    if let N::ExplainStmt(e) = node {
        set.insert(C::Read);
        let inner = e.query.as_ref().and_then(|q| q.node.as_ref());
        if let Some(inner) = inner.filter(|_| explain_analyzes(&e.options)) {
            statement(inner, set);
        }
        return;
    }
    let class: &[C] = match node {
        N::SelectStmt(_) | N::VariableShowStmt(_) => &[C::Read],
        N::InsertStmt(_) | N::UpdateStmt(_) | N::DeleteStmt(_) | N::MergeStmt(_) => &[C::Write],
        N::CallStmt(_) | N::RefreshMatViewStmt(_) => &[C::Write],
        N::CreateTableAsStmt(_) => &[C::Ddl, C::Write],
        N::CopyStmt(c) => match (c.is_program, c.is_from) {
            (true, true) => &[C::CopyProgram, C::CopyFrom, C::Write],
            (true, false) => &[C::CopyProgram, C::CopyTo, C::Read],
            (false, true) => &[C::CopyFrom, C::Write],
            (false, false) => &[C::CopyTo, C::Read],
        },
        N::TruncateStmt(_) => &[C::Truncate, C::Write],
        N::DoStmt(_) => &[C::DoBlock],
        N::CreateFunctionStmt(_) => &[C::CreateFunction, C::Ddl],
        N::GrantStmt(_) | N::GrantRoleStmt(_) => &[C::Grant],
        N::AlterDefaultPrivilegesStmt(_) => &[C::Grant, C::Ddl],
        N::CreateRoleStmt(_)
        | N::AlterRoleStmt(_)
        | N::AlterRoleSetStmt(_)
        | N::DropRoleStmt(_)
        | N::ReassignOwnedStmt(_) => &[C::RoleChange],
        N::AlterOwnerStmt(_) | N::DropOwnedStmt(_) => &[C::RoleChange, C::Ddl],
        N::RenameStmt(r) if r.rename_type == ObjectType::ObjectRole as i32 => &[C::RoleChange],
        N::VariableSetStmt(v) => {
            let role = matches!(v.name.as_str(), "role" | "session_authorization");
            let reset_all = v.kind == VariableSetKind::VarResetAll as i32;
            if role || reset_all {
                // RESET ALL also resets the role.
                if reset_all {
                    &[C::SetRole, C::Session]
                } else {
                    &[C::SetRole]
                }
            } else {
                &[C::Session]
            }
        }
        N::TransactionStmt(_) => &[C::Transaction],
        N::DropdbStmt(_) => &[C::DropDatabase, C::Ddl],
        N::DropStmt(d) => {
            let t = d.remove_type;
            if t == ObjectType::ObjectTable as i32 || t == ObjectType::ObjectForeignTable as i32 {
                &[C::DropTable, C::Ddl]
            } else if t == ObjectType::ObjectSchema as i32 {
                &[C::DropSchema, C::Ddl]
            } else {
                &[C::Ddl]
            }
        }
        N::ListenStmt(_)
        | N::UnlistenStmt(_)
        | N::NotifyStmt(_)
        | N::DiscardStmt(_)
        | N::PrepareStmt(_)
        | N::DeallocateStmt(_)
        | N::ExecuteStmt(_)
        | N::DeclareCursorStmt(_)
        | N::FetchStmt(_)
        | N::ClosePortalStmt(_)
        | N::LoadStmt(_)
        | N::CheckPointStmt(_)
        | N::VacuumStmt(_)
        | N::ClusterStmt(_)
        | N::ReindexStmt(_)
        | N::LockStmt(_)
        | N::ConstraintsSetStmt(_) => &[C::Session],
        _ => &[C::Ddl],
    };
    set.extend(class.iter().copied());
    // Fail closed: a tree we cannot serialise gets no extra classes only if
    // serialisation fails, which prost types never do.
    if let Ok(tree) = serde_json::to_value(node) {
        walk(&tree, set);
    }
}

/// Whether EXPLAIN's options include ANALYZE (not `ANALYZE false`).
fn explain_analyzes(options: &[pg_query::protobuf::Node]) -> bool {
    options.iter().any(|o| match o.node.as_ref() {
        Some(NodeEnum::DefElem(d)) if d.defname == "analyze" => {
            match d.arg.as_ref().and_then(|a| a.node.as_ref()) {
                Some(NodeEnum::Boolean(b)) => b.boolval,
                Some(NodeEnum::String(s)) => {
                    !matches!(s.sval.to_ascii_lowercase().as_str(), "false" | "off" | "0")
                }
                Some(NodeEnum::Integer(i)) => i.ival != 0,
                _ => true,
            }
        }
        _ => false,
    })
}

/// Visits every node of the serialised tree (prost's oneof `Node` serialises
/// as `{"TypeName": {...}}`, so node types are object keys).
fn walk(v: &Value, set: &mut BTreeSet<C>) {
    match v {
        Value::Object(map) => {
            for (key, val) in map {
                node(key, val, set);
                walk(val, set);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| walk(i, set)),
        _ => {}
    }
}

fn node(kind: &str, body: &Value, set: &mut BTreeSet<C>) {
    let absent = |field: &str| body.get(field).is_none_or(Value::is_null);
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
        "FuncCall" => func_call(body, set),
        // CALL holds its FuncCall directly, not as a Node.
        "CallStmt" => {
            if let Some(call) = body.get("funccall") {
                func_call(call, set);
            }
        }
        "AlterTableCmd" => {
            let owner = i64::from(AlterTableType::AtChangeOwner as i32);
            if body.get("subtype").and_then(Value::as_i64) == Some(owner) {
                set.insert(C::RoleChange);
            }
        }
        _ => {}
    }
}

fn func_call(body: &Value, set: &mut BTreeSet<C>) {
    let name = body
        .get("funcname")
        .and_then(Value::as_array)
        .and_then(|parts| parts.last())
        .and_then(|p| p.pointer("/node/String/sval"))
        .and_then(Value::as_str);
    if name.is_some_and(is_dangerous_function) {
        set.insert(C::DangerousFunction);
    }
}
