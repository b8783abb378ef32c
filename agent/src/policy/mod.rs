//! Policy files: what to intercept (targets, with how to reach their real
//! servers) and the rules deciding each session, statement and command. Files are parsed and validated here into
//! typed values; nothing after [`load`] parses strings again.

mod error;
mod eval;
mod explain;
mod facts;
mod file;
mod identity;
mod locate;
mod mask;
mod request;
mod rule;
mod scalar;
pub mod shell;
mod subject;
mod target;
mod upstream;
mod web;

pub use error::PolicyError;
pub use eval::{Action, Decision, Explanation, Step};
pub use explain::{
    ClassifiedSql, Classifier, ExplainArgs, ExplainError, LOGIN_RULE, explain_command,
};
pub use facts::{CommandKind, StatementClass};
pub use file::{Policy, load, parse};
pub use identity::{IdentityPolicy, OidcCondition};
pub use mask::{ColumnGlob, DETECTORS, Detector, MaskSpec, Strategy, luhn};
pub use request::{MaskRule, Request};
pub use rule::{ActionKind, ApprovalSpec, Approvers, Grant, RecordLevel, Rule};
pub use subject::{Fact, SshLogin, Subject};
pub use target::{AddressMatch, Endpoint, JobTokenMode, Protocol, Target, TargetId};
pub use upstream::{
    ClientAuthMethod, ClientPassword, PasswordAuth, Secret, SecretError, SecretRef, TlsMode,
    Upstream,
};
pub use web::{
    ApiTokens, DEFAULT_SESSION, FourEyesPair, SignIn, WebPolicy, WebTls, default_four_eyes,
};

#[cfg(test)]
mod ssh_tests;
#[cfg(test)]
mod tests;
