//! Calls resolved through the server's catalog: a function or procedure a
//! statement calls that is not a PostgreSQL built-in is looked up on
//! interlock's own catalog connection (every function of that name, in
//! any schema when the call names none: overloads and search paths are not
//! resolved, so the worst of them counts) and classified by its body
//! (`pg_get_functiondef`), following the calls in it up to
//! [`MAX_CALL_DEPTH`] deep. What cannot be read is `opaque`: a C or other
//! language function, an aggregate, a name the catalog does not show (one
//! created in the client's open transaction), a lookup that failed.
//!
//! Results are cached for the session and forgotten after any statement
//! of it that may change functions (DDL, DO blocks, opaque statements), so
//! the same text can mean something else after `CREATE OR REPLACE
//! FUNCTION`. Functions the session itself created or replaced also count
//! with the body it gave them, so one replaced inside a transaction the
//! catalog connection cannot see yet is judged by both versions.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use super::{
    catalog::Catalog,
    classify::{Classified, Reads, RelName, function_body},
};
use crate::gate::StatementClass as C;

/// How many calls deep function bodies are followed; deeper is opaque.
pub(crate) const MAX_CALL_DEPTH: usize = 8;

/// What calling one function (all functions of one name) does.
#[derive(Clone, Debug, Default)]
pub(crate) struct FnFacts {
    classes: BTreeSet<C>,
    opaque: Option<String>,
    calls: Vec<String>,
    relations: Vec<RelName>,
    reads_any: bool,
}

impl FnFacts {
    fn opaque(why: String) -> FnFacts {
        FnFacts {
            classes: [C::Opaque].into(),
            opaque: Some(why),
            ..FnFacts::default()
        }
    }

    fn add(&mut self, body: Classified) {
        self.classes.extend(body.classes);
        if self.opaque.is_none() {
            self.opaque = body.opaque;
        }
        self.calls.extend(body.calls);
        match body.reads {
            Reads::Named(r) => self.relations.extend(r),
            Reads::Any => self.reads_any = true,
        }
    }

    /// What a statement's `CREATE FUNCTION` says the function does.
    pub(crate) fn of_definition(s: &Classified) -> FnFacts {
        let mut f = FnFacts::default();
        f.add(s.clone());
        // The statement's own classes, not the body's.
        f.classes.remove(&C::CreateFunction);
        f
    }
}

/// The session's cache of looked-up functions.
#[derive(Default)]
pub(crate) struct Functions {
    /// By lookup name (`f`, `schema.f`).
    known: HashMap<String, Arc<FnFacts>>,
    /// Created or replaced by this session, by name (last part).
    defined: HashMap<String, FnFacts>,
    /// Lookups that failed while resolving the current statement.
    failed: HashMap<String, Arc<FnFacts>>,
}

impl Functions {
    /// Forgets what was looked up (functions may have changed).
    pub(crate) fn forget(&mut self) {
        self.known.clear();
    }

    /// Notes a function this session created or replaced.
    pub(crate) fn define(&mut self, name: &str, facts: FnFacts) {
        let entry = self.defined.entry(name.to_string()).or_default();
        entry.classes.extend(facts.classes);
        if entry.opaque.is_none() {
            entry.opaque = facts.opaque;
        }
        entry.calls.extend(facts.calls);
        entry.relations.extend(facts.relations);
        entry.reads_any |= facts.reads_any;
    }
}

/// A `'...'` literal whatever `standard_conforming_strings` is.
fn literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

impl Catalog {
    /// Adds to `s` what the functions it calls do, looking them up (and
    /// the functions they call) in the catalog. Fails closed: whatever
    /// cannot be looked up makes the statement opaque.
    pub(crate) async fn resolve_calls(&mut self, s: &mut Classified) {
        if s.calls.is_empty() {
            return;
        }
        self.functions.failed.clear();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut frontier: Vec<String> = s.calls.clone();
        let mut facts = FnFacts::default();
        for _ in 0..MAX_CALL_DEPTH {
            frontier.retain(|n| seen.insert(n.clone()));
            if frontier.is_empty() {
                break;
            }
            self.look_up(&frontier).await;
            let mut next = Vec::new();
            for name in &frontier {
                let last = name.rsplit('.').next().unwrap_or(name);
                let found = self
                    .functions
                    .known
                    .get(name)
                    .or_else(|| self.functions.failed.get(name))
                    .cloned();
                for f in found
                    .iter()
                    .map(|a| a.as_ref())
                    .chain(self.functions.defined.get(last))
                {
                    facts.classes.extend(f.classes.iter().copied());
                    if facts.opaque.is_none() {
                        facts.opaque.clone_from(&f.opaque);
                    }
                    facts.relations.extend(f.relations.iter().cloned());
                    facts.reads_any |= f.reads_any;
                    next.extend(f.calls.iter().cloned());
                }
            }
            frontier = next;
        }
        frontier.retain(|n| !seen.contains(n));
        if let Some(deep) = frontier.first() {
            facts.classes.insert(C::Opaque);
            facts.opaque.get_or_insert(format!(
                "calls nest more than {MAX_CALL_DEPTH} functions deep (down to {deep})"
            ));
        }
        let mut classes: BTreeSet<C> = s.classes.iter().copied().collect();
        classes.extend(facts.classes);
        s.classes = classes.into_iter().collect();
        if s.opaque.is_none() {
            s.opaque = facts.opaque;
        }
        s.reads = match std::mem::replace(&mut s.reads, Reads::Any) {
            Reads::Named(mut r) if !facts.reads_any => {
                r.extend(facts.relations);
                Reads::Named(r)
            }
            _ => Reads::Any,
        };
    }

    /// Fetches and classifies the functions of `names` not cached yet.
    async fn look_up(&mut self, names: &[String]) {
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| {
                !self.functions.known.contains_key(*n) && !self.functions.failed.contains_key(*n)
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        let conds: Vec<String> = missing
            .iter()
            .map(|n| match n.rsplit_once('.') {
                Some((schema, name)) => {
                    let schema = schema.rsplit('.').next().unwrap_or(schema);
                    format!(
                        "(p.proname = {} and n.nspname = {})",
                        literal(name),
                        literal(schema)
                    )
                }
                None => format!("p.proname = {}", literal(n)),
            })
            .collect();
        let sql = format!(
            "select n.nspname, p.proname, l.lanname, p.prokind, \
               case when l.lanname in ('sql', 'plpgsql') and p.prokind in ('f', 'p') \
                 then pg_catalog.pg_get_functiondef(p.oid) end \
             from pg_catalog.pg_proc p \
             join pg_catalog.pg_namespace n on n.oid = p.pronamespace \
             join pg_catalog.pg_language l on l.oid = p.prolang \
             where {}",
            conds.join(" or ")
        );
        let rows = match self.rows(sql).await {
            Ok(rows) => rows,
            Err(e) => {
                // Not cached: the next statement tries again.
                for n in missing {
                    let why = format!("function {n} could not be looked up: {e}");
                    self.functions
                        .failed
                        .insert(n.clone(), Arc::new(FnFacts::opaque(why)));
                }
                return;
            }
        };
        let cell =
            |r: &Vec<Option<String>>, i: usize| r.get(i).cloned().flatten().unwrap_or_default();
        for n in missing {
            let (schema, name) = match n.rsplit_once('.') {
                Some((s, name)) => (Some(s.rsplit('.').next().unwrap_or(s)), name),
                None => (None, n.as_str()),
            };
            let mine: Vec<&Vec<Option<String>>> = rows
                .iter()
                .filter(|r| cell(r, 1) == name && schema.is_none_or(|s| cell(r, 0) == s))
                .collect();
            let mut facts = FnFacts::default();
            if mine.is_empty() && !self.functions.defined.contains_key(name) {
                facts = FnFacts::opaque(format!(
                    "function {n} is not in the catalog (created in an open transaction?)"
                ));
            }
            for r in mine {
                let (nsp, lang, kind) = (cell(r, 0), cell(r, 2), cell(r, 3));
                if nsp == "pg_catalog" || nsp == "information_schema" {
                    continue;
                }
                let qualified = format!("{nsp}.{name}");
                match (kind.as_str(), r.get(4).cloned().flatten()) {
                    ("a" | "w", _) => facts.add_opaque(format!(
                        "{qualified} is a user-defined aggregate or window function"
                    )),
                    (_, Some(def)) => facts.add(function_body(&def)),
                    (_, None) => facts.add_opaque(format!("{qualified} is in language {lang}")),
                }
            }
            self.functions.known.insert(n.clone(), Arc::new(facts));
        }
    }
}

impl FnFacts {
    fn add_opaque(&mut self, why: String) {
        self.classes.insert(C::Opaque);
        self.opaque.get_or_insert(why);
    }
}
