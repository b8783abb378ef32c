//! Whether the audit log can be written, shared by the writer thread (which
//! learns it at each write) and the gate (which admits new sessions and
//! requests only while it can). An outage is counted here (what was refused,
//! how many records wait in memory) and recorded as one
//! `audit_write_recovered` event once writing works again. Sinks derived
//! from the log (`events.jsonl`, webhook spools) that fall behind are listed
//! too; they never refuse anything: they are caught up from the log.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::SystemTime,
};

use serde::Serialize;

/// What the gate was asked to admit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// A new session.
    Session,
    /// A statement or command of a live session.
    Request,
}

/// The audit log cannot be written: the request must be refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "interlock: the audit log cannot be written ({cause}); new sessions and requests are refused until it can be"
)]
pub struct Unwritable {
    /// The OS error, without paths (clients see this).
    pub cause: String,
}

/// The state of the audit log's writer, shared with the gate.
#[derive(Debug, Default)]
pub struct AuditHealth {
    /// Set from the first failed write until the records held back are written.
    failing: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    outage: Option<Outage>,
    /// Sinks behind the log: name -> why.
    sinks: BTreeMap<String, String>,
}

/// One period in which the audit log could not be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Outage {
    pub(crate) since: SystemTime,
    /// The latest error (the client-facing cause).
    pub(crate) cause: String,
    /// The latest error in full (with the file), for operators.
    pub(crate) error: String,
    /// Records of requests admitted before the failure, held in memory.
    pub(crate) waiting: u64,
    /// Most records held at once.
    pub(crate) waiting_max: u64,
    pub(crate) refused_sessions: u64,
    pub(crate) refused_requests: u64,
}

/// The health as `interlock status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct HealthView {
    /// False while records cannot be written (new sessions and requests are refused).
    pub writable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Records of already admitted requests waiting in memory to be written.
    pub records_waiting: u64,
    pub refused_sessions: u64,
    pub refused_requests: u64,
    /// Sinks behind the log (caught up from it once they can be written).
    pub sinks_behind: Vec<SinkBehind>,
}

/// A sink that could not be written.
#[derive(Clone, Debug, Serialize)]
pub struct SinkBehind {
    pub sink: String,
    pub error: String,
}

impl AuditHealth {
    /// Admits a new session or request, or says why not (and counts it).
    ///
    /// # Errors
    /// [`Unwritable`] while the log cannot be written.
    pub fn admit(&self, what: Admission) -> Result<(), Unwritable> {
        if !self.failing.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut st = self.lock();
        let Some(o) = st.outage.as_mut() else {
            // Recovered between the two reads.
            return Ok(());
        };
        match what {
            Admission::Session => o.refused_sessions += 1,
            Admission::Request => o.refused_requests += 1,
        }
        Err(Unwritable {
            cause: o.cause.clone(),
        })
    }

    /// Why records cannot be written (the client-facing words).
    pub(crate) fn cause(&self) -> String {
        self.lock()
            .outage
            .as_ref()
            .map(|o| o.cause.clone())
            .unwrap_or_else(|| "unknown".into())
    }

    /// Whether records can be written now.
    pub fn writable(&self) -> bool {
        !self.failing.load(Ordering::Acquire)
    }

    /// The writer could not write: from now on nothing new is admitted.
    pub(crate) fn fail(&self, cause: String, error: String) {
        let mut st = self.lock();
        match st.outage.as_mut() {
            Some(o) => {
                o.cause = cause;
                o.error = error;
            }
            None => {
                st.outage = Some(Outage {
                    since: SystemTime::now(),
                    cause,
                    error,
                    waiting: 0,
                    waiting_max: 0,
                    refused_sessions: 0,
                    refused_requests: 0,
                })
            }
        }
        self.failing.store(true, Ordering::Release);
    }

    /// How many records wait in memory.
    pub(crate) fn set_waiting(&self, n: u64) {
        if let Some(o) = self.lock().outage.as_mut() {
            o.waiting = n;
            o.waiting_max = o.waiting_max.max(n);
        }
    }

    /// Everything held back was written: admit again; returns the outage.
    pub(crate) fn recover(&self) -> Option<Outage> {
        let mut st = self.lock();
        self.failing.store(false, Ordering::Release);
        st.outage.take()
    }

    /// `sink` could not be written (`None`: it is caught up again).
    pub(crate) fn sink(&self, sink: &str, error: Option<String>) {
        let mut st = self.lock();
        match error {
            Some(e) => {
                st.sinks.insert(sink.to_string(), e);
            }
            None => {
                st.sinks.remove(sink);
            }
        }
    }

    /// A snapshot for `interlock status`.
    pub fn view(&self) -> HealthView {
        let st = self.lock();
        let o = st.outage.as_ref();
        HealthView {
            writable: o.is_none(),
            failing_since: o.map(|o| humantime::format_rfc3339_millis(o.since).to_string()),
            error: o.map(|o| o.error.clone()),
            records_waiting: o.map_or(0, |o| o.waiting),
            refused_sessions: o.map_or(0, |o| o.refused_sessions),
            refused_requests: o.map_or(0, |o| o.refused_requests),
            sinks_behind: st
                .sinks
                .iter()
                .map(|(sink, error)| SinkBehind {
                    sink: sink.clone(),
                    error: error.clone(),
                })
                .collect(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The part of an I/O error a client may see: the OS's words, no path.
pub(crate) fn cause_of(e: &super::LogError) -> String {
    use super::LogError as E;
    match e {
        E::Io { source, .. } | E::Open { source, .. } => without_code(source),
        other => other.to_string(),
    }
}

/// "No space left on device (os error 28)" -> "No space left on device".
fn without_code(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s.get(..i).unwrap_or(&s).to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_and_counts_only_while_failing() {
        let h = AuditHealth::default();
        assert!(h.admit(Admission::Session).is_ok());
        h.fail("No space left on device".into(), "audit log x: full".into());
        let e = h.admit(Admission::Session).unwrap_err();
        assert!(
            e.to_string()
                .contains("audit log cannot be written (No space left on device)")
        );
        h.admit(Admission::Request).unwrap_err();
        h.admit(Admission::Request).unwrap_err();
        h.set_waiting(3);
        let v = h.view();
        assert!(!v.writable);
        assert_eq!(
            (v.refused_sessions, v.refused_requests, v.records_waiting),
            (1, 2, 3)
        );
        let o = h.recover().unwrap();
        assert_eq!(
            (o.refused_sessions, o.refused_requests, o.waiting_max),
            (1, 2, 3)
        );
        assert!(h.admit(Admission::Session).is_ok());
        assert!(h.view().writable);
        assert!(h.recover().is_none());
    }

    #[test]
    fn a_client_sees_the_os_words_not_the_path() {
        let e = super::super::LogError::Io {
            path: "/var/lib/interlock/audit/segment-000001.jsonl".into(),
            source: std::io::Error::from_raw_os_error(28),
        };
        assert_eq!(cause_of(&e), "No space left on device");
    }

    #[test]
    fn sinks_behind_are_listed_until_caught_up() {
        let h = AuditHealth::default();
        h.sink("events.jsonl", Some("full".into()));
        assert_eq!(h.view().sinks_behind.len(), 1);
        assert!(h.view().writable, "a sink behind refuses nothing");
        h.sink("events.jsonl", None);
        assert!(h.view().sinks_behind.is_empty());
    }
}
