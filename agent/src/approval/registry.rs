//! The registry of held requests: who asked, for what, under which rule,
//! until when; and the decisions on them. One lock guards the map; it is
//! never held across an `.await` (events are emitted after it is released).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use serde::Serialize;
use tokio::sync::oneshot;

use super::{
    ApprovalError,
    notify::Notifier,
    types::{Decided, HoldSpec, Pending},
};
use crate::{
    audit::{EventKind, EventSink},
    gate::{Held, HoldOutcome},
    identity::LocalPeer,
    policy::Grant,
};

/// Decided requests remembered for `show` (and a clear "already decided").
const RECENT: usize = 1024;

/// The approval registry; cheap to clone.
#[derive(Clone)]
pub struct Approvals {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    events: EventSink,
    notifier: Notifier,
    /// How a human approves, for client-facing notices (names the socket).
    how: String,
}

#[derive(Default)]
struct State {
    pending: HashMap<String, Entry>,
    recent: std::collections::VecDeque<Decided>,
    grants: Vec<TimedGrant>,
}

struct Entry {
    view: Pending,
    tx: oneshot::Sender<HoldOutcome>,
}

/// A time-boxed grant: the same rule, target, user and cgroup pass without
/// asking until `until`.
struct TimedGrant {
    rule: String,
    target: String,
    uid: u32,
    cgroup: Option<String>,
    until: SystemTime,
}

/// What `decide` did.
#[derive(Clone, Debug, Serialize)]
pub struct DecisionReport {
    pub id: String,
    pub approved: bool,
}

impl Approvals {
    /// An empty registry emitting to `events`; `control_socket` is named in
    /// the instructions given to held clients.
    pub fn new(
        events: EventSink,
        notifier: Notifier,
        control_socket: &std::path::Path,
    ) -> Approvals {
        let how = format!(
            "an approver runs `interlock approvals approve <id> --socket {}` (or `deny`)",
            control_socket.display()
        );
        Approvals {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                events,
                notifier,
                how,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// True when a time-boxed grant covers this rule, target and requester.
    pub fn granted(&self, rule: &str, target: &str, uid: u32, cgroup: Option<&str>) -> bool {
        let now = SystemTime::now();
        let mut st = self.state();
        st.grants.retain(|g| g.until > now);
        st.grants.iter().any(|g| {
            g.rule == rule && g.target == target && g.uid == uid && g.cgroup.as_deref() == cgroup
        })
    }

    /// Registers a held request and returns the session's handle on it.
    /// The request is denied at its deadline if nobody decides before.
    pub async fn hold(&self, spec: HoldSpec) -> Held {
        let id = new_id();
        let now = SystemTime::now();
        let deadline = now + spec.approval.timeout;
        let view = Pending {
            id: id.clone(),
            session_id: spec.session_id,
            target: spec.target,
            rule: spec.rule,
            request: spec.request,
            requester: spec.requester,
            approvers: spec.approval.approvers.clone(),
            grant: spec.approval.grant,
            requested_at: now,
            deadline,
        };
        let (tx, rx) = oneshot::channel();
        self.state().pending.insert(
            id.clone(),
            Entry {
                view: view.clone(),
                tx,
            },
        );
        self.inner
            .events
            .record(EventKind::ApprovalRequested {
                session_id: view.session_id.clone(),
                approval: Box::new(view.clone()),
            })
            .await;
        self.inner.notifier.held(&view, &self.inner.how);
        {
            let me = self.clone();
            let id = id.clone();
            let wait = spec.approval.timeout;
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                me.finish(&id, HoldOutcome::Expired, None).await;
            });
        }
        let withdraw = {
            let me = self.clone();
            let id = id.clone();
            Box::new(move || {
                // Dropped by a session (client gone or cancelled): no await here.
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move { me.finish(&id, HoldOutcome::Withdrawn, None).await });
                }
            })
        };
        Held::new(
            id,
            view.rule.clone(),
            deadline,
            self.inner.how.clone(),
            rx,
            withdraw,
        )
    }

    /// Approves or denies `id` for `caller`.
    ///
    /// # Errors
    /// Unknown or already decided id; a caller who is not an approver of
    /// the rule, or who is (or runs beside) the requester.
    pub async fn decide(
        &self,
        id: &str,
        caller: &LocalPeer,
        approve: bool,
        reason: Option<String>,
    ) -> Result<DecisionReport, ApprovalError> {
        {
            let st = self.state();
            let Some(e) = st.pending.get(id) else {
                return Err(match st.recent.iter().find(|d| d.pending.id == id) {
                    Some(d) => ApprovalError::AlreadyDecided {
                        id: id.to_string(),
                        decision: d.decision,
                    },
                    None => ApprovalError::NotFound(id.to_string()),
                });
            };
            authorize(&e.view, caller)?;
        }
        let by = caller_name(caller);
        let outcome = if approve {
            HoldOutcome::Approved {
                by: by.clone(),
                reason: reason.clone(),
            }
        } else {
            HoldOutcome::Denied {
                by: by.clone(),
                reason: reason.clone(),
            }
        };
        if !self.finish(id, outcome, Some(caller.clone())).await {
            // Expired or withdrawn between the check and now.
            return Err(ApprovalError::NotFound(id.to_string()));
        }
        Ok(DecisionReport {
            id: id.to_string(),
            approved: approve,
        })
    }

    /// Ends `id` with `outcome` if it is still pending; false otherwise.
    async fn finish(&self, id: &str, outcome: HoldOutcome, by: Option<LocalPeer>) -> bool {
        let decided = {
            let mut st = self.state();
            let Some(entry) = st.pending.remove(id) else {
                return false;
            };
            let decided = Decided::new(entry.view, &outcome, by);
            if let (HoldOutcome::Approved { .. }, Grant::For(d)) = (&outcome, decided.pending.grant)
            {
                st.grants.push(TimedGrant {
                    rule: decided.pending.rule.clone(),
                    target: decided.pending.target.clone(),
                    uid: decided.pending.requester.uid,
                    cgroup: decided.pending.requester.cgroup.clone(),
                    until: SystemTime::now() + d,
                });
            }
            st.recent.push_back(decided.clone());
            while st.recent.len() > RECENT {
                st.recent.pop_front();
            }
            // A session that went away has dropped its receiver; fine.
            let _ = entry.tx.send(outcome);
            decided
        };
        self.inner
            .events
            .record(EventKind::ApprovalDecided {
                session_id: decided.pending.session_id.clone(),
                approval: Box::new(decided),
            })
            .await;
        true
    }

    /// Pending requests, oldest first.
    pub fn list(&self) -> Vec<Pending> {
        let mut v: Vec<Pending> = self
            .state()
            .pending
            .values()
            .map(|e| e.view.clone())
            .collect();
        v.sort_by_key(|p| p.requested_at);
        v
    }

    /// The pending requests `caller` may see (root: all; others: those
    /// whose captured approvers include them), oldest first; `None` when
    /// `caller` is root-less, approves nothing pending or recently decided,
    /// and `approves_now` (an approver in the policy in force) is false.
    pub fn list_for(&self, caller: &LocalPeer, approves_now: bool) -> Option<Vec<Pending>> {
        let st = self.state();
        let known = caller.uid == 0
            || approves_now
            || st.pending.values().any(|e| admits(&e.view, caller))
            || st.recent.iter().any(|d| admits(&d.pending, caller));
        if !known {
            return None;
        }
        let mut v: Vec<Pending> = st
            .pending
            .values()
            .filter(|e| may_see(&e.view, caller))
            .map(|e| e.view.clone())
            .collect();
        v.sort_by_key(|p| p.requested_at);
        Some(v)
    }

    /// One request, pending or recently decided.
    pub fn show(&self, id: &str) -> Option<Result<Pending, Decided>> {
        let st = self.state();
        if let Some(e) = st.pending.get(id) {
            return Some(Ok(e.view.clone()));
        }
        st.recent
            .iter()
            .find(|d| d.pending.id == id)
            .cloned()
            .map(Err)
    }

    /// [`Approvals::show`] for `caller`.
    ///
    /// # Errors
    /// [`ApprovalError::NotFound`] for an unknown id;
    /// [`ApprovalError::NotApprover`] when `caller` is neither root nor one
    /// of the approvers captured with the hold.
    pub fn show_for(
        &self,
        id: &str,
        caller: &LocalPeer,
    ) -> Result<Result<Pending, Decided>, ApprovalError> {
        let found = self
            .show(id)
            .ok_or_else(|| ApprovalError::NotFound(id.to_string()))?;
        let p = match &found {
            Ok(p) => p,
            Err(d) => &d.pending,
        };
        if may_see(p, caller) {
            Ok(found)
        } else {
            Err(ApprovalError::NotApprover {
                who: caller
                    .user
                    .clone()
                    .unwrap_or_else(|| format!("uid {}", caller.uid)),
                rule: p.rule.clone(),
            })
        }
    }

    /// Number of pending requests.
    pub fn pending_count(&self) -> usize {
        self.state().pending.len()
    }

    /// Time left for the oldest pending request (for status output).
    pub fn next_deadline(&self) -> Option<Duration> {
        let now = SystemTime::now();
        self.state()
            .pending
            .values()
            .map(|e| e.view.deadline.duration_since(now).unwrap_or_default())
            .min()
    }
}

/// May `caller` decide `p`? The requester (same uid, or a process in the
/// same cgroup, such as another step of the same CI job) never may, even
/// when listed as an approver. A caller whose cgroup cannot be read could
/// be in the requester's: refused (fail closed) when the requester's is known.
fn authorize(p: &Pending, caller: &LocalPeer) -> Result<(), ApprovalError> {
    if caller.uid == p.requester.uid {
        return Err(ApprovalError::SelfApproval(format!(
            "uid {} made this request and cannot decide it",
            caller.uid
        )));
    }
    match (&caller.cgroup, &p.requester.cgroup) {
        (Some(a), Some(b)) if a == b => {
            return Err(ApprovalError::SelfApproval(format!(
                "the caller runs in the requester's cgroup {a}"
            )));
        }
        (None, Some(_)) => {
            return Err(ApprovalError::SelfApproval(format!(
                "the cgroup of the caller (pid {}) cannot be read, so it cannot be told apart from the requester's",
                caller.pid
            )));
        }
        _ => {}
    }
    if admits(p, caller) {
        Ok(())
    } else {
        Err(ApprovalError::NotApprover {
            who: caller_name(caller),
            rule: p.rule.clone(),
        })
    }
}

/// The caller's user name, or its uid when it has none.
pub(crate) fn caller_name(caller: &LocalPeer) -> String {
    caller
        .user
        .clone()
        .unwrap_or_else(|| format!("uid {}", caller.uid))
}

/// Whether `caller` is among the approvers captured with the hold (the
/// policy in force when it was held, whatever reloads happened since).
fn admits(p: &Pending, caller: &LocalPeer) -> bool {
    p.approvers.admits(caller.user.as_deref(), &caller.groups)
}

/// Root and the hold's own approvers may see a held request (it contains
/// the statement and the requester's identity).
fn may_see(p: &Pending, caller: &LocalPeer) -> bool {
    caller.uid == 0 || admits(p, caller)
}

/// A short id a human can type: 12 hex digits.
fn new_id() -> String {
    let mut b = [0u8; 6];
    if getrandom::fill(&mut b).is_err() {
        // The OS RNG failing is near impossible; uniqueness still holds.
        let u = uuid::Uuid::now_v7();
        b.copy_from_slice(u.as_bytes().get(10..16).unwrap_or(&[0; 6]));
    }
    hex::encode(b)
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
