//! Asking the gate about statements, and holding one until a human decides
//! while the session keeps relaying server messages and watches for the
//! client leaving or cancelling.

use tokio::sync::watch;

use super::{
    classify::{Classified, NameChange},
    error::PgError,
    executions::{Execution, again, executed_names},
    frame::Frame,
    legs::{Input, error},
    mask::Masks,
    message::{ErrorFields, FrontendMessage, WireStr},
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

/// SQLSTATE for a refusal because the audit log cannot be written
/// (`disk_full`, the usual cause; the message names the actual one).
pub(crate) const AUDIT_UNWRITABLE: &str = "53100";

/// The client-facing error for a blocked statement; `opaque`: why
/// interlock could not read it (it was judged as if it had every class).
pub(crate) fn blocked(rule: &str, message: &str, text: &str, opaque: Option<&str>) -> Frame {
    let detail = match opaque {
        Some(why) => format!("statement: {text}\nclassified opaque: {why}"),
        None => format!("statement: {text}"),
    };
    ErrorFields::new(
        "ERROR",
        "42501",
        &format!("interlock: statement blocked by rule \"{rule}\": {message}"),
    )
    .with(b'D', &detail)
    .error_frame()
}

impl Relay<'_> {
    /// Decides every statement; the first refusal refuses the request.
    /// A held statement that is approved is masked as an allowed one.
    pub(crate) async fn decide_all(&mut self, stmts: &[Classified]) -> Result<Decision, PgError> {
        Ok(self.decide_each(stmts).await?.0)
    }

    /// [`Relay::decide_all`] for the statements of a Parse of statement `name`: one that was
    /// held and approved is approved for one execution (see [`super::executions`]).
    pub(crate) async fn decide_parse(
        &mut self,
        name: &WireStr,
        stmts: &[Classified],
    ) -> Result<Decision, PgError> {
        let (d, held) = self.decide_each(stmts).await?;
        if matches!(d, Decision::Allowed(_)) {
            let name = name.lossy();
            if held {
                let text: Vec<&str> = stmts.iter().map(|s| s.text.as_str()).collect();
                let mut classes: Vec<StatementClass> =
                    stmts.iter().flat_map(|s| s.classes.clone()).collect();
                classes.sort();
                classes.dedup();
                self.executions.approved(&name, &text.join("; "), &classes);
            } else {
                // Relay::on_client records the Parse under this id right after.
                self.executions.parsed(&name, self.names.next_id());
            }
        }
        Ok(d)
    }

    /// Decides a Bind of prepared statement `name`: the first after its approval goes,
    /// later ones are decided again (a statement never held always goes: it was decided at
    /// its Parse).
    pub(crate) async fn decide_bind(&mut self, name: &WireStr) -> Result<Decision, PgError> {
        if self.executions.is_empty() {
            return Ok(Decision::Allowed(vec![]));
        }
        let current = self.names.statement_mut(name).map(|d| d.id);
        match self.executions.execute(&name.lossy(), current) {
            Execution::Plain | Execution::First => Ok(Decision::Allowed(vec![])),
            Execution::Again { text, classes } => {
                let stmt = Classified::other(
                    format!(
                        "execute prepared statement \"{}\" again: {text}",
                        name.lossy()
                    ),
                    classes,
                );
                Ok(self.decide_each(std::slice::from_ref(&stmt)).await?.0)
            }
        }
    }

    /// Decides every statement; also says whether one was held and approved.
    async fn decide_each(&mut self, stmts: &[Classified]) -> Result<(Decision, bool), PgError> {
        let mut masks = Vec::with_capacity(stmts.len());
        let mut held_any = false;
        for s in stmts {
            let request = self.execution_request(s);
            // A cancel counts from here: one that arrives while the gate
            // decides (a hold is visible to approvers before it is
            // returned) cancels the held statement.
            let mut cancel = self.cancel.clone();
            cancel.borrow_and_update();
            let verdict = self.gate.decide(&request).await;
            match verdict {
                Verdict::Allow { mask, .. } => match self.masks_for(s, mask) {
                    Ok(m) => masks.push(m),
                    Err(reply) => return Ok((Decision::Refused(reply), held_any)),
                },
                Verdict::Block { rule, message } => {
                    return Ok((
                        Decision::Refused(blocked(&rule, &message, &s.text, s.opaque.as_deref())),
                        held_any,
                    ));
                }
                Verdict::Unavailable { message } => {
                    return Ok((
                        Decision::Refused(error(AUDIT_UNWRITABLE, &message)),
                        held_any,
                    ));
                }
                Verdict::Hold(held) => {
                    // Masking that cannot apply refuses before anyone is asked.
                    let m = match self.masks_for(s, held.mask().to_vec()) {
                        Ok(m) => m,
                        Err(reply) => return Ok((Decision::Refused(reply), held_any)),
                    };
                    let d = self.hold(held, &s.text, cancel).await?;
                    if !matches!(d, Decision::Allowed(_)) {
                        return Ok((d, held_any));
                    }
                    held_any = true;
                    if let Some(NameChange::Prepare(name)) = &s.names {
                        self.executions.approved(name, &s.text, &s.classes);
                    }
                    masks.push(m);
                }
            }
        }
        Ok((Decision::Allowed(masks), held_any))
    }

    /// The request to decide for `s`: itself, or, for an `EXECUTE` of a prepared statement
    /// whose one approved execution is spent, the prepared statement's text and classes.
    fn execution_request(&mut self, s: &Classified) -> Request {
        let (mut text, mut classes) = (s.text.clone(), s.classes.clone());
        if !self.executions.is_empty() {
            for name in executed_names(s) {
                let current = self
                    .names
                    .statement_mut(&WireStr::from(name.as_str()))
                    .map(|d| d.id);
                if let Execution::Again {
                    text: prepared,
                    classes: more,
                } = self.executions.execute(&name, current)
                {
                    (text, classes) = again(&text, &classes, &prepared, &more);
                }
            }
        }
        Request::Statement {
            text,
            classes,
            opaque: s.opaque.clone(),
        }
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
        if let Some((r, column)) = copies_masked(s, &masks) {
            return Err(refuse(format!(
                "the statement copies `{column}`, which rule \"{r}\" masks, where masking cannot follow it (a table, a notification, a large object, a setting)"
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

/// A masked column `s` copies out of reach of masking, with the rule:
/// a copied name a column rule's column part matches, of a relation the
/// statement names that the rule's table part matches (any relation when
/// the statement's reads are unknown); `*` and whole-row references copy
/// every column.
fn copies_masked(s: &Classified, masks: &Masks) -> Option<(String, String)> {
    use super::classify::Reads;
    if s.copies.is_empty() || !masks.has_columns() {
        return None;
    }
    for rule in masks.rules() {
        for g in rule.spec.columns() {
            let hit = match &s.reads {
                Reads::Any => s.copies.iter().find(|c| {
                    c.as_str() == "*" || g.covers_column_name(c) || g.covers_relation(None, c)
                }),
                Reads::Named(rels) => s.copies.iter().find(|c| {
                    rels.iter().any(|r| {
                        let whole = c.as_str() == "*" || **c == r.name;
                        g.covers_relation(r.schema.as_deref(), &r.name)
                            && (whole || g.covers_column(r.schema.as_deref(), &r.name, c))
                    })
                }),
            };
            if let Some(c) = hit {
                return Some((rule.rule.clone(), c.clone()));
            }
        }
    }
    None
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
