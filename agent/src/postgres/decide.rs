//! Asking the gate about statements, and holding one until a human decides
//! while the session keeps relaying server messages and watches for the
//! client leaving or cancelling.

use std::sync::Arc;

use tokio::sync::watch;

use super::{
    classify::Classified,
    error::{PgError, ProtocolError},
    frame::Frame,
    legs::{error, read_err},
    mask::MaskPlan,
    message::{ErrorFields, FrontendMessage},
    relay::Relay,
};
use crate::gate::{HoldOutcome, Request, Side, StatementClass, Verdict};

/// Most client messages kept while a statement is held (a client may
/// pipeline behind it; the server has not seen any of them yet)...
pub(crate) const MAX_DEFERRED: usize = 4096;
/// ...and most bytes.
pub(crate) const MAX_DEFERRED_BYTES: usize = 64 * 1024 * 1024;

/// The outcome for a request (all of its statements).
pub(crate) enum Decision {
    /// Go ahead; the masking for each statement, in order.
    Allowed(Vec<Vec<Arc<MaskPlan>>>),
    /// Refused: the ErrorResponse the client gets.
    Refused(Frame),
    /// The client went away while a statement was held.
    ClientGone,
}

enum Waited {
    Outcome(HoldOutcome),
    Cancelled,
    Client(Option<Frame>),
    Server(Option<Frame>),
}

/// The client-facing error for a blocked statement.
pub(crate) fn blocked(rule: &str, message: &str, text: &str) -> Frame {
    ErrorFields::new(
        "ERROR",
        "42501",
        &format!("interlock: statement blocked by rule \"{rule}\": {message}"),
    )
    .with(b'D', &format!("statement: {text}"))
    .error_frame()
}

impl Relay<'_> {
    /// Decides every statement; the first refusal refuses the request.
    pub(crate) async fn decide_all(&mut self, stmts: &[Classified]) -> Result<Decision, PgError> {
        let mut masks = Vec::with_capacity(stmts.len());
        for s in stmts {
            let request = Request::Statement {
                text: s.text.clone(),
                classes: s.classes.clone(),
            };
            // A cancel counts from here: one that arrives while the gate
            // decides (a hold is visible to approvers before it is
            // returned) cancels the held statement.
            let mut cancel = self.cancel.clone();
            cancel.borrow_and_update();
            let verdict = self.gate.decide(&request).await;
            match verdict {
                Verdict::Allow { mask, .. } => {
                    // Fail closed: masking we cannot apply refuses the statement.
                    match mask
                        .iter()
                        .map(MaskPlan::new)
                        .collect::<Result<Vec<_>, _>>()
                    {
                        // Column rules need RowDescription; COPY TO has none.
                        Ok(plans)
                            if s.classes.contains(&StatementClass::CopyTo)
                                && plans.iter().any(MaskPlan::has_columns) =>
                        {
                            let msg = "interlock: COPY TO of masked columns is refused";
                            return Ok(Decision::Refused(error("42501", msg)));
                        }
                        Ok(plans) => masks.push(plans.into_iter().map(Arc::new).collect()),
                        Err(e) => {
                            let msg = format!("interlock: {e}; statement refused");
                            return Ok(Decision::Refused(error("42501", &msg)));
                        }
                    }
                }
                Verdict::Block { rule, message } => {
                    return Ok(Decision::Refused(blocked(&rule, &message, &s.text)));
                }
                Verdict::Hold(held) => {
                    let d = self.hold(held, &s.text, cancel).await?;
                    if !matches!(d, Decision::Allowed(_)) {
                        return Ok(d);
                    }
                    masks.push(vec![]);
                }
            }
        }
        Ok(Decision::Allowed(masks))
    }

    /// Waits for `held`'s outcome; `cancel` changes when the client cancels.
    async fn hold(
        &mut self,
        held: crate::gate::Held,
        text: &str,
        mut cancel: watch::Receiver<u64>,
    ) -> Result<Decision, PgError> {
        let (id, rule) = (held.approval_id.clone(), held.rule.clone());
        let notice = ErrorFields::new(
            "NOTICE",
            "01000",
            &format!(
                "interlock: statement held for approval {id} (rule \"{rule}\"); {}",
                held.how_to_approve
            ),
        )
        .with(b'D', &format!("statement: {text}"));
        let notice = self.encoding.transcode(notice.notice_frame());
        self.legs.client_w.send(&notice).await?;
        let outcome = held.outcome();
        tokio::pin!(outcome);
        loop {
            let legs = &mut *self.legs;
            // Dropping `outcome` (any return below) drops the hold, which withdraws it.
            let waited = tokio::select! {
                o = &mut outcome => Waited::Outcome(o),
                Ok(()) = cancel.changed() => Waited::Cancelled,
                r = legs.client_r.read_frame() => Waited::Client(r.map_err(|e| read_err(Side::Client, e))?),
                r = legs.server_r.read_frame() => Waited::Server(r.map_err(|e| read_err(Side::Server, e))?),
            };
            match waited {
                Waited::Outcome(o) => return Ok(outcome_decision(o, &id, &rule)),
                Waited::Cancelled => {
                    return Ok(Decision::Refused(error(
                        "57014",
                        "canceling statement due to user request",
                    )));
                }
                Waited::Client(None) => return Ok(Decision::ClientGone),
                Waited::Client(Some(f)) => {
                    if matches!(FrontendMessage::decode(&f), Ok(FrontendMessage::Terminate)) {
                        return Ok(Decision::ClientGone);
                    }
                    self.deferred.push_back(f);
                    let bytes: usize = self.deferred.iter().map(|f| f.raw().len()).sum();
                    if self.deferred.len() > MAX_DEFERRED || bytes > MAX_DEFERRED_BYTES {
                        // Dropping `outcome` on return withdraws the hold.
                        return Err(PgError::protocol(
                            Side::Client,
                            ProtocolError::DeferredLimit {
                                messages: MAX_DEFERRED,
                                bytes: MAX_DEFERRED_BYTES,
                            },
                        ));
                    }
                }
                Waited::Server(Some(f)) => self.on_server(f).await?,
                Waited::Server(None) => return Err(PgError::UpstreamClosed),
            }
        }
    }
}

fn outcome_decision(o: HoldOutcome, id: &str, rule: &str) -> Decision {
    let msg = match o {
        HoldOutcome::Approved { .. } => return Decision::Allowed(vec![]),
        HoldOutcome::Denied { by, reason } => match reason {
            Some(r) => {
                format!("interlock: statement denied by {by} (approval {id}, rule \"{rule}\"): {r}")
            }
            None => format!("interlock: statement denied by {by} (approval {id}, rule \"{rule}\")"),
        },
        HoldOutcome::Expired => {
            format!("interlock: approval {id} expired (rule \"{rule}\"); statement not run")
        }
        HoldOutcome::Withdrawn => {
            format!("interlock: approval {id} was withdrawn (rule \"{rule}\"); statement not run")
        }
    };
    Decision::Refused(error("42501", &msg))
}
