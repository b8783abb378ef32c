//! Turns gate verdicts into what the SSH client is told: one line per
//! block, hold notice and hold outcome.

use crate::gate::{Gate, Held, HoldOutcome, Request, Verdict};

/// A verdict as the channel code needs it.
pub(super) enum Decided {
    /// Run it.
    Run,
    /// Do not run it; tell the client `line`.
    Refuse(String),
    /// Tell the client `notice`, then wait for [`outcome`].
    Hold(Held, String),
}

/// Asks the gate about `request`.
pub(super) async fn decide(gate: &dyn Gate, request: &Request) -> Decided {
    match gate.decide(request).await {
        Verdict::Allow { .. } => Decided::Run,
        Verdict::Block { rule, message } => {
            Decided::Refuse(format!("interlock: blocked by rule {rule}: {message}"))
        }
        Verdict::Unavailable { message } => Decided::Refuse(message),
        Verdict::Hold(held) => {
            let notice = format!(
                "interlock: held for approval {} (rule {}); {}",
                held.approval_id, held.rule, held.how_to_approve
            );
            Decided::Hold(held, notice)
        }
    }
}

/// Waits for a hold; `Ok` when approved, else the line for the client.
pub(super) async fn outcome(held: Held) -> Result<(), String> {
    let id = held.approval_id.clone();
    match held.outcome().await {
        HoldOutcome::Approved { .. } => Ok(()),
        HoldOutcome::Denied { by, reason } => Err(match reason {
            Some(r) => format!("interlock: approval {id} denied by {by}: {r}"),
            None => format!("interlock: approval {id} denied by {by}"),
        }),
        HoldOutcome::Expired => Err(format!("interlock: approval {id} expired")),
        HoldOutcome::Withdrawn => Err(format!("interlock: approval {id} withdrawn")),
    }
}

/// Decides `request` without a way to show a notice: a hold is waited
/// for silently. `Ok` to run, else the refusal line.
pub(super) async fn decide_quietly(gate: &dyn Gate, request: &Request) -> Result<(), String> {
    match decide(gate, request).await {
        Decided::Run => Ok(()),
        Decided::Refuse(line) => Err(line),
        Decided::Hold(held, _) => outcome(held).await,
    }
}
