//! The audit log as the approval registry's recorder: held requests and
//! their ends become `approval_requested` / `approval_decided` events.

use super::{EventKind, EventSink};
use crate::approval::{ApprovalRecorder, Decided, Pending, Recording};

impl ApprovalRecorder for EventSink {
    fn requested(&self, pending: Pending) -> Recording<'_> {
        Box::pin(self.record(EventKind::ApprovalRequested {
            session_id: pending.session_id.clone(),
            approval: Box::new(pending),
        }))
    }

    fn decided(&self, decided: Decided) -> Recording<'_> {
        Box::pin(self.record(EventKind::ApprovalDecided {
            session_id: decided.pending.session_id.clone(),
            approval: Box::new(decided),
        }))
    }
}
