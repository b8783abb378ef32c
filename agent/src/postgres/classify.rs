//! Statement classification with the real PostgreSQL grammar (libpg_query).
//! Statement-level classes come from the top node; classes that can hide
//! anywhere (writes, DELETE/UPDATE without WHERE, dangerous functions) come
//! from a walk over the whole tree, CTEs, subqueries and query strings run
//! by functions included. The walk also collects the relations a statement
//! names (for masking computed columns), and the text for records has its
//! secrets redacted.

use pg_query::NodeEnum;
use pg_query::protobuf::{ObjectType, VariableSetKind};

use crate::gate::StatementClass as C;

mod cache;
mod redact;
#[cfg(test)]
mod tests;
mod walk;

pub(crate) use cache::ClassifyCache;
pub use redact::redact;
use walk::{Facts, walk};

/// One statement of a query string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classified {
    /// The statement's own text (trimmed, without the separating `;`),
    /// secrets redacted: what records, approvals and policy `sql` patterns
    /// see. The client's own text is what goes upstream.
    pub text: String,
    /// Its classes, sorted and deduplicated.
    pub classes: Vec<C>,
    /// What its rows may come from.
    pub reads: Reads,
    /// Its rows come from a cursor or prepared statement made earlier
    /// (FETCH, EXECUTE, `cursor_to_xml`), which its own text does not show.
    pub indirect: bool,
    /// `COPY ... (FORMAT binary)`: rows interlock cannot mask.
    pub binary_copy: bool,
    /// The prepared statements or cursors it creates or drops.
    pub names: Option<NameChange>,
}

/// A change to the session's prepared statements or cursors made in SQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameChange {
    Prepare(String),
    /// `None`: DEALLOCATE ALL.
    Deallocate(Option<String>),
    Declare(String),
    /// `None`: CLOSE ALL.
    Close(Option<String>),
    /// DISCARD ALL: every prepared statement and cursor.
    DiscardAll,
}

fn name_change(node: &NodeEnum) -> Option<NameChange> {
    use NodeEnum as N;
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Some(match node {
        N::PrepareStmt(p) => NameChange::Prepare(p.name.clone()),
        N::DeallocateStmt(d) if d.isall => NameChange::Deallocate(None),
        N::DeallocateStmt(d) => NameChange::Deallocate(some(&d.name)),
        N::DeclareCursorStmt(d) => NameChange::Declare(d.portalname.clone()),
        N::ClosePortalStmt(c) => NameChange::Close(some(&c.portalname)),
        N::DiscardStmt(d) if d.target == pg_query::protobuf::DiscardMode::DiscardAll as i32 => {
            NameChange::DiscardAll
        }
        _ => return None,
    })
}

impl Classified {
    /// A request that is not SQL text (a FunctionCall), with `classes`.
    pub fn other(text: String, classes: Vec<C>) -> Classified {
        Classified {
            text,
            classes,
            reads: Reads::Any,
            indirect: false,
            binary_copy: false,
            names: None,
        }
    }
}

/// A relation named in a statement, as written (case-folded by the grammar).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RelName {
    pub schema: Option<String>,
    pub name: String,
}

impl RelName {
    /// A `regclass` string constant (`users`, `public.users`, `"Users"`).
    pub fn parse(text: &str) -> RelName {
        let part = |p: &str| match p.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
            Some(quoted) => quoted.replace("\"\"", "\""),
            None => p.to_lowercase(),
        };
        match text.rsplit_once('.') {
            Some((schema, name)) => RelName {
                schema: Some(part(schema.trim())),
                name: part(name.trim()),
            },
            None => RelName {
                schema: None,
                name: part(text.trim()),
            },
        }
    }
}

/// What a statement's rows may come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reads {
    /// These relations (tables, views, CTE names) and nothing else.
    Named(Vec<RelName>),
    /// Anything (unknown to interlock).
    Any,
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
                classes: vec![C::Unparseable],
                ..Classified::other(redact(sql.trim()).into_owned(), vec![])
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
        let mut f = Facts::default();
        let node = raw.stmt.as_ref().and_then(|n| n.node.as_ref());
        if let Some(node) = node {
            statement(node, &mut f);
        }
        if f.classes.is_empty() {
            f.classes.insert(C::Ddl);
        }
        let mut relations = f.relations;
        relations.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
        relations.dedup();
        out.push(Classified {
            text: redact(text).into_owned(),
            classes: f.classes.into_iter().collect(),
            reads: if f.reads_any || f.indirect {
                Reads::Any
            } else {
                Reads::Named(relations)
            },
            indirect: f.indirect,
            binary_copy: f.binary_copy,
            names: node.and_then(name_change),
        });
    }
    out
}

/// Classes of one top-level statement (or one run by a function).
fn statement(node: &NodeEnum, f: &mut Facts) {
    use NodeEnum as N;
    if let N::ExplainStmt(e) = node {
        f.classes.insert(C::Read);
        let inner = e.query.as_ref().and_then(|q| q.node.as_ref());
        match inner.filter(|_| explain_analyzes(&e.options)) {
            Some(inner) => statement(inner, f),
            // Plain EXPLAIN runs nothing, but VERBOSE plans quote constants.
            None => {
                if let Some(tree) = inner.and_then(|i| serde_json::to_value(i).ok()) {
                    let mut names = Facts::default();
                    walk(&tree, &mut names);
                    f.relations.extend(names.relations);
                }
            }
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
    f.classes.extend(class.iter().copied());
    // prost types always serialise; should one not, reads are unknown.
    match serde_json::to_value(node) {
        Ok(tree) => walk(&tree, f),
        Err(_) => f.reads_any = true,
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
