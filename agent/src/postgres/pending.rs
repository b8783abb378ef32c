//! Which response belongs to which request: the queue of statements sent
//! upstream whose completion is awaited, failures interlock injected, and
//! the Sync/Query boundaries that end each error-discard run.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::Instant,
};

use super::{
    frame::Frame,
    mask::{Columns, MaskPlan},
    message::WireStr,
};
use crate::gate::StatementClass;

/// A statement's text and classes, and the masking for its results.
#[derive(Clone, Debug)]
pub(crate) struct StmtInfo {
    pub(crate) text: String,
    pub(crate) classes: Vec<StatementClass>,
    pub(crate) mask: Vec<Arc<MaskPlan>>,
    /// Result columns, once a RowDescription for this statement was resolved.
    pub(crate) columns: Option<Columns>,
}

impl StmtInfo {
    /// A statement without masking.
    pub(crate) fn plain(text: String, classes: Vec<StatementClass>) -> StmtInfo {
        StmtInfo {
            text,
            classes,
            mask: vec![],
            columns: None,
        }
    }

    /// Whether masking needs to know which column each value comes from.
    pub(crate) fn needs_columns(&self) -> bool {
        self.mask.iter().any(|m| m.has_columns())
    }
}

/// Values masked per plan (aligned with `StmtInfo::mask`): name -> count.
pub(crate) type MaskCounts = Vec<BTreeMap<String, u64>>;

/// A finished statement: what it was, when it started, what was masked.
pub(crate) type Done = (StmtInfo, Instant, MaskCounts);

#[derive(Debug)]
enum Entry {
    /// An Execute, a simple-query statement or a FunctionCall (`None`: not
    /// recorded, e.g. a portal interlock does not know).
    Stmt(Option<StmtInfo>, Instant, MaskCounts),
    /// A failure interlock sent upstream in place of a refused request; the
    /// server's error for it is replaced by this frame.
    Injected(Frame),
    /// A Describe of a statement (`Some(name)`) or a portal (`None`):
    /// answered by RowDescription or NoData.
    Describe(Option<WireStr>),
    /// Sync, Query or FunctionCall end: the server answers ReadyForQuery.
    /// `sync` marks a Sync message, which the server ignores in copy-in mode.
    Boundary { sync: bool },
}

/// What to do with a server ErrorResponse.
#[derive(Debug)]
pub(crate) enum OnError {
    /// A statement failed: record it, forward the error.
    Record(Done),
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

impl Pending {
    pub(crate) fn push_stmt(&mut self, info: Option<StmtInfo>) {
        let counts = info
            .as_ref()
            .map(|i| vec![BTreeMap::new(); i.mask.len()])
            .unwrap_or_default();
        self.q.push_back(Entry::Stmt(info, Instant::now(), counts));
    }

    pub(crate) fn push_injected(&mut self, reply: Frame) {
        self.q.push_back(Entry::Injected(reply));
    }

    pub(crate) fn push_describe(&mut self, statement: Option<WireStr>) {
        self.q.push_back(Entry::Describe(statement));
    }

    /// A RowDescription or NoData arrived. Returns the statement it
    /// describes: `Ok(name)` for a Describe of a statement, `Err(info)` for
    /// the statement whose results follow (simple query or portal Describe).
    pub(crate) fn described(&mut self) -> Option<Result<WireStr, &mut StmtInfo>> {
        if let Some(Entry::Describe(_)) = self.q.front()
            && let Some(Entry::Describe(Some(name))) = self.q.pop_front()
        {
            return Some(Ok(name));
        }
        self.q.iter_mut().find_map(|e| match e {
            Entry::Stmt(Some(info), ..) => Some(Err(info)),
            _ => None,
        })
    }

    /// The end of a Query or FunctionCall.
    pub(crate) fn push_boundary(&mut self) {
        self.q.push_back(Entry::Boundary { sync: false });
    }

    /// A Sync message.
    pub(crate) fn push_sync(&mut self) {
        self.q.push_back(Entry::Boundary { sync: true });
    }

    /// The server entered copy-in mode for the oldest statement: Syncs the
    /// client pipelined after it are ignored by the server, so they no
    /// longer count (up to the end of the current Query, if any).
    pub(crate) fn copy_in_started(&mut self) {
        let end = self
            .q
            .iter()
            .position(|e| matches!(e, Entry::Boundary { sync: false }))
            .unwrap_or(self.q.len());
        let mut i = 0;
        self.q.retain(|e| {
            let keep = i == 0 || i >= end || !matches!(e, Entry::Boundary { sync: true });
            i += 1;
            keep
        });
    }

    /// A statement completed (CommandComplete, EmptyQueryResponse,
    /// PortalSuspended, FunctionCallResponse).
    pub(crate) fn complete(&mut self) -> Option<Done> {
        match self.q.front() {
            Some(Entry::Stmt(..)) => match self.q.pop_front() {
                Some(Entry::Stmt(Some(info), t, c)) => Some((info, t, c)),
                _ => None,
            },
            _ => None,
        }
    }

    /// The statement whose results are arriving, if it has masking.
    pub(crate) fn masking(&mut self) -> Option<(&StmtInfo, &mut MaskCounts)> {
        match self.q.front_mut() {
            Some(Entry::Stmt(Some(info), _, counts)) if !info.mask.is_empty() => {
                Some((info, counts))
            }
            _ => None,
        }
    }

    /// The server reported an error; `ours` tells whether it looks like the
    /// failure interlock injects. Everything up to the next boundary is
    /// discarded by the server, so it is dropped here too.
    pub(crate) fn error(&mut self, ours: bool) -> OnError {
        let out = match self.q.front() {
            Some(Entry::Stmt(..)) | Some(Entry::Injected(_)) => match self.q.pop_front() {
                Some(Entry::Stmt(Some(info), t, c)) => OnError::Record((info, t, c)),
                Some(Entry::Injected(f)) if ours => OnError::Replace(f),
                _ => OnError::Forward,
            },
            _ => OnError::Forward,
        };
        while matches!(
            self.q.front(),
            Some(Entry::Stmt(..)) | Some(Entry::Injected(_))
        ) {
            self.q.pop_front();
        }
        out
    }

    /// The session ended: the statements still waiting for the server's
    /// answer, oldest first (the queue is left empty).
    pub(crate) fn unanswered(&mut self) -> Vec<Done> {
        self.q
            .drain(..)
            .filter_map(|e| match e {
                Entry::Stmt(Some(info), t, c) => Some((info, t, c)),
                _ => None,
            })
            .collect()
    }

    /// ReadyForQuery: the oldest boundary (and anything before it) is done.
    pub(crate) fn ready(&mut self) {
        while let Some(e) = self.q.pop_front() {
            if matches!(e, Entry::Boundary { .. }) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::frame::Payload;

    fn info(t: &str) -> Option<StmtInfo> {
        Some(StmtInfo {
            text: t.into(),
            classes: vec![],
            mask: vec![],
            columns: None,
        })
    }

    #[test]
    fn pipelined_statements_complete_in_order_and_errors_discard_to_sync() {
        let mut p = Pending::default();
        p.push_stmt(info("a"));
        p.push_stmt(info("b"));
        p.push_stmt(info("c"));
        p.push_boundary();
        p.push_stmt(info("d"));
        p.push_boundary();
        assert_eq!(p.complete().unwrap().0.text, "a");
        assert!(matches!(p.error(false), OnError::Record((i, ..)) if i.text == "b"));
        // c was discarded by the server; the error does not touch the next group
        assert!(p.complete().is_none());
        p.ready();
        assert_eq!(p.complete().unwrap().0.text, "d");
        p.ready();
        assert!(matches!(p.error(false), OnError::Forward));
    }

    #[test]
    fn syncs_pipelined_into_copy_in_mode_do_not_count() {
        let mut p = Pending::default();
        p.push_stmt(info("copy t from stdin"));
        p.push_sync();
        p.copy_in_started();
        p.push_sync(); // sent after CopyDone
        p.push_stmt(info("next"));
        p.push_sync();
        assert_eq!(p.complete().unwrap().0.text, "copy t from stdin");
        p.ready();
        assert_eq!(p.complete().unwrap().0.text, "next");
        // in a simple query the Query's own end is kept
        let mut p = Pending::default();
        p.push_stmt(info("copy t from stdin"));
        p.push_boundary();
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
        p.push_boundary();
        assert!(matches!(p.error(true), OnError::Replace(f) if f == reply));
        p.ready();
        p.push_injected(reply);
        p.push_boundary();
        assert!(matches!(p.error(false), OnError::Forward));
    }
}
