//! The session's prepared statements and portals as interlock knows them:
//! what each was decided as, and its result columns once described. Every
//! definition gets an id, so a late RowDescription updates the definition
//! it answers, not a newer one of the same name. Names made in SQL
//! (PREPARE, DECLARE) or by functions are not known here: executing them
//! falls back to every mask rule that could apply.

use std::{collections::HashMap, sync::Arc};

use super::{
    classify::NameChange,
    mask::{ResultColumns, RowPlan},
    message::WireStr,
    pending::StmtInfo,
};

/// A prepared statement.
#[derive(Clone, Debug)]
pub(crate) struct StmtDef {
    pub(crate) id: u64,
    pub(crate) info: StmtInfo,
    /// From a Describe of the statement (formats not yet chosen).
    pub(crate) columns: Option<ResultColumns>,
    /// Parameter type OIDs (from Parse, completed by ParameterDescription).
    pub(crate) param_types: Vec<u32>,
    /// The plan last built for a Bind, by the result formats it asked for.
    plan: Option<(Vec<i16>, Arc<RowPlan>)>,
}

impl StmtDef {
    /// The columns and masking plan for a Bind asking for `formats`.
    pub(crate) fn bound(&mut self, formats: &[i16]) -> (ResultColumns, Option<Arc<RowPlan>>) {
        let cols = match &self.columns {
            Some(c) => c.with_formats(formats),
            None => ResultColumns::undescribed(formats),
        };
        if self.info.masks.is_empty() {
            return (cols, None);
        }
        if let Some((f, plan)) = &self.plan
            && f == formats
            && self.columns.is_some()
        {
            return (cols, Some(Arc::clone(plan)));
        }
        let plan = Arc::new(self.info.masks.plan(&cols));
        if self.columns.is_some() {
            self.plan = Some((formats.to_vec(), Arc::clone(&plan)));
        }
        (cols, Some(plan))
    }

    /// Records its description (drops plans built without it).
    pub(crate) fn describe(&mut self, cols: ResultColumns) {
        self.columns = Some(cols);
        self.plan = None;
    }
}

/// A portal.
#[derive(Clone, Debug)]
pub(crate) struct PortalDef {
    pub(crate) id: u64,
    /// With the Bind's parameters.
    pub(crate) info: StmtInfo,
    pub(crate) columns: ResultColumns,
    pub(crate) plan: Option<Arc<RowPlan>>,
}

/// A definition to restore if the server rejects the one that replaced it.
#[derive(Debug)]
pub(crate) enum Undo {
    Statement(WireStr, Option<StmtDef>),
    Portal(WireStr, Option<PortalDef>),
}

/// Statements and portals by name.
#[derive(Debug, Default)]
pub(crate) struct Names {
    statements: HashMap<WireStr, StmtDef>,
    portals: HashMap<WireStr, PortalDef>,
    next: u64,
}

impl Names {
    /// The id the next definition gets.
    pub(crate) fn next_id(&self) -> u64 {
        self.next
    }

    fn take_id(&mut self) -> u64 {
        self.next += 1;
        self.next - 1
    }

    /// A Parse: `name` is `info` from now on, unless the server rejects it.
    pub(crate) fn parse(&mut self, name: WireStr, info: StmtInfo, param_types: Vec<u32>) -> Undo {
        let def = StmtDef {
            id: self.take_id(),
            info,
            columns: None,
            param_types,
            plan: None,
        };
        let previous = self.statements.insert(name.clone(), def);
        Undo::Statement(name, previous)
    }

    /// A Bind: portal `name` is `def` (its id is set here).
    pub(crate) fn bind(&mut self, name: WireStr, mut def: PortalDef) -> Undo {
        def.id = self.take_id();
        let previous = self.portals.insert(name.clone(), def);
        Undo::Portal(name, previous)
    }

    /// Restores what failed definitions replaced, newest first.
    pub(crate) fn undo(&mut self, undo: Vec<Undo>) {
        for u in undo.into_iter().rev() {
            match u {
                Undo::Statement(n, Some(d)) => {
                    self.statements.insert(n, d);
                }
                Undo::Statement(n, None) => {
                    self.statements.remove(&n);
                }
                Undo::Portal(n, Some(d)) => {
                    self.portals.insert(n, d);
                }
                Undo::Portal(n, None) => {
                    self.portals.remove(&n);
                }
            }
        }
    }

    pub(crate) fn statement_mut(&mut self, name: &WireStr) -> Option<&mut StmtDef> {
        self.statements.get_mut(name)
    }

    pub(crate) fn portal(&self, name: &WireStr) -> Option<&PortalDef> {
        self.portals.get(name)
    }

    /// The statement definition `id` of `name`, if it is still the current one.
    pub(crate) fn statement_def(&mut self, name: &WireStr, id: u64) -> Option<&mut StmtDef> {
        self.statements.get_mut(name).filter(|d| d.id == id)
    }

    /// The portal definition `id` of `name`, if it is still the current one.
    pub(crate) fn portal_def(&mut self, name: &WireStr, id: u64) -> Option<&mut PortalDef> {
        self.portals.get_mut(name).filter(|d| d.id == id)
    }

    /// The id of statement `name`'s definition; one interlock did not see
    /// made (PREPARE in SQL) is adopted with `unknown`, so its description
    /// has somewhere to go.
    pub(crate) fn statement_id(
        &mut self,
        name: WireStr,
        unknown: impl FnOnce() -> StmtInfo,
    ) -> u64 {
        if let Some(d) = self.statements.get(&name) {
            return d.id;
        }
        let id = self.take_id();
        let def = StmtDef {
            id,
            info: unknown(),
            columns: None,
            param_types: vec![],
            plan: None,
        };
        self.statements.insert(name, def);
        id
    }

    /// As [`Names::statement_id`], for a portal (a cursor DECLAREd in SQL).
    pub(crate) fn portal_id(&mut self, name: WireStr, unknown: impl FnOnce() -> StmtInfo) -> u64 {
        if let Some(d) = self.portals.get(&name) {
            return d.id;
        }
        let id = self.take_id();
        let def = PortalDef {
            id,
            info: unknown(),
            columns: ResultColumns::undescribed(&[1]),
            plan: None,
        };
        self.portals.insert(name, def);
        id
    }

    /// Close (statement `b'S'` or portal).
    pub(crate) fn close(&mut self, kind: u8, name: &WireStr) {
        if kind == b'S' {
            self.statements.remove(name);
        } else {
            self.portals.remove(name);
        }
    }

    /// A statement or cursor made or dropped in SQL: whatever interlock
    /// knew under that name no longer describes it.
    pub(crate) fn apply(&mut self, change: &NameChange) {
        // SQL names come converted to UTF-8, protocol names as the client's
        // bytes; for a non-ASCII name in another encoding they differ, so
        // everything of that kind is forgotten (fail closed) rather than
        // let an old definition stand.
        fn forget<V>(map: &mut HashMap<WireStr, V>, name: &str) {
            if name.is_ascii() {
                map.remove(&WireStr::from(name));
            } else {
                map.clear();
            }
        }
        match change {
            NameChange::Prepare(n) | NameChange::Deallocate(Some(n)) => {
                forget(&mut self.statements, n);
            }
            NameChange::Deallocate(None) => self.statements.clear(),
            NameChange::Declare(n) | NameChange::Close(Some(n)) => {
                forget(&mut self.portals, n);
            }
            NameChange::Close(None) => self.portals.clear(),
            NameChange::DiscardAll => {
                self.statements.clear();
                self.portals.clear();
            }
        }
    }

    /// The server is idle (no transaction): portals bound before `mark`
    /// are gone, and a cursor a function opens later may take their names.
    pub(crate) fn transaction_ended(&mut self, mark: u64) {
        self.portals.retain(|_, p| p.id >= mark);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(t: &str) -> StmtInfo {
        StmtInfo::plain(t.into(), vec![])
    }

    fn portal(t: &str) -> PortalDef {
        PortalDef {
            id: 0,
            info: info(t),
            columns: ResultColumns::undescribed(&[]),
            plan: None,
        }
    }

    #[test]
    fn rejected_definitions_are_undone_newest_first() {
        let mut n = Names::default();
        n.parse("s".into(), info("old"), vec![]);
        let a = n.parse("s".into(), info("new1"), vec![]);
        let b = n.parse("s".into(), info("new2"), vec![]);
        n.undo(vec![a, b]);
        assert_eq!(n.statement_mut(&"s".into()).unwrap().info.text, "old");
        let u = n.bind("p".into(), portal("x"));
        n.undo(vec![u]);
        assert!(n.portal(&"p".into()).is_none());
    }

    #[test]
    fn late_descriptions_find_only_their_definition() {
        let mut n = Names::default();
        n.bind("".into(), portal("first"));
        let first = n.portal(&"".into()).unwrap().id;
        n.bind("".into(), portal("second"));
        assert!(n.portal_def(&"".into(), first).is_none());
        let second = n.portal(&"".into()).unwrap().id;
        assert!(n.portal_def(&"".into(), second).is_some());
    }

    #[test]
    fn sql_names_and_transaction_ends_forget_definitions() {
        let mut n = Names::default();
        n.parse("p".into(), info("x"), vec![]);
        n.bind("c".into(), portal("y"));
        n.apply(&NameChange::Prepare("p".into()));
        n.apply(&NameChange::Declare("c".into()));
        assert!(n.statement_mut(&"p".into()).is_none() && n.portal(&"c".into()).is_none());
        n.bind("a".into(), portal("a"));
        let mark = n.next_id();
        n.bind("b".into(), portal("b"));
        n.transaction_ended(mark);
        assert!(n.portal(&"a".into()).is_none() && n.portal(&"b".into()).is_some());
        n.parse("q".into(), info("q"), vec![]);
        n.apply(&NameChange::DiscardAll);
        assert!(n.statement_mut(&"q".into()).is_none() && n.portal(&"b".into()).is_none());
    }
}
