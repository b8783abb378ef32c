//! The one interface every protocol session uses to ask for decisions and to
//! report what happened (warpgate-style: protocols word replies, the gate
//! decides and records). A session gets one [`Gate`] for its lifetime; the
//! daemon's implementation evaluates the policy for the session's identity,
//! registers holds with the approval registry and turns records into audit
//! events. Tests plug in their own implementation.

use std::{future::Future, pin::Pin, time::SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

// The request and masking model is policy's (it decides on them); the gate
// re-exports it so sessions name one module.
pub use crate::policy::{CommandKind, MaskRule, MaskSpec, Request, StatementClass, Strategy};

/// The gate's answer.
#[derive(Debug)]
pub enum Verdict {
    /// Go ahead. `mask` lists the masking rules that apply to this request's
    /// results (empty: none).
    Allow {
        rule: Option<String>,
        mask: Vec<MaskRule>,
    },
    /// Refuse with `message` (for the client), naming `rule`.
    Block { rule: String, message: String },
    /// Wait for a human: tell the client about `held.approval_id`, then await
    /// [`Held::outcome`]. An approved request is masked by [`Held::mask`],
    /// exactly as an allowed one would be.
    Hold(Held),
    /// Refuse: the audit log cannot be written, so the request could not be
    /// recorded. `message` (for the client) names the audit log and the
    /// cause. PostgreSQL answers SQLSTATE 53100, SSH a line on stderr, tcp
    /// a reset. Nothing of the refused request is recorded; the outage's
    /// record counts it.
    Unavailable { message: String },
}

/// How a hold ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldOutcome {
    Approved {
        by: String,
        reason: Option<String>,
    },
    Denied {
        by: String,
        reason: Option<String>,
    },
    Expired,
    /// The daemon is shutting down or the registry went away: treat as denied.
    Withdrawn,
}

/// A request waiting for approval. Dropping it withdraws the request
/// (e.g. the client cancelled or disconnected).
pub struct Held {
    pub approval_id: String,
    pub rule: String,
    pub deadline: SystemTime,
    /// How a human approves, for the client-facing notice.
    pub how_to_approve: String,
    mask: Vec<MaskRule>,
    outcome: oneshot::Receiver<HoldOutcome>,
    withdraw: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("approval_id", &self.approval_id)
            .field("rule", &self.rule)
            .finish_non_exhaustive()
    }
}

impl Held {
    /// A hold whose outcome arrives on `outcome`; `withdraw` runs if the
    /// hold is dropped before an outcome was taken.
    pub fn new(
        approval_id: String,
        rule: String,
        deadline: SystemTime,
        how_to_approve: String,
        outcome: oneshot::Receiver<HoldOutcome>,
        withdraw: Box<dyn FnOnce() + Send>,
    ) -> Held {
        Held {
            approval_id,
            rule,
            deadline,
            how_to_approve,
            mask: vec![],
            outcome,
            withdraw: Some(withdraw),
        }
    }

    /// The same hold, its results masked by `mask` once approved.
    pub fn with_mask(mut self, mask: Vec<MaskRule>) -> Held {
        self.mask = mask;
        self
    }

    /// The masking for the request's results if it is approved.
    pub fn mask(&self) -> &[MaskRule] {
        &self.mask
    }

    /// Waits for the decision. A vanished registry counts as withdrawn.
    pub async fn outcome(mut self) -> HoldOutcome {
        let r = (&mut self.outcome).await;
        self.withdraw = None;
        r.unwrap_or(HoldOutcome::Withdrawn)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(w) = self.withdraw.take() {
            w();
        }
    }
}

/// Something a session reports for the audit trail. Values that were masked
/// and credentials never appear here.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    /// A statement that ran (after `Allow` or an approved hold).
    Statement {
        /// The statement with secrets (passwords) redacted.
        text: String,
        classes: Vec<StatementClass>,
        /// Why it is `opaque`, when it is.
        opaque: Option<String>,
        /// Bind parameters (extended protocol), value detectors applied:
        /// text values as sent, `<binary N bytes>` for binary ones, `None`
        /// for NULL.
        params: Vec<Option<String>>,
        /// Rows returned or affected, when the server said.
        rows: Option<u64>,
        /// The server's error SQLSTATE, if it failed.
        error: Option<String>,
        duration_ms: u64,
    },
    /// Values replaced by masking in one statement's results.
    Masked {
        rule: String,
        /// `schema.table.column` (or `detector:<name>`) -> values masked.
        counts: Vec<(String, u64)>,
    },
    /// An SSH request that ran (after `Allow` or an approved hold).
    Command {
        kind: CommandKind,
        text: String,
        exit_status: Option<u32>,
        /// The signal that ended it (`TERM`, `KILL`, ...), if one did.
        exit_signal: Option<String>,
        duration_ms: u64,
        /// The terminal recording of its PTY, once closed.
        recording: Option<RecordingRef>,
    },
    /// A command line typed into an SSH shell, reconstructed from the PTY
    /// input stream. Best effort: tab completion, history and cursor
    /// movement happen in the shell, so it can differ from what ran; it was
    /// not decided on its own (the shell was).
    ShellLine { text: String },
    /// A protocol error on one side; the session may end because of it.
    ProtocolError { side: Side, message: String },
    /// SSH: a login the target does not allow (`upstream.users`), after the
    /// session was decided; the session is refused.
    LoginRefused { user: String, message: String },
    /// SSH: an environment variable the client asked to pass (`env`
    /// request), and whether the target's `upstream.env` let it through.
    /// The value of a refused one is never recorded.
    Env {
        name: String,
        /// `None` when refused.
        value: Option<String>,
        allowed: bool,
    },
    /// How the client's leg is protected, reported before the session is
    /// decided (it becomes part of `session_started`). `tls_unavailable`:
    /// why TLS could not be offered (the client was answered 'N').
    ClientLeg {
        leg: ClientLeg,
        tls_unavailable: Option<String>,
    },
}

/// How a PostgreSQL client's leg to interlock is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientLeg {
    /// No TLS (the client did not ask, or was answered 'N').
    Plain,
    /// TLS after an SSLRequest.
    Tls,
    /// PostgreSQL 17 direct TLS (no SSLRequest, ALPN "postgresql").
    DirectTls,
}

/// A terminal recording as the audit trail proves it: where the proxy
/// wrote it, and its size and SHA-256 when it was closed, so a recording
/// changed later is detected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingRef {
    /// The asciicast file (`<state dir>/recordings/<session>-<channel>.cast`).
    pub path: std::path::PathBuf,
    pub bytes: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// Which side of a proxied session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Client,
    Server,
}

/// A boxed future, for the dyn-compatible [`Gate`] trait.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Decisions and records for one session.
pub trait Gate: Send + Sync {
    /// Decides `request` for this session's identity and target.
    fn decide<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Verdict>;
    /// Records `record` in the audit trail (and the session's recording).
    fn record(&self, record: Record) -> BoxFuture<'_, ()>;
    /// The masking for results interlock cannot tie to a request it
    /// decided (a cursor or prepared statement created in SQL or by a
    /// function): every mask rule that could apply to this session.
    fn possible_masks(&self) -> Vec<MaskRule>;
    /// The job token the client presented (or why it was not asked for),
    /// before the session is decided: the session decision verifies it. A
    /// gate that does not use job tokens ignores it.
    fn present_token(&self, presented: crate::oidc::Presented) {
        drop(presented);
    }
    /// SSH: the login the client asked for, before the session is decided
    /// when it is decided at authentication (and before any channel): rules
    /// on `ssh_user` see it; a login whose `upstream` is `None` refuses the
    /// session. A gate that does not use it ignores it.
    fn present_login(&self, login: crate::policy::SshLogin) {
        drop(login);
    }
}
