//! Statement classification with the real PostgreSQL grammar (libpg_query).
//! Statement-level classes come from the top node; classes that can hide
//! anywhere (writes, DELETE/UPDATE without WHERE, dangerous functions) come
//! from a walk over the whole tree, CTEs, subqueries and query strings run
//! by functions included. The walk also collects the relations a statement
//! names (for masking computed columns), and the text for records has its
//! secrets redacted.

use pg_query::NodeEnum;
use pg_query::protobuf::{DropBehavior, ObjectType, VariableSetKind};

use crate::gate::StatementClass as C;

mod body;
mod budget;
mod cache;
#[cfg(test)]
mod evasion_tests;
mod fold;
mod functions;
mod redact;
#[cfg(test)]
mod tests;
mod walk;

pub use budget::ClassifyBudget;
pub(crate) use budget::SessionClassifier;
pub(crate) use cache::ClassifyCache;
pub use functions::is_dangerous_function;
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
    /// Why it is `opaque`: what interlock could not read (the first such
    /// thing), for policy explanations and the audit trail.
    pub opaque: Option<String>,
    /// Functions it calls (or has run: triggers, operators) that are not
    /// PostgreSQL built-ins: `name` or `schema.name`. The session looks
    /// them up in the catalog and adds what their bodies do.
    pub calls: Vec<String>,
    /// The function or procedure it creates or replaces (`CREATE
    /// FUNCTION`), lower-cased last name part.
    pub defines: Option<String>,
    /// Columns it copies somewhere masking cannot follow (into a table,
    /// a notification, a large object, a setting): names as referenced,
    /// `*` for whole rows.
    pub copies: Vec<String>,
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
            opaque: None,
            calls: vec![],
            defines: None,
            copies: vec![],
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

/// Splits `sql` into statements and classifies each. A string the grammar
/// rejects is one `unparseable` statement; an empty string (or only
/// comments) has none.
pub fn classify(sql: &str) -> Vec<Classified> {
    classify_with(sql, true)
}

/// [`classify`] for a session whose `standard_conforming_strings` is
/// `standard` (off: backslashes escape in every string, as the server
/// reads it).
pub fn classify_with(sql: &str, standard: bool) -> Vec<Classified> {
    let options = if standard {
        pg_query::ParserOptions::DEFAULT
    } else {
        pg_query::ParserOptions::DISABLE_STANDARD_CONFORMING_STRINGS
    };
    let parsed = match pg_query::parse(sql, options) {
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
        let text = body::stmt_text(sql, raw.stmt_location, raw.stmt_len);
        let mut f = Facts::default();
        let node = raw.stmt.as_ref().and_then(|n| n.node.as_ref());
        let mut defines = None;
        if let Some(node) = node {
            if let NodeEnum::CreateFunctionStmt(c) = node {
                defines = c.funcname.last().and_then(|n| match n.node.as_ref() {
                    Some(NodeEnum::String(s)) => Some(s.sval.to_lowercase()),
                    _ => None,
                });
            }
            statement(node, text, &mut f);
        }
        if f.classes.is_empty() {
            f.classes.insert(C::Ddl);
        }
        let mut relations = f.relations;
        relations.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
        relations.dedup();
        // A whole-row reference (by alias or name) copies every column.
        let names: Vec<&str> = relations.iter().map(|r| r.name.as_str()).collect();
        let mut copies: Vec<String> = f
            .copies
            .iter()
            .map(|c| {
                if f.aliases.contains(c) || names.contains(&c.as_str()) {
                    "*".to_string()
                } else {
                    c.clone()
                }
            })
            .collect();
        copies.sort();
        copies.dedup();
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
            opaque: f.opaque,
            calls: f.calls.into_iter().collect(),
            defines,
            copies,
        });
    }
    out
}

/// What calling a function does, from its definition as
/// `pg_get_functiondef` prints it: its body's classes (not
/// `create_function`), calls, reads and why it is opaque.
pub fn function_body(def: &str) -> Classified {
    let mut f = Facts::default();
    match pg_query::parse(def, 0) {
        Ok(parsed) => match parsed
            .protobuf
            .stmts
            .first()
            .and_then(|s| s.stmt.as_ref())
            .and_then(|n| n.node.as_ref())
        {
            Some(NodeEnum::CreateFunctionStmt(c)) => {
                body::create_function(c, def, &mut f);
                if let Some(tree) = c
                    .sql_body
                    .as_ref()
                    .and_then(|b| serde_json::to_value(b).ok())
                {
                    walk(&tree, &mut f);
                }
            }
            _ => f.opaque("a function definition that is not CREATE FUNCTION".into()),
        },
        Err(e) => f.opaque(format!("a function definition that does not parse: {e}")),
    }
    let mut relations = f.relations;
    relations.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    relations.dedup();
    Classified {
        classes: f.classes.into_iter().collect(),
        reads: if f.reads_any || f.indirect {
            Reads::Any
        } else {
            Reads::Named(relations)
        },
        opaque: f.opaque,
        calls: f.calls.into_iter().collect(),
        ..Classified::other(String::new(), vec![])
    }
}

/// Classes of one top-level statement (or one run by a function, or
/// found in a body); `text` is its SQL.
fn statement(node: &NodeEnum, text: &str, f: &mut Facts) {
    use NodeEnum as N;
    if let N::ExplainStmt(e) = node {
        f.classes.insert(C::Read);
        let inner = e.query.as_ref().and_then(|q| q.node.as_ref());
        match inner.filter(|_| explain_analyzes(&e.options)) {
            Some(inner) => statement(inner, text, f),
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
        N::DoStmt(d) => {
            body::do_block(d, f);
            &[C::DoBlock]
        }
        N::CreateFunctionStmt(c) => {
            body::create_function(c, text, f);
            &[C::CreateFunction, C::Ddl]
        }
        N::PlassignStmt(_) => &[C::Read],
        N::GrantStmt(_) | N::GrantRoleStmt(_) => &[C::Grant],
        N::AlterDefaultPrivilegesStmt(_) => &[C::Grant, C::Ddl],
        N::AlterRoleSetStmt(a) => {
            if a.setstmt.as_ref().is_some_and(turns_read_only_off) {
                f.classes.insert(C::ReadOnlyOff);
            }
            &[C::RoleChange]
        }
        N::AlterDatabaseSetStmt(a) => {
            if a.setstmt.as_ref().is_some_and(turns_read_only_off) {
                f.classes.insert(C::ReadOnlyOff);
            }
            &[C::Ddl]
        }
        N::AlterSystemStmt(a) => {
            if a.setstmt.as_ref().is_some_and(turns_read_only_off) {
                f.classes.insert(C::ReadOnlyOff);
            }
            &[C::Ddl, C::DangerousFunction]
        }
        N::CreateRoleStmt(_)
        | N::AlterRoleStmt(_)
        | N::DropRoleStmt(_)
        | N::ReassignOwnedStmt(_) => &[C::RoleChange],
        N::AlterOwnerStmt(_) => &[C::RoleChange, C::Ddl],
        // Drops every object the roles own: their tables and schemas.
        N::DropOwnedStmt(_) => &[C::RoleChange, C::Ddl, C::DropTable, C::DropSchema],
        N::RenameStmt(r) if r.rename_type == ObjectType::ObjectRole as i32 => &[C::RoleChange],
        N::VariableSetStmt(v) => {
            if turns_read_only_off(v) {
                f.classes.insert(C::ReadOnlyOff);
            }
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
        N::TransactionStmt(t) => {
            if t.options.iter().any(read_write_option) {
                f.classes.insert(C::ReadOnlyOff);
            }
            &[C::Transaction]
        }
        N::DropdbStmt(_) => &[C::DropDatabase, C::Ddl],
        N::DropStmt(d) => {
            let t = d.remove_type;
            let is = |o: ObjectType| t == o as i32;
            // CASCADE reaches whatever depends on the object, tables
            // included; interlock does not follow the dependencies.
            if d.behavior == DropBehavior::DropCascade as i32 {
                f.classes.insert(C::DropTable);
                if is(ObjectType::ObjectType) || is(ObjectType::ObjectDomain) {
                    f.classes.insert(C::DropColumn);
                }
            }
            if is(ObjectType::ObjectTable) || is(ObjectType::ObjectForeignTable) {
                &[C::DropTable, C::Ddl]
            } else if is(ObjectType::ObjectSchema) {
                &[C::DropSchema, C::Ddl]
            } else {
                &[C::Ddl]
            }
        }
        N::NotifyStmt(_) => &[C::Session, C::Notify],
        N::LockStmt(_) => &[C::Session, C::Lock],
        N::LoadStmt(_) => &[C::Session, C::DangerousFunction],
        N::DiscardStmt(d) if d.target == pg_query::protobuf::DiscardMode::DiscardAll as i32 => {
            // DISCARD ALL resets every setting, read-only ones included.
            &[C::Session, C::ReadOnlyOff]
        }
        N::ListenStmt(_)
        | N::UnlistenStmt(_)
        | N::DiscardStmt(_)
        | N::PrepareStmt(_)
        | N::DeallocateStmt(_)
        | N::ExecuteStmt(_)
        | N::DeclareCursorStmt(_)
        | N::FetchStmt(_)
        | N::ClosePortalStmt(_)
        | N::CheckPointStmt(_)
        | N::VacuumStmt(_)
        | N::ClusterStmt(_)
        | N::ReindexStmt(_)
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

/// Whether a SET / RESET can turn read-only transactions off: a
/// read-only setting set to anything but on (DEFAULT, RESET and RESET ALL
/// included), or `SET [SESSION CHARACTERISTICS AS] TRANSACTION READ WRITE`.
fn turns_read_only_off(v: &pg_query::protobuf::VariableSetStmt) -> bool {
    use pg_query::protobuf::VariableSetKind as K;
    let kind = v.kind;
    if kind == K::VarResetAll as i32 {
        return true;
    }
    if kind == K::VarSetMulti as i32 {
        return v.args.iter().any(read_write_option);
    }
    if !functions::is_read_only_setting(&v.name) {
        return false;
    }
    if kind != K::VarSetValue as i32 {
        return true;
    }
    let value = v.args.first().and_then(|a| serde_json::to_value(a).ok());
    match value.as_ref().and_then(fold::constant) {
        Some(fold::Const::Str(s)) => !functions::is_on(&s),
        Some(fold::Const::Bool(b)) => !b,
        Some(fold::Const::Int(i)) => i == 0,
        _ => true,
    }
}

/// A `transaction_read_only` option set to false (`READ WRITE`).
fn read_write_option(o: &pg_query::protobuf::Node) -> bool {
    match o.node.as_ref() {
        Some(NodeEnum::DefElem(d)) if d.defname == "transaction_read_only" => {
            let value = d.arg.as_ref().and_then(|a| serde_json::to_value(a).ok());
            !matches!(
                value.as_ref().and_then(fold::constant),
                Some(fold::Const::Int(1) | fold::Const::Bool(true))
            )
        }
        _ => false,
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
