//! Why an approval decision was refused.

use super::types::Decision;

/// A refused decision; each maps to one HTTP status of the control API.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("no pending request with id {0}")]
    NotFound(String),
    #[error("request {id} was already decided: {decision:?}")]
    AlreadyDecided { id: String, decision: Decision },
    #[error("{who} is not an approver for rule `{rule}`")]
    NotApprover { who: String, rule: String },
    #[error("a requester cannot decide its own request: {0}")]
    SelfApproval(String),
}

impl ApprovalError {
    /// The control API's status for this refusal.
    pub fn http_status(&self) -> u16 {
        match self {
            ApprovalError::NotFound(_) => 404,
            ApprovalError::AlreadyDecided { .. } => 409,
            ApprovalError::NotApprover { .. } | ApprovalError::SelfApproval(_) => 403,
        }
    }
}
