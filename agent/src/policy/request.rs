//! What policy decides about: a session's request and the masking rules
//! that apply to its results. Sessions reach them through `gate`; they live
//! here so policy needs nothing above it.

use std::sync::Arc;

use serde::Serialize;

use super::{CommandKind, MaskSpec, StatementClass};

/// What a session asks about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Opening the session itself (decided once, before anything is relayed).
    Session,
    /// One SQL statement, as the client sent it but with secrets (password
    /// literals) redacted, with its classes.
    Statement {
        text: String,
        classes: Vec<StatementClass>,
        /// Why it is `opaque` or `unparseable`, when it is: what interlock
        /// could not read.
        opaque: Option<String>,
    },
    /// One SSH request: an exec command, a shell, a subsystem, a file
    /// operation, a forwarding request.
    Command { kind: CommandKind, text: String },
}

/// A masking instruction from policy: a `mask` rule that applies to a
/// request's results, with its spec compiled once per policy load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskRule {
    /// The deciding rule's name.
    pub rule: String,
    /// Columns, detectors and strategy.
    pub spec: Arc<MaskSpec>,
}

impl Serialize for MaskRule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            rule: &'a str,
            #[serde(flatten)]
            spec: &'a MaskSpec,
        }
        Shown {
            rule: &self.rule,
            spec: &self.spec,
        }
        .serialize(s)
    }
}
