//! One approval, one execution. A statement that waited for approval and can be run again
//! without being sent again — `PREPARE p AS DELETE ...` then `EXECUTE p` in SQL, or a named
//! (or the unnamed) prepared statement of the extended protocol bound again and again — is
//! approved for one execution: the first `EXECUTE`/Bind after the approval runs, every later
//! one is decided again with the prepared statement's own text and classes (so it is held
//! again, unless a session or timed grant covers it).
//!
//! Names are the server's namespace of prepared statements, shared by SQL and the protocol.
//! An approved name is never forgotten on the client's word (a DEALLOCATE or Close the server
//! skipped in a failed transaction would otherwise free it): it stops applying only when the
//! session's statement table ([`super::names`], which follows the server's answers to Parse)
//! holds a later protocol Parse of the name, decided on its own. When interlock cannot tell
//! (a name reused in SQL, a statement table that lost the name), the execution is decided
//! again (fail closed).

use std::collections::HashMap;

use super::classify::Classified;
use crate::gate::StatementClass;

/// A prepared statement whose approval covered one execution.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Approved {
    /// The statement as approved (`PREPARE ...`, or the Parse's SQL).
    text: String,
    classes: Vec<StatementClass>,
    /// The statement table's id of a later Parse of the name, decided on its own.
    replaced_by: Option<u64>,
    /// Whether its one execution happened.
    spent: bool,
}

/// What to do about one execution.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Execution {
    /// Not an approved statement's: decide as usual.
    Plain,
    /// The approved execution: let it run (it is now spent).
    First,
    /// Decide this request instead (the prepared statement's text and classes).
    Again {
        text: String,
        classes: Vec<StatementClass>,
    },
}

/// The session's held-and-approved prepared statements, by name.
#[derive(Debug)]
pub(crate) struct Executions {
    approved: HashMap<String, Approved>,
    /// A statement name the job cannot know, bound in place of a refused Bind so the server
    /// fails it ("does not exist") at the same point.
    refused: String,
}

impl Default for Executions {
    fn default() -> Executions {
        let mut b = [0u8; 16];
        // Without randomness the name is still unusual; the job would have to guess it.
        let _ = getrandom::fill(&mut b);
        Executions {
            approved: HashMap::new(),
            refused: format!("interlock_refused_{}", hex::encode(b)),
        }
    }
}

/// Most names remembered; beyond it, further approvals cover no execution at all (every
/// execution is decided), which only ever asks more.
const MAX_NAMES: usize = 4096;

impl Executions {
    /// `name` was prepared from `text` with `classes` after a human approved it.
    pub(crate) fn approved(&mut self, name: &str, text: &str, classes: &[StatementClass]) {
        let known = self.approved.contains_key(name);
        self.approved.insert(
            name.to_string(),
            Approved {
                text: text.to_string(),
                classes: classes.to_vec(),
                replaced_by: None,
                spent: !known && self.approved.len() >= MAX_NAMES,
            },
        );
    }

    /// A protocol Parse of `name`, decided without a hold, became the statement table's
    /// definition `def` (the table undoes it if the server refuses the Parse).
    pub(crate) fn parsed(&mut self, name: &str, def: u64) {
        if let Some(a) = self.approved.get_mut(name) {
            a.replaced_by = Some(def);
        }
    }

    /// Whether no approved statement is remembered (then nothing needs checking).
    pub(crate) fn is_empty(&self) -> bool {
        self.approved.is_empty()
    }

    /// The name bound in place of a refused Bind.
    pub(crate) fn refused_name(&self) -> &str {
        &self.refused
    }

    /// An execution of `name` (a Bind, or SQL `EXECUTE`) about to be decided; `current` is the
    /// statement table's definition id for the name now (`None`: it has none). `First` spends
    /// the approval.
    pub(crate) fn execute(&mut self, name: &str, current: Option<u64>) -> Execution {
        let Some(a) = self.approved.get_mut(name) else {
            return Execution::Plain;
        };
        if current.is_some() && current == a.replaced_by {
            // A later definition, decided on its own, that the server accepted.
            return Execution::Plain;
        }
        if a.spent {
            Execution::Again {
                text: a.text.clone(),
                classes: a.classes.clone(),
            }
        } else {
            a.spent = true;
            Execution::First
        }
    }
}

/// The prepared statements an `EXECUTE` statement runs (anywhere in its tree: `EXPLAIN
/// ANALYZE EXECUTE p`, `CREATE TABLE ... AS EXECUTE p`), if `s` is one.
pub(crate) fn executed_names(s: &Classified) -> Vec<String> {
    if !s.indirect {
        return Vec::new();
    }
    let Ok(parsed) = pg_query::parse(&s.text, 0) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for raw in &parsed.protobuf.stmts {
        if let Some(node) = raw.stmt.as_ref().and_then(|n| n.node.as_ref())
            && let Ok(tree) = serde_json::to_value(node)
        {
            find_executes(&tree, &mut names);
        }
    }
    names
}

fn find_executes(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(o) => {
            for (k, child) in o {
                if k == "ExecuteStmt"
                    && let Some(n) = child.get("name").and_then(serde_json::Value::as_str)
                {
                    out.push(n.to_string());
                }
                find_executes(child, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|c| find_executes(c, out)),
        _ => {}
    }
}

/// The request to decide for an `EXECUTE` (`execute_text`) of a prepared statement approved
/// before: its classes with the prepared ones, its text naming what it runs.
pub(crate) fn again(
    execute_text: &str,
    execute_classes: &[StatementClass],
    prepared_text: &str,
    prepared_classes: &[StatementClass],
) -> (String, Vec<StatementClass>) {
    let mut classes: Vec<StatementClass> = execute_classes
        .iter()
        .chain(prepared_classes)
        .copied()
        .collect();
    classes.sort();
    classes.dedup();
    (
        format!("{execute_text} -- runs the prepared statement: {prepared_text}"),
        classes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::classify::classify;

    #[test]
    fn one_approval_covers_one_execution() {
        let mut e = Executions::default();
        assert_eq!(e.execute("p", None), Execution::Plain);
        e.approved("p", "PREPARE p AS DELETE FROM t", &[StatementClass::Write]);
        assert_eq!(e.execute("p", None), Execution::First);
        let Execution::Again { text, classes } = e.execute("p", None) else {
            panic!("a second execution ran without asking")
        };
        assert_eq!(text, "PREPARE p AS DELETE FROM t");
        assert_eq!(classes, [StatementClass::Write]);
        // Whatever definition the statement table adopted for the name meanwhile.
        assert!(matches!(e.execute("p", Some(7)), Execution::Again { .. }));
        // A later Parse of the name, decided on its own and accepted by the server.
        e.parsed("p", 9);
        assert_eq!(e.execute("p", Some(9)), Execution::Plain);
        // ... and undone when the server refused it: the approved one is back.
        assert!(matches!(e.execute("p", Some(7)), Execution::Again { .. }));
        e.parsed("other", 3);
        assert_eq!(e.execute("other", Some(3)), Execution::Plain);
        assert!(e.refused_name().starts_with("interlock_refused_"));
        assert_ne!(e.refused_name(), Executions::default().refused_name());
    }

    #[test]
    fn execute_statements_name_what_they_run() {
        let names = |sql: &str| executed_names(classify(sql).first().unwrap());
        assert_eq!(names("EXECUTE p"), ["p"]);
        assert_eq!(names("execute P(1, 'x')"), ["p"]);
        assert_eq!(names("EXPLAIN ANALYZE EXECUTE q"), ["q"]);
        assert_eq!(names("CREATE TABLE c AS EXECUTE r"), ["r"]);
        assert!(names("SELECT 1").is_empty());
        assert!(names("PREPARE p AS SELECT 1").is_empty());
    }
}
