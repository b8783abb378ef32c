//! Asking the gate about statements, and holding one until a human decides
//! while the session keeps relaying server messages and watches for the
//! client leaving or cancelling.

use tokio::sync::watch;

use super::{
    classify::Classified,
    error::PgError,
    frame::Frame,
    legs::{Input, error},
    mask::Masks,
    message::{ErrorFields, FrontendMessage},
    relay::Relay,
};
use crate::gate::{HoldOutcome, MaskRule, Request, StatementClass, Verdict};

/// Client bytes kept while a statement is held (a client may pipeline
/// behind it; the server has not seen any of them yet), at which
/// interlock stops reading the client until the hold ends: backpressure,
/// not an error, so a long pipeline behind a held statement waits.
pub(crate) const MAX_DEFERRED_BYTES: usize = 4 * 1024 * 1024;

/// The outcome for a request (all of its statements).
pub(crate) enum Decision {
    /// Go ahead; the masking for each statement, in order.
    Allowed(Vec<Masks>),
    /// Refused: the ErrorResponse the client gets.
    Refused(Frame),
    /// The client went away while a statement was held.
    ClientGone,
}

enum Waited {
    Outcome(HoldOutcome),
    Cancelled,
    Input(Input),
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
    /// A held statement that is approved is masked as an allowed one.
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
                Verdict::Allow { mask, .. } => match self.masks_for(s, mask) {
                    Ok(m) => masks.push(m),
                    Err(reply) => return Ok(Decision::Refused(reply)),
                },
                Verdict::Block { rule, message } => {
                    return Ok(Decision::Refused(blocked(&rule, &message, &s.text)));
                }
                Verdict::Hold(held) => {
                    // Masking that cannot apply refuses before anyone is asked.
                    let m = match self.masks_for(s, held.mask().to_vec()) {
                        Ok(m) => m,
                        Err(reply) => return Ok(Decision::Refused(reply)),
                    };
                    let d = self.hold(held, &s.text, cancel).await?;
                    if !matches!(d, Decision::Allowed(_)) {
                        return Ok(d);
                    }
                    masks.push(m);
                }
            }
        }
        Ok(Decision::Allowed(masks))
    }

    /// The masking for `s` by `rules`; the client's error when it cannot be
    /// applied (fail closed: the statement is refused).
    fn masks_for(&self, s: &Classified, rules: Vec<MaskRule>) -> Result<Masks, Frame> {
        let masks = Masks::new(rules, self.key.clone());
        let refuse = |why: String| error("42501", &format!("interlock: {why}; statement refused"));
        masks.check().map_err(|e| refuse(e.to_string()))?;
        let rule = |pick: fn(&MaskRule) -> bool| {
            masks
                .rules()
                .iter()
                .find(|r| pick(r))
                .map(|r| r.rule.clone())
        };
        // Column rules need a RowDescription; COPY TO has none.
        if s.classes.contains(&StatementClass::CopyTo)
            && let Some(r) = rule(|r| !r.spec.columns().is_empty())
        {
            return Err(refuse(format!(
                "COPY TO of masked columns cannot be masked (rule \"{r}\")"
            )));
        }
        if s.binary_copy
            && let Some(r) = rule(|_| true)
        {
            return Err(refuse(format!(
                "binary COPY output cannot be masked (rule \"{r}\"); use FORMAT text or csv"
            )));
        }
        Ok(masks)
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
        self.legs.client_w.push(&notice);
        let outcome = held.outcome();
        tokio::pin!(outcome);
        let mut deferred_bytes: usize = self.deferred.iter().map(|f| f.raw().len()).sum();
        loop {
            // Server messages keep flowing to the client and queued bytes
            // keep going out while the hold waits (see `legs`).
            let read_client = deferred_bytes < MAX_DEFERRED_BYTES;
            let legs = &mut *self.legs;
            // Dropping `outcome` (any return below) drops the hold, which withdraws it.
            let waited = tokio::select! {
                o = &mut outcome => Waited::Outcome(o),
                Ok(()) = cancel.changed() => Waited::Cancelled,
                i = legs.next(read_client) => Waited::Input(i?),
            };
            match waited {
                Waited::Outcome(o) => return Ok(outcome_decision(o, &id, &rule)),
                Waited::Cancelled => {
                    return Ok(Decision::Refused(error(
                        "57014",
                        "canceling statement due to user request",
                    )));
                }
                Waited::Input(Input::Client(None)) => return Ok(Decision::ClientGone),
                Waited::Input(Input::Client(Some(f))) => {
                    if matches!(FrontendMessage::decode(&f), Ok(FrontendMessage::Terminate)) {
                        return Ok(Decision::ClientGone);
                    }
                    deferred_bytes = deferred_bytes.saturating_add(f.raw().len());
                    self.deferred.push_back(f);
                }
                Waited::Input(Input::Server(Some(f))) => self.on_server(f).await?,
                Waited::Input(Input::Server(None)) => return Err(PgError::UpstreamClosed),
                Waited::Input(Input::Wrote) => {}
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
