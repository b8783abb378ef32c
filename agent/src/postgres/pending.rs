//! Which response belongs to which request: the queue of statements sent
//! upstream whose completion is awaited, failures interlock injected,
//! Describes awaiting their RowDescription, Parse/Bind definitions awaiting
//! their completion (undone if the server rejects them), and the Sync/Query
//! boundaries that end each error-discard run.

use std::{collections::VecDeque, sync::Arc, time::Instant};

use super::{
    classify::Reads,
    frame::Frame,
    mask::{MaskCounts, Masks, ResultColumns, RowPlan},
    message::WireStr,
    names::Undo,
};
use crate::gate::StatementClass;

/// A statement's text and classes, and the masking for its results.
#[derive(Clone, Debug)]
pub(crate) struct StmtInfo {
    /// Secrets redacted.
    pub(crate) text: String,
    pub(crate) classes: Vec<StatementClass>,
    pub(crate) masks: Masks,
    /// What its rows may come from (for computed columns).
    pub(crate) reads: Reads,
    /// Bind parameters as recorded (detectors applied).
    pub(crate) params: Vec<Option<String>>,
    /// Why it is `opaque`, when it is.
    pub(crate) opaque: Option<String>,
}

impl StmtInfo {
    /// A statement without masking.
    pub(crate) fn plain(text: String, classes: Vec<StatementClass>) -> StmtInfo {
        StmtInfo {
            text,
            classes,
            masks: Masks::default(),
            reads: Reads::Any,
            params: vec![],
            opaque: None,
        }
    }
}

/// A statement whose results are awaited.
#[derive(Debug)]
pub(crate) struct Running {
    pub(crate) info: StmtInfo,
    pub(crate) started: Instant,
    pub(crate) counts: MaskCounts,
    /// The portal definition it executes (extended protocol).
    pub(crate) portal: Option<u64>,
    /// Its result columns, once described.
    pub(crate) columns: Option<ResultColumns>,
    pub(crate) plan: Option<Arc<RowPlan>>,
}

impl Running {
    pub(crate) fn new(info: StmtInfo) -> Running {
        Running {
            counts: info.masks.counters(),
            info,
            started: Instant::now(),
            portal: None,
            columns: None,
            plan: None,
        }
    }

    /// The plan for its rows, built on first use. Without a description
    /// every column is unknown (masked whenever masking applies).
    pub(crate) fn plan(&mut self) -> Arc<RowPlan> {
        if let Some(p) = &self.plan {
            return Arc::clone(p);
        }
        let cols = self
            .columns
            .clone()
            .unwrap_or_else(|| ResultColumns::undescribed(&[1]));
        let plan = Arc::new(self.info.masks.plan(&cols));
        self.plan = Some(Arc::clone(&plan));
        plan
    }
}

/// What a Describe described.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Described {
    /// A prepared statement: its name and definition id.
    Statement(WireStr, u64),
    /// A portal: its name and definition id.
    Portal(WireStr, u64),
}

#[derive(Debug)]
enum Entry {
    /// An Execute, a simple-query statement or a FunctionCall.
    Stmt(Box<Running>),
    /// A failure interlock sent upstream in place of a refused request; the
    /// server's error for it is replaced by this frame.
    Injected(Frame),
    /// Answered by RowDescription or NoData.
    Describe(Described),
    /// A Parse or Bind, answered by ParseComplete or BindComplete; on an
    /// error the definition is undone.
    Define(Box<Undo>),
    /// Sync, Query or FunctionCall end: the server answers ReadyForQuery.
    /// `sync` marks a Sync message, which the server ignores in copy-in
    /// mode; `portals` is the first portal id defined after it.
    Boundary { sync: bool, portals: u64 },
}

/// What to do with a server ErrorResponse.
#[derive(Debug)]
pub(crate) enum OnError {
    /// A statement failed: record it, forward the error.
    Record(Box<Running>),
    /// Our injected failure: send this frame instead.
    Replace(Frame),
    /// Not tied to a tracked statement: forward.
    Forward,
}

/// The queue, in the order requests went upstream.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    q: VecDeque<Entry>,
}

/// A statement whose results are arriving or a Describe being answered.
pub(crate) enum DescribeTarget<'a> {
    Named(Described),
    Running(&'a mut Running),
}

impl Pending {
    pub(crate) fn push_stmt(&mut self, stmt: Running) {
        self.q.push_back(Entry::Stmt(Box::new(stmt)));
    }

    pub(crate) fn push_injected(&mut self, reply: Frame) {
        self.q.push_back(Entry::Injected(reply));
    }

    pub(crate) fn push_describe(&mut self, d: Described) {
        self.q.push_back(Entry::Describe(d));
    }

    pub(crate) fn push_define(&mut self, undo: Undo) {
        self.q.push_back(Entry::Define(Box::new(undo)));
    }

    /// The Describe a ParameterDescription answers (it precedes the
    /// RowDescription or NoData, which removes the entry).
    pub(crate) fn describing(&self) -> Option<&Described> {
        match self.q.front() {
            Some(Entry::Describe(d)) => Some(d),
            _ => None,
        }
    }

    /// ParseComplete or BindComplete: the oldest definition stands.
    pub(crate) fn defined(&mut self) {
        if let Some(Entry::Define(_)) = self.q.front() {
            self.q.pop_front();
        }
    }

    /// A RowDescription or NoData arrived: what it describes (a Describe,
    /// or the statement whose results follow in a simple query).
    pub(crate) fn described(&mut self) -> Option<DescribeTarget<'_>> {
        if let Some(Entry::Describe(_)) = self.q.front()
            && let Some(Entry::Describe(d)) = self.q.pop_front()
        {
            return Some(DescribeTarget::Named(d));
        }
        self.q.iter_mut().find_map(|e| match e {
            Entry::Stmt(r) => Some(DescribeTarget::Running(r)),
            _ => None,
        })
    }

    /// Queued executions of portal definition `id` (a Describe of the
    /// portal answered after the Execute went upstream).
    pub(crate) fn executions_of(&mut self, id: u64) -> impl Iterator<Item = &mut Running> {
        self.q.iter_mut().filter_map(move |e| match e {
            Entry::Stmt(r) if r.portal == Some(id) => Some(&mut **r),
            _ => None,
        })
    }

    /// The end of a Query or FunctionCall; `portals` as for [`Pending::push_sync`].
    pub(crate) fn push_boundary(&mut self, portals: u64) {
        self.q.push_back(Entry::Boundary {
            sync: false,
            portals,
        });
    }

    /// A Sync message; `portals` is the next portal id (portals defined
    /// before it are gone once the server is idle after it).
    pub(crate) fn push_sync(&mut self, portals: u64) {
        self.q.push_back(Entry::Boundary {
            sync: true,
            portals,
        });
    }

    /// The server entered copy-in mode for the oldest statement: Syncs the
    /// client pipelined after it are ignored by the server, so they no
    /// longer count (up to the end of the current Query, if any).
    pub(crate) fn copy_in_started(&mut self) {
        let end = self
            .q
            .iter()
            .position(|e| matches!(e, Entry::Boundary { sync: false, .. }))
            .unwrap_or(self.q.len());
        let mut i = 0;
        self.q.retain(|e| {
            let keep = i == 0 || i >= end || !matches!(e, Entry::Boundary { sync: true, .. });
            i += 1;
            keep
        });
    }

    /// A statement completed (CommandComplete, EmptyQueryResponse,
    /// PortalSuspended, FunctionCallResponse).
    pub(crate) fn complete(&mut self) -> Option<Box<Running>> {
        match self.q.front() {
            Some(Entry::Stmt(..)) => match self.q.pop_front() {
                Some(Entry::Stmt(r)) => Some(r),
                _ => None,
            },
            _ => None,
        }
    }

    /// The statement whose results are arriving, if it has masking.
    pub(crate) fn masking(&mut self) -> Option<&mut Running> {
        match self.q.front_mut() {
            Some(Entry::Stmt(r)) if !r.info.masks.is_empty() => Some(r),
            _ => None,
        }
    }

    /// The server reported an error; `ours` tells whether it looks like the
    /// failure interlock injects. The server discards everything up to the
    /// next boundary, so it is dropped here too; definitions among it are
    /// returned to be undone (newest last).
    pub(crate) fn error(&mut self, ours: bool) -> (OnError, Vec<Undo>) {
        let mut out = None;
        let mut undo = Vec::new();
        while !matches!(self.q.front(), None | Some(Entry::Boundary { .. })) {
            match self.q.pop_front() {
                Some(Entry::Define(u)) => undo.push(*u),
                Some(Entry::Stmt(r)) if out.is_none() => out = Some(OnError::Record(r)),
                Some(Entry::Injected(f)) if out.is_none() => {
                    out = Some(if ours {
                        OnError::Replace(f)
                    } else {
                        OnError::Forward
                    });
                }
                _ => {}
            }
        }
        (out.unwrap_or(OnError::Forward), undo)
    }

    /// The session ended: the statements still waiting for the server's
    /// answer, oldest first (the queue is left empty).
    pub(crate) fn unanswered(&mut self) -> Vec<Running> {
        self.q
            .drain(..)
            .filter_map(|e| match e {
                Entry::Stmt(r) => Some(*r),
                _ => None,
            })
            .collect()
    }

    /// ReadyForQuery: the oldest boundary (and anything before it) is done.
    /// Returns the boundary's portal mark.
    pub(crate) fn ready(&mut self) -> Option<u64> {
        while let Some(e) = self.q.pop_front() {
            if let Entry::Boundary { portals, .. } = e {
                return Some(portals);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::frame::Payload;

    fn stmt(t: &str) -> Running {
        Running::new(StmtInfo::plain(t.into(), vec![]))
    }

    #[test]
    fn pipelined_statements_complete_in_order_and_errors_discard_to_sync() {
        let mut p = Pending::default();
        p.push_stmt(stmt("a"));
        p.push_stmt(stmt("b"));
        p.push_stmt(stmt("c"));
        p.push_boundary(0);
        p.push_stmt(stmt("d"));
        p.push_boundary(0);
        assert_eq!(p.complete().unwrap().info.text, "a");
        assert!(matches!(p.error(false).0, OnError::Record(r) if r.info.text == "b"));
        // c was discarded by the server; the error does not touch the next group
        assert!(p.complete().is_none());
        p.ready();
        assert_eq!(p.complete().unwrap().info.text, "d");
        p.ready();
        assert!(matches!(p.error(false).0, OnError::Forward));
    }

    #[test]
    fn failed_definitions_are_undone_and_their_statement_recorded() {
        let mut p = Pending::default();
        p.push_define(Undo::Statement("s".into(), None));
        p.push_define(Undo::Portal("".into(), None));
        p.push_describe(Described::Portal("".into(), 1));
        p.push_stmt(stmt("x"));
        p.push_sync(2);
        p.defined();
        let (out, undo) = p.error(false);
        assert!(matches!(out, OnError::Record(r) if r.info.text == "x"));
        assert!(matches!(undo.as_slice(), [Undo::Portal(n, None)] if n.is_empty()));
        assert_eq!(p.ready(), Some(2));
        assert!(p.q.is_empty());
    }

    #[test]
    fn syncs_pipelined_into_copy_in_mode_do_not_count() {
        let mut p = Pending::default();
        p.push_stmt(stmt("copy t from stdin"));
        p.push_sync(0);
        p.copy_in_started();
        p.push_sync(0); // sent after CopyDone
        p.push_stmt(stmt("next"));
        p.push_sync(0);
        assert_eq!(p.complete().unwrap().info.text, "copy t from stdin");
        p.ready();
        assert_eq!(p.complete().unwrap().info.text, "next");
        // in a simple query the Query's own end is kept
        let mut p = Pending::default();
        p.push_stmt(stmt("copy t from stdin"));
        p.push_boundary(0);
        p.copy_in_started();
        p.complete();
        p.ready();
        assert!(p.q.is_empty());
    }

    #[test]
    fn injected_failures_are_replaced_only_when_they_are_ours() {
        let reply = Payload::new(b'E').u8(0).finish();
        let mut p = Pending::default();
        p.push_injected(reply.clone());
        p.push_boundary(0);
        assert!(matches!(p.error(true).0, OnError::Replace(f) if f == reply));
        p.ready();
        p.push_injected(reply);
        p.push_boundary(0);
        assert!(matches!(p.error(false).0, OnError::Forward));
    }
}
