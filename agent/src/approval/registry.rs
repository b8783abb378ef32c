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
    grants::{JobKey, TimedGrant},
    notify::Notifier,
    record::ApprovalRecorder,
    types::{Decided, HoldSpec, Pending},
    who::{Approver, admits, authorize, caller_name, may_see},
};
use crate::{
    gate::{Held, HoldOutcome},
    identity::LocalPeer,
    policy::{FourEyesPair, Grant},
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
    events: Arc<dyn ApprovalRecorder>,
    notifier: Notifier,
    /// The control socket, named in client-facing notices.
    socket: String,
    /// The approvals page's base URL, when it is served.
    page: Option<String>,
    /// Job and approver claims that name the same human (page decisions).
    four_eyes: Vec<FourEyesPair>,
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
        events: impl ApprovalRecorder,
        notifier: Notifier,
        control_socket: &std::path::Path,
    ) -> Approvals {
        Approvals::with_page(events, notifier, control_socket, None, Vec::new())
    }

    /// As [`Approvals::new`], with the approvals page at `page` (its base URL: holds are at
    /// `<page>/holds/<id>`, in notices and notifications) deciding with `four_eyes`.
    pub fn with_page(
        events: impl ApprovalRecorder,
        notifier: Notifier,
        control_socket: &std::path::Path,
        page: Option<String>,
        four_eyes: Vec<FourEyesPair>,
    ) -> Approvals {
        Approvals {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                events: Arc::new(events),
                notifier,
                socket: control_socket.display().to_string(),
                page: page.map(|p| p.trim_end_matches('/').to_string()),
                four_eyes,
            }),
        }
    }

    /// The page's URL of hold `id`, when the page is served.
    pub fn hold_url(&self, id: &str) -> Option<String> {
        self.inner.page.as_ref().map(|p| format!("{p}/holds/{id}"))
    }

    /// How a human approves `id`, for the notice the held client gets.
    fn how(&self, id: &str) -> String {
        let cli = format!(
            "`interlock approvals approve {id} --socket {}` (or `deny`)",
            self.inner.socket
        );
        match self.hold_url(id) {
            Some(url) => format!("an approver decides at {url} or runs {cli}"),
            None => format!("an approver runs {cli}"),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// True when a time-boxed grant covers this rule and target for `requester`'s job. A
    /// requester whose job cannot be identified is never covered.
    pub fn granted(&self, rule: &str, target: &str, requester: &super::Requester) -> bool {
        let Some(job) = JobKey::of(requester) else {
            return false;
        };
        let now = SystemTime::now();
        let mut st = self.state();
        st.grants.retain(|g| g.until > now);
        st.grants.iter().any(|g| g.covers(rule, target, &job))
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
        let how = self.how(&id);
        self.inner.events.requested(view.clone()).await;
        self.inner
            .notifier
            .held(&view, &how, self.hold_url(&id).as_deref());
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
        Held::new(id, view.rule.clone(), deadline, how, rx, withdraw)
    }

    /// Approves or denies `id` for `who`.
    ///
    /// # Errors
    /// Unknown or already decided id; an approver who is not one of the rule's, or who is
    /// (or runs beside, or started the job of) the requester.
    pub async fn decide(
        &self,
        id: &str,
        who: &Approver,
        approve: bool,
        reason: Option<String>,
    ) -> Result<DecisionReport, ApprovalError> {
        self.may_decide(id, who)?;
        let by = who.display();
        let outcome = if approve {
            HoldOutcome::Approved { by, reason }
        } else {
            HoldOutcome::Denied { by, reason }
        };
        if !self.finish(id, outcome, Some(who)).await {
            // Expired or withdrawn between the check and now.
            return Err(ApprovalError::NotFound(id.to_string()));
        }
        Ok(DecisionReport {
            id: id.to_string(),
            approved: approve,
        })
    }

    /// Whether `who` may decide `id` now.
    ///
    /// # Errors
    /// As [`Approvals::decide`].
    pub fn may_decide(&self, id: &str, who: &Approver) -> Result<(), ApprovalError> {
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
        authorize(&e.view, who, &self.inner.four_eyes)
    }

    /// Ends `id` with `outcome` if it is still pending; false otherwise.
    async fn finish(&self, id: &str, outcome: HoldOutcome, by: Option<&Approver>) -> bool {
        let decided = {
            let mut st = self.state();
            let Some(entry) = st.pending.remove(id) else {
                return false;
            };
            let mut decided = Decided::new(entry.view, &outcome, by);
            if let (HoldOutcome::Approved { .. }, Grant::For(d)) = (&outcome, decided.pending.grant)
            {
                match JobKey::of(&decided.pending.requester) {
                    Some(job) => {
                        let until = SystemTime::now() + d;
                        st.grants.push(TimedGrant {
                            rule: decided.pending.rule.clone(),
                            target: decided.pending.target.clone(),
                            job,
                            until,
                        });
                        decided.granted_until = Some(until);
                    }
                    None => tracing::warn!(
                        id,
                        rule = %decided.pending.rule,
                        "approved for this request only: a timed grant needs the job's identity (a job token or CI context), and this request has none"
                    ),
                }
            }
            st.recent.push_back(decided.clone());
            while st.recent.len() > RECENT {
                st.recent.pop_front();
            }
            // A session that went away has dropped its receiver; fine.
            let _ = entry.tx.send(outcome);
            decided
        };
        self.inner.events.decided(decided).await;
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
        let who = Approver::Local(caller.clone());
        let st = self.state();
        let known = caller.uid == 0
            || approves_now
            || st.pending.values().any(|e| admits(&e.view, &who))
            || st.recent.iter().any(|d| admits(&d.pending, &who));
        if !known {
            return None;
        }
        drop(st);
        Some(self.visible(&who).0)
    }

    /// What `who` may see: pending requests, oldest first, and recently decided ones, newest
    /// first (at most `RECENT`). Someone who approves nothing sees two empty lists.
    pub fn visible(&self, who: &Approver) -> (Vec<Pending>, Vec<Decided>) {
        let st = self.state();
        let mut pending: Vec<Pending> = st
            .pending
            .values()
            .filter(|e| may_see(&e.view, who))
            .map(|e| e.view.clone())
            .collect();
        pending.sort_by_key(|p| p.requested_at);
        let decided = st
            .recent
            .iter()
            .rev()
            .filter(|d| may_see(&d.pending, who))
            .cloned()
            .collect();
        (pending, decided)
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
        caller: &Approver,
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
                who: match caller {
                    Approver::Local(c) => caller_name(c),
                    Approver::SignedIn(s, _) => s.display(),
                },
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
