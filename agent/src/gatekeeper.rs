//! The daemon's [`Gate`]: policy -> approval -> audit, written once for
//! every protocol. It evaluates the policy in force (a reload between two
//! requests of a session applies to the second), holds requests in the
//! approval registry, remembers session grants, and turns session records
//! into audit events at the session's recording level. Nothing is admitted
//! while the audit log cannot be written, and a session whose start cannot
//! be recorded is refused (design.md: a record that cannot be written
//! refuses the request it records).

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, PoisonError, RwLock},
};

use tokio::sync::oneshot;
use tracing::debug;

use crate::{
    approval::{HoldSpec, RequestView, Requester},
    audit::{Admission, DecisionView, Disposition, EventKind, SessionOutcome},
    context::AppContext,
    gate::{
        BoxFuture, ClientLeg, CommandKind, Gate, Held, HoldOutcome, MaskRule, Record, Request,
        Verdict,
    },
    identity::EnvToken,
    identity::FlowIdentity,
    oidc::{JobTokenView, Presented, TokenError, TokenSource},
    policy::{
        Action, Decision, Grant, JobTokenMode, LOGIN_RULE, RecordLevel, SshLogin, Subject, Target,
    },
};

/// The pseudo-rule named when an SSH `env` request is refused.
pub const ENV_RULE: &str = "upstream.env";

/// The pseudo-rule named when a session is refused for its job token.
pub const JOB_TOKEN_RULE: &str = "job_token";

/// Decisions awaiting their records (pipelined statements); older ones are
/// dropped first, which only loses the rule name on a record.
const PENDING_DECISIONS: usize = 1024;

/// One session's gate.
pub struct DaemonGate {
    ctx: AppContext,
    session_id: String,
    identity: Arc<FlowIdentity>,
    /// Swapped once, when the session decision adds the verified job token.
    subject: RwLock<Arc<Subject>>,
    /// The job root's token, until the session decision verifies it.
    env_token: Mutex<Option<EnvToken>>,
    /// The target as it was when the session started, in case a reload
    /// removes it mid-session.
    target: Target,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    record: RecordLevel,
    /// Rules approved for the rest of this session (`grant: session`).
    session_grants: Vec<String>,
    /// (SSH request kind, request text, decision, record level); `None`
    /// kind for statements.
    decisions: VecDeque<(Option<CommandKind>, String, DecisionView, RecordLevel)>,
    /// Set when the session itself was blocked or its hold not approved.
    refused: Option<(SessionOutcome, String)>,
    /// The client leg as the protocol reported it, for `session_started`.
    client_leg: Option<(ClientLeg, Option<String>)>,
    /// The token the client presented, until the session decision.
    presented: Option<Presented>,
    /// The session was refused because the audit log could not be written:
    /// nothing of it is recorded (the outage's record counts it).
    unrecorded: bool,
    /// SSH: the login the client asked for, for the session's records.
    ssh_login: Option<SshLogin>,
    /// SSH: environment variables passed upstream, for `session_ended`.
    ssh_env: Vec<String>,
}

impl DaemonGate {
    /// A gate for the session `session_id` of `identity` to `target`.
    pub fn new(
        ctx: AppContext,
        session_id: String,
        identity: FlowIdentity,
        target: Target,
    ) -> DaemonGate {
        DaemonGate {
            subject: RwLock::new(Arc::new(Subject::from(&identity.process))),
            env_token: Mutex::new(None),
            ctx,
            session_id,
            identity: Arc::new(identity),
            target,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// The same gate, with the job token found in the job root's environment.
    pub fn with_env_token(self, token: Option<EnvToken>) -> DaemonGate {
        *self
            .env_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = token;
        self
    }

    fn subject(&self) -> Arc<Subject> {
        Arc::clone(&self.subject.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Verifies the session's job token: the one the client presented, else the job root's.
    /// `Ok(None)`: no token, and the target does not require one. Errors: the token that was
    /// refused (with where it came from), or a required token that is missing.
    async fn check_job_token(
        &self,
    ) -> Result<Option<crate::oidc::JobIdentity>, (Option<TokenSource>, TokenError)> {
        let presented = self.state().presented.take();
        let env = self
            .env_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let (source, token) = match (presented, env) {
            (Some(Presented::NotAsked { source, why }), _) => {
                return Err((Some(source), TokenError::NotAsked(why)));
            }
            (Some(Presented::Token(source, token)), _) => (
                source,
                crate::oidc::BearerToken::new(token.expose().to_string()),
            ),
            (None, Some(env)) => (
                TokenSource::JobRootEnv {
                    variable: env.variable.clone(),
                },
                crate::oidc::BearerToken::new(env.expose().to_string()),
            ),
            (None, None) if self.target.job_token == JobTokenMode::Required => {
                return Err((None, TokenError::Missing));
            }
            (None, None) => return Ok(None),
        };
        let policy = self.ctx.policy();
        match policy
            .verifier()
            .verify(token.expose(), source.clone())
            .await
        {
            Ok(id) => Ok(Some(id)),
            Err(e) => Err((Some(source), e)),
        }
    }

    /// The session's decision: the job token first (a refused or missing-but-required one
    /// refuses the session), then the policy. Returns the decision and the token's record.
    async fn decide_session(&self, target: &Target) -> (Decision, Option<JobTokenView>) {
        let policy = self.ctx.policy();
        match self.check_job_token().await {
            Ok(job) => {
                let view = job.as_ref().map(|j| j.view());
                if let Some(job) = job {
                    let mut s = (*self.subject()).clone();
                    s.job = Some(Arc::new(job));
                    *self.subject.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(s);
                }
                // A login the target does not allow is refused before any rule.
                if let Some(login) = self.subject().ssh_login.as_ref()
                    && login.upstream.is_none()
                {
                    let message = target
                        .ssh_login_user(&login.requested)
                        .err()
                        .unwrap_or_else(|| "login refused".into());
                    tracing::warn!(%message, "session refused");
                    let d = Decision {
                        action: Action::Block { message },
                        rule: Some(LOGIN_RULE.into()),
                        mask: Vec::new(),
                        record: None,
                    };
                    return (d, view);
                }
                (
                    policy.decide(target, &self.subject(), &Request::Session),
                    view,
                )
            }
            Err((source, e)) => {
                let message = match &e {
                    TokenError::NotAsked(_) => e.to_string(),
                    other => format!("job token refused: {other}"),
                };
                tracing::warn!(%message, "session refused");
                let view = source.map(|s| {
                    let mut v = JobTokenView::refused(s, &e);
                    v.error = Some(message.clone());
                    v
                });
                let d = Decision {
                    action: Action::Block { message },
                    rule: Some(JOB_TOKEN_RULE.into()),
                    mask: Vec::new(),
                    record: None,
                };
                (d, view)
            }
        }
    }

    /// Who makes this session's requests, with its verified job token once the session
    /// decision verified one (timed grants and four eyes go by it).
    fn requester(&self) -> Requester {
        let mut r = Requester::from(&*self.identity);
        r.job = self.subject().job.as_ref().map(|j| j.view());
        r
    }

    /// The session's id.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The session's flow identity.
    pub fn identity(&self) -> &FlowIdentity {
        &self.identity
    }

    /// How the session was refused, if the policy refused it (a block, or
    /// a hold that was not approved); protocols end such sessions quietly.
    pub fn refused(&self) -> Option<(SessionOutcome, String)> {
        self.state().refused.clone()
    }

    /// Records the session's end, unless the session was refused because
    /// the audit log could not be written (it leaves no record at all). A
    /// session that ended before it was decided (a client that left during
    /// startup) has an end without a start, as before.
    pub async fn ended(
        &self,
        outcome: SessionOutcome,
        bytes: (u64, u64),
        duration_ms: u64,
        error: Option<String>,
    ) {
        let (ssh_login, ssh_env) = {
            let mut st = self.state();
            if st.unrecorded {
                return;
            }
            (st.ssh_login.clone(), std::mem::take(&mut st.ssh_env))
        };
        self.ctx
            .events()
            .record(EventKind::SessionEnded {
                session_id: self.session_id.clone(),
                target: self.identity.target.clone(),
                outcome,
                bytes_client_to_server: bytes.0,
                bytes_server_to_client: bytes.1,
                duration_ms,
                error,
                ssh_login,
                ssh_env,
            })
            .await;
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn decide_now(&self, request: &Request) -> Verdict {
        let admission = match request {
            Request::Session => Admission::Session,
            _ => Admission::Request,
        };
        // Fail closed: what cannot be recorded is not done.
        if let Err(e) = self.ctx.events().health().admit(admission) {
            debug!(?admission, "refused: the audit log cannot be written");
            if admission == Admission::Session {
                self.state().unrecorded = true;
            }
            return Verdict::Unavailable {
                message: e.to_string(),
            };
        }
        let policy = self.ctx.policy();
        let target = policy
            .target_named(&self.target.name)
            .unwrap_or(&self.target);
        let (d, job_view) = match request {
            Request::Session => self.decide_session(target).await,
            _ => (policy.decide(target, &self.subject(), request), None),
        };
        let level = match request {
            Request::Session => {
                let level = d.record.unwrap_or_default();
                self.state().record = level;
                level
            }
            // A statement- or command-scoped `record` overrides the session's
            // (policy::eval lets one keyed on the request only raise it).
            _ => match d.record {
                Some(level) => level,
                None => self.state().record,
            },
        };
        let (verdict, view) = match d.action {
            Action::Allow => (
                Verdict::Allow {
                    rule: d.rule.clone(),
                    mask: d.mask,
                },
                view(Disposition::Allowed, d.rule),
            ),
            Action::Block { message } => {
                let rule = d.rule.clone().unwrap_or_else(|| "default".into());
                if matches!(request, Request::Session) {
                    self.state().refused = Some((SessionOutcome::Blocked, message.clone()));
                }
                if !matches!(request, Request::Session) {
                    self.ctx
                        .events()
                        .record(EventKind::RequestBlocked {
                            session_id: self.session_id.clone(),
                            target: self.target.name.clone(),
                            request: RequestView::of(request, self.identity.original_destination),
                            rule: rule.clone(),
                            message: message.clone(),
                        })
                        .await;
                }
                (
                    Verdict::Block { rule, message },
                    view(Disposition::Blocked, d.rule),
                )
            }
            Action::RequireApproval(spec) => {
                let rule = d.rule.clone().unwrap_or_default();
                let requester = self.requester();
                let granted = self.state().session_grants.contains(&rule)
                    || self
                        .ctx
                        .approvals()
                        .granted(&rule, &self.target.name, &requester);
                if granted {
                    (
                        Verdict::Allow {
                            rule: d.rule.clone(),
                            mask: d.mask,
                        },
                        view(Disposition::Approved, d.rule),
                    )
                } else {
                    let grant = spec.grant;
                    let mask = d.mask;
                    let held = self
                        .ctx
                        .approvals()
                        .hold(HoldSpec {
                            session_id: self.session_id.clone(),
                            target: self.target.name.clone(),
                            rule: rule.clone(),
                            request: RequestView::of(request, self.identity.original_destination),
                            requester,
                            approval: spec,
                        })
                        .await;
                    let session = matches!(request, Request::Session);
                    (
                        Verdict::Hold(self.watch(held, grant, session).with_mask(mask)),
                        view(Disposition::Approved, d.rule),
                    )
                }
            }
        };
        match request {
            Request::Session => {
                let (client_leg, client_tls_unavailable) = match self.state().client_leg.take() {
                    Some((leg, error)) => (Some(leg), error),
                    None => (None, None),
                };
                let ssh_login = self.state().ssh_login.clone();
                let mut identity = (*self.identity).clone();
                identity.job_token = job_view;
                // Confirmed: a session whose start is not in the log does not run.
                let started = self
                    .ctx
                    .events()
                    .emit_confirmed(EventKind::SessionStarted {
                        session_id: self.session_id.clone(),
                        identity: Box::new(identity),
                        client_leg,
                        client_tls_unavailable,
                        ssh_login,
                        decision: match &verdict {
                            Verdict::Hold(_) => DecisionView {
                                action: Disposition::Held,
                                rule: view.rule.clone(),
                            },
                            _ => view,
                        },
                    })
                    .await;
                match started {
                    Ok(_) => {}
                    // Dropping `verdict` withdraws a hold.
                    Err(e) => {
                        self.state().unrecorded = true;
                        return Verdict::Unavailable {
                            message: e.to_string(),
                        };
                    }
                }
            }
            Request::Statement { text, .. } | Request::Command { text, .. } => {
                let kind = match request {
                    Request::Command { kind, .. } => Some(*kind),
                    _ => None,
                };
                let mut st = self.state();
                if st.decisions.len() >= PENDING_DECISIONS {
                    st.decisions.pop_front();
                }
                st.decisions.push_back((kind, text.clone(), view, level));
            }
        }
        verdict
    }

    /// Passes `held` on to the session, noting a session grant when it is
    /// approved. Dropping the returned hold drops `held` (withdrawing it).
    fn watch(self: &DaemonGate, held: Held, grant: Grant, session: bool) -> Held {
        let (tx, rx) = oneshot::channel();
        let (id, rule, deadline, how) = (
            held.approval_id.clone(),
            held.rule.clone(),
            held.deadline,
            held.how_to_approve.clone(),
        );
        let state = Arc::clone(&self.state);
        let granted_rule = rule.clone();
        let mut tx = tx;
        tokio::spawn(async move {
            tokio::select! {
                outcome = held.outcome() => {
                    let approved = matches!(outcome, HoldOutcome::Approved { .. });
                    let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
                    if grant == Grant::Session && approved && !st.session_grants.contains(&granted_rule) {
                        st.session_grants.push(granted_rule);
                    }
                    if session && !approved {
                        st.refused = Some((SessionOutcome::NotApproved, format!("{outcome:?}")));
                    }
                    drop(st);
                    let _ = tx.send(outcome);
                }
                // The session dropped its hold: `held` drops here, withdrawing it.
                _ = tx.closed() => {
                    if session {
                        state.lock().unwrap_or_else(PoisonError::into_inner).refused =
                            Some((SessionOutcome::NotApproved, "withdrawn".into()));
                    }
                }
            }
        });
        Held::new(id, rule, deadline, how, rx, Box::new(|| {}))
    }

    /// The decision and level of the shell a typed line belongs to: a
    /// shell still waiting for its record (the oldest, if several are
    /// open), left in place for that record; else the session's.
    fn open_shell(&self) -> (DecisionView, RecordLevel) {
        let st = self.state();
        st.decisions
            .iter()
            .find(|(k, t, ..)| *k == Some(CommandKind::Shell) && t == SHELL)
            .map(|(_, _, v, l)| (v.clone(), *l))
            .unwrap_or((
                DecisionView {
                    action: Disposition::Allowed,
                    rule: None,
                },
                st.record,
            ))
    }

    async fn record_now(&self, record: Record) {
        if self.state().unrecorded {
            return;
        }
        let target = self.target.name.clone();
        let session_id = self.session_id.clone();
        let take = |kind: Option<CommandKind>, text: &str| {
            let mut st = self.state();
            let pos = st.decisions.iter().position(|(k, t, ..)| {
                *k == kind && (t == text || k.is_some() && decided_as(t, text))
            });
            let found = pos.and_then(|p| st.decisions.remove(p));
            let level = st.record;
            found.map(|(_, _, v, l)| (v, l)).unwrap_or((
                DecisionView {
                    action: Disposition::Allowed,
                    rule: None,
                },
                level,
            ))
        };
        let kind = match record {
            Record::Statement {
                text,
                classes,
                opaque,
                params,
                rows,
                error,
                duration_ms,
            } => {
                let (decision, level) = take(None, &text);
                let full = level == RecordLevel::Full;
                EventKind::Statement {
                    session_id,
                    target,
                    text: full.then_some(text),
                    // Parameters are values: only at level full, and never empty noise.
                    params: (full && !params.is_empty()).then_some(params),
                    classes,
                    opaque,
                    decision,
                    rows,
                    error,
                    duration_ms,
                }
            }
            Record::Command {
                kind,
                text,
                exit_status,
                exit_signal,
                duration_ms,
                recording,
            } => {
                let (decision, level) = take(Some(kind), &text);
                EventKind::Command {
                    session_id,
                    target,
                    command_kind: kind,
                    text: (level == RecordLevel::Full).then_some(text),
                    decision,
                    exit_status,
                    exit_signal,
                    duration_ms,
                    reconstructed: false,
                    recording,
                }
            }
            Record::ShellLine { text } => {
                let (decision, level) = self.open_shell();
                EventKind::Command {
                    session_id,
                    target,
                    command_kind: CommandKind::Shell,
                    text: (level == RecordLevel::Full).then_some(text),
                    decision,
                    exit_status: None,
                    exit_signal: None,
                    duration_ms: 0,
                    reconstructed: true,
                    recording: None,
                }
            }
            Record::Masked { rule, counts } => EventKind::Masked {
                session_id,
                target,
                rule,
                counts,
            },
            Record::ProtocolError { side, message } => EventKind::ProtocolError {
                session_id,
                target,
                side,
                message,
            },
            Record::LoginRefused { user, message } => {
                self.state().refused = Some((SessionOutcome::Blocked, message.clone()));
                EventKind::RequestBlocked {
                    session_id,
                    target,
                    request: crate::approval::RequestView::Login { user },
                    rule: LOGIN_RULE.into(),
                    message,
                }
            }
            Record::Env {
                name,
                value,
                allowed: true,
            } => {
                let mut st = self.state();
                let shown = match (st.record, value) {
                    (RecordLevel::Full, Some(value)) => format!("{name}={value}"),
                    _ => name,
                };
                st.ssh_env.push(shown);
                return;
            }
            Record::Env { name, .. } => {
                let message = format!(
                    "environment variable {} is not in the target's `upstream.env`",
                    crate::text::escape_controls(&name)
                );
                EventKind::RequestBlocked {
                    session_id,
                    target,
                    request: crate::approval::RequestView::Env { name },
                    rule: ENV_RULE.into(),
                    message,
                }
            }
            // Reported before the session is decided; `session_started` carries it.
            Record::ClientLeg {
                leg,
                tls_unavailable,
            } => {
                self.state().client_leg = Some((leg, tls_unavailable));
                return;
            }
        };
        self.ctx.events().record(kind).await;
    }
}

fn view(action: Disposition, rule: Option<String>) -> DecisionView {
    DecisionView { action, rule }
}

impl Gate for DaemonGate {
    fn decide<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Verdict> {
        Box::pin(self.decide_now(request))
    }

    fn record(&self, record: Record) -> BoxFuture<'_, ()> {
        Box::pin(self.record_now(record))
    }

    fn possible_masks(&self) -> Vec<MaskRule> {
        let policy = self.ctx.policy();
        let target = policy
            .target_named(&self.target.name)
            .unwrap_or(&self.target);
        policy.possible_masks(target, &self.subject())
    }

    fn present_token(&self, presented: Presented) {
        self.state().presented = Some(presented);
    }

    fn present_login(&self, login: SshLogin) {
        let mut s = (*self.subject()).clone();
        s.ssh_login = Some(login.clone());
        *self.subject.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(s);
        self.state().ssh_login = Some(login);
    }
}

/// The request text of a shell (SSH proxy).
const SHELL: &str = "shell";

/// Whether a record's `recorded` text reports the request decided as
/// `decided`: the same text, or (sftp) the file's path followed by what
/// moved, `PATH: N bytes written` or `PATH (unfinished)`.
fn decided_as(decided: &str, recorded: &str) -> bool {
    recorded
        .strip_prefix(decided)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(": ") || rest == " (unfinished)")
}

#[cfg(test)]
mod tests {
    use super::decided_as;

    #[test]
    fn sftp_records_find_their_decision() {
        assert!(decided_as("ls -l", "ls -l"));
        assert!(decided_as("/a/f", "/a/f: 17 bytes written"));
        assert!(decided_as("/a/f", "/a/f: 0 bytes read (unfinished)"));
        assert!(decided_as("/a/d", "/a/d (unfinished)"));
        assert!(!decided_as("/a/f", "/a/fg: 1 bytes written"));
        assert!(!decided_as("ls", "ls -l"));
        assert!(!decided_as("shell", "shell (recording /r/s-1.cast)"));
    }
}
