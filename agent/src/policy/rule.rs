//! Rules: what a policy allows, blocks, holds for approval, masks and how
//! much it records. Raw YAML shapes are validated into compiled values here
//! (globs, regexes, durations), so evaluation never parses strings.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use globset::GlobMatcher;
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::{
    facts::{CommandKind, StatementClass},
    mask::MaskSpec,
    scalar::parse_str,
};

/// What a deciding rule does, or what a contributing rule adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Allow,
    RequireApproval,
    Block,
    /// Contributes masking to every statement it matches; decides nothing.
    Mask,
    /// Contributes a recording level to the session; decides nothing.
    Record,
}

impl ActionKind {
    /// Deciding actions pick the outcome; the others only contribute.
    pub fn decides(self) -> bool {
        matches!(
            self,
            ActionKind::Allow | ActionKind::RequireApproval | ActionKind::Block
        )
    }
}

/// How much of a session is written to the audit trail.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordLevel {
    /// Every statement and command with its text, and transcripts.
    #[default]
    Full,
    /// Decisions, classes, counts and timings; no statement or command text
    /// and no transcripts.
    Metadata,
}

/// How long an approval lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// This one request.
    Once,
    /// Requests this rule matches for the rest of the session.
    Session,
    /// Requests this rule matches from the same user and cgroup, on the
    /// same target, for this long (across sessions).
    #[serde(serialize_with = "ser_duration")]
    For(Duration),
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

impl<'de> Deserialize<'de> for Grant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, |s| match s {
            "once" => Ok(Grant::Once),
            "session" => Ok(Grant::Session),
            other => humantime::parse_duration(other)
                .ok()
                .filter(|d| !d.is_zero())
                .map(Grant::For)
                .ok_or_else(|| {
                    format!(
                        "grant `{other}`: expected `once`, `session` or a duration such as `30m`"
                    )
                }),
        })
    }
}

/// Who may approve: local users and groups (deciding over the control socket), and people
/// signed in on the approvals page with the organisation's identity provider, by group,
/// e-mail or subject.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Approvers {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Groups in the approver's ID token (the sign-in's `groups_claim`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oidc_groups: Vec<String>,
    /// Verified e-mail addresses (compared without regard to case).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oidc_emails: Vec<String>,
    /// ID token subjects (`sub`) of the sign-in issuer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oidc_subjects: Vec<String>,
}

impl Approvers {
    /// Whether a caller named `user` (None: the uid has no name) in
    /// `groups` is one of these approvers.
    pub fn admits(&self, user: Option<&str>, groups: &[String]) -> bool {
        user.is_some_and(|u| self.users.iter().any(|a| a == u))
            || groups.iter().any(|g| self.groups.contains(g))
    }

    /// Whether someone signed in as `subject`, with `email` (only if verified) and `groups`,
    /// is one of these approvers.
    pub fn admits_signed_in(&self, subject: &str, email: Option<&str>, groups: &[String]) -> bool {
        self.oidc_subjects.iter().any(|s| s == subject)
            || email.is_some_and(|e| self.oidc_emails.iter().any(|a| a.eq_ignore_ascii_case(e)))
            || groups.iter().any(|g| self.oidc_groups.contains(g))
    }

    /// Whether these approvers include identity-provider ones.
    pub fn names_web(&self) -> bool {
        !(self.oidc_groups.is_empty()
            && self.oidc_emails.is_empty()
            && self.oidc_subjects.is_empty())
    }

    /// Whether these approvers name nobody at all.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty() && !self.names_web()
    }
}

/// How a `require_approval` rule holds a request.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalSpec {
    pub approvers: Approvers,
    /// Undecided after this long: denied.
    #[serde(
        default = "default_timeout",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub timeout: Duration,
    #[serde(default = "default_grant")]
    pub grant: Grant,
}

fn default_timeout() -> Duration {
    Duration::from_secs(600)
}

fn default_grant() -> Grant {
    Grant::Once
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    parse_str(d, |s| {
        humantime::parse_duration(s)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("`{s}` is not a duration such as `90s` or `10m`"))
    })
}

/// A glob, compiled at load; shown as written.
#[derive(Clone, Debug)]
pub struct Pattern {
    text: String,
    glob: GlobMatcher,
}

impl Pattern {
    pub fn is_match(&self, s: &str) -> bool {
        self.glob.is_match(s)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, |text| {
            // `*` must not cross `/` in paths unless written `**`.
            let glob = globset::GlobBuilder::new(text)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("invalid glob `{text}`: {e}"))?
                .compile_matcher();
            Ok(Pattern {
                text: text.to_string(),
                glob,
            })
        })
    }
}

/// A regular expression, compiled at load; shown as written.
#[derive(Clone, Debug)]
pub struct RegexPattern(pub Regex);

impl<'de> Deserialize<'de> for RegexPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, |text| {
            Regex::new(text)
                .map(RegexPattern)
                .map_err(|e| format!("invalid regex `{text}`: {e}"))
        })
    }
}

/// A user given by name or by numeric uid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserRef {
    Name(String),
    Uid(u32),
}

impl<'de> Deserialize<'de> for UserRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Uid(u32),
            Name(String),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Uid(u) => UserRef::Uid(u),
            Raw::Name(n) => match n.parse() {
                Ok(u) => UserRef::Uid(u),
                Err(_) => UserRef::Name(n),
            },
        })
    }
}

/// Conditions of a rule: all given conditions must hold; a list holds when
/// any of its entries does.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// Target names.
    #[serde(default, rename = "target")]
    pub targets: Vec<String>,
    /// Users by name or uid.
    #[serde(default, rename = "user")]
    pub users: Vec<UserRef>,
    /// Executable path globs.
    #[serde(default)]
    pub exe: Vec<Pattern>,
    /// A regex over the command line joined with spaces.
    #[serde(default)]
    pub argv: Option<RegexPattern>,
    /// Globs over the executables of the ancestors (any ancestor).
    #[serde(default)]
    pub ancestor_exe: Vec<Pattern>,
    /// For rules that let requests through (allow, `record: metadata`): whether an
    /// executable only matches `exe`/`ancestor_exe` when its path is trusted to name the
    /// file it runs (root-owned file and directories, the same inode; `identity/exefile.rs`).
    /// Default: yes. Rules that restrict match the path whatever the file.
    #[serde(default)]
    pub trusted_exe: Option<bool>,
    /// cgroup-v2 path globs.
    #[serde(default)]
    pub cgroup: Vec<Pattern>,
    /// CI variable -> glob over its value; the variable must be present in the
    /// job root's environment (runner-rooted CI context).
    #[serde(default)]
    pub ci: BTreeMap<String, Pattern>,
    /// Conditions on the session's verified job token.
    #[serde(default)]
    pub oidc: Option<super::identity::OidcCondition>,
    /// SSH: globs over the user interlock logs in upstream as.
    #[serde(default)]
    pub ssh_user: Vec<Pattern>,
    /// SSH: globs over the user the client asked for (`ssh NAME@host`),
    /// which differs from `ssh_user` when `upstream.user` fixes it.
    #[serde(default)]
    pub ssh_requested_user: Vec<Pattern>,
    /// Statement classes (any of them).
    #[serde(default)]
    pub statement: Vec<StatementClass>,
    /// A regex over the statement text.
    #[serde(default)]
    pub sql: Option<RegexPattern>,
    /// SSH request kinds (any of them).
    #[serde(default)]
    pub kind: Vec<CommandKind>,
    /// A regex over the SSH command (or path, for file operations).
    #[serde(default)]
    pub command: Option<RegexPattern>,
    /// Programs an exec command runs (globs over the base name, or over
    /// the path when the glob has a `/`), in any of its commands as the
    /// shell splits them (`policy/shell.rs`).
    #[serde(default)]
    pub program: Vec<Pattern>,
    /// Options that must be given to such a program (any of them): `-r`
    /// is found in `-rf`, `--recursive` also as `--recursive=x`,
    /// `-delete` as written.
    #[serde(default)]
    pub options: Vec<String>,
}

impl Conditions {
    /// Rules with conditions on the SSH login (`ssh_user`,
    /// `ssh_requested_user`): an SSH session they can decide is decided
    /// once the client said whom it logs in as.
    pub fn about_login(&self) -> bool {
        !self.ssh_user.is_empty() || !self.ssh_requested_user.is_empty()
    }

    /// Rules with statement conditions are about statements.
    pub fn about_statements(&self) -> bool {
        !self.statement.is_empty() || self.sql.is_some()
    }

    /// Rules with command conditions are about SSH requests.
    pub fn about_commands(&self) -> bool {
        !self.kind.is_empty()
            || self.command.is_some()
            || !self.program.is_empty()
            || !self.options.is_empty()
    }
}

/// One validated rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    pub conditions: Conditions,
    pub action: ActionKind,
    /// Shown to the client when the rule blocks.
    pub message: Option<String>,
    pub approval: Option<ApprovalSpec>,
    /// Compiled once per load and shared by every statement it masks.
    pub mask: Option<Arc<MaskSpec>>,
    pub record: Option<RecordLevel>,
}

/// A rule as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub name: String,
    #[serde(default)]
    #[allow(dead_code)] // documentation for humans; kept so files may carry it
    pub description: Option<String>,
    #[serde(rename = "match", default)]
    pub conditions: Conditions,
    pub action: ActionKind,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub approval: Option<ApprovalSpec>,
    #[serde(default)]
    pub mask: Option<MaskSpec>,
    #[serde(default)]
    pub record: Option<RecordLevel>,
}

impl RawRule {
    /// Checks that the action has what it needs; returns the rule, or the
    /// key path (inside the rule) of what is wrong and why.
    pub(super) fn validate(self) -> Result<Rule, (&'static [&'static str], String)> {
        let name = self.name.trim().to_string();
        if name.is_empty() {
            return Err((&["name"], "a rule has an empty name".into()));
        }
        let c = &self.conditions;
        if c.about_statements() && c.about_commands() {
            return Err((
                &["match"],
                format!(
                    "rule `{name}` mixes statement conditions (statement/sql) with SSH ones (kind/command/program/options); split it in two"
                ),
            ));
        }
        match self.action {
            ActionKind::RequireApproval => {
                let a = self.approval.as_ref().ok_or_else(|| {
                    (
                        &["action"][..],
                        format!("rule `{name}`: action require_approval needs `approval: {{approvers: ...}}`"),
                    )
                })?;
                if a.approvers.is_empty() {
                    return Err((
                        &["approval", "approvers"],
                        format!(
                            "rule `{name}`: `approval.approvers` names no user, group, oidc_group, oidc_email or oidc_subject, so nobody could approve"
                        ),
                    ));
                }
            }
            _ if self.approval.is_some() => {
                return Err((
                    &["approval"],
                    format!(
                        "rule `{name}`: `approval` is only meaningful with action require_approval"
                    ),
                ));
            }
            _ => {}
        }
        match self.action {
            ActionKind::Mask => {
                let m = self.mask.as_ref().ok_or_else(|| {
                    (
                        &["action"][..],
                        format!("rule `{name}`: action mask needs `mask: {{columns: [...], detectors: [...]}}`"),
                    )
                })?;
                if m.is_empty() {
                    return Err((
                        &["mask"],
                        format!("rule `{name}`: `mask` lists no column and no detector"),
                    ));
                }
                if c.about_commands() {
                    return Err((
                        &["match"],
                        format!("rule `{name}`: masking applies to SQL results, not SSH requests"),
                    ));
                }
            }
            _ if self.mask.is_some() => {
                return Err((
                    &["mask"],
                    format!("rule `{name}`: `mask` is only meaningful with action mask"),
                ));
            }
            _ => {}
        }
        if self.action == ActionKind::Record && self.record.is_none() {
            return Err((
                &["action"],
                format!("rule `{name}`: action record needs `record: full|metadata`"),
            ));
        }
        // The job writes the request: a statement must not choose to leave its
        // own text out of the record (`SELECT ... /* payments. */`).
        if self.record == Some(RecordLevel::Metadata)
            && (c.about_statements() || c.about_commands())
        {
            return Err((
                &["record"],
                format!(
                    "rule `{name}`: `record: metadata` cannot be keyed on the request itself (statement, sql, kind, command, program, options): the job writes those, so a comment could leave any statement out of the record; key it on target or identity (a rule without request conditions), or use `record: full`"
                ),
            ));
        }
        if self.message.is_some() && self.action != ActionKind::Block {
            return Err((
                &["message"],
                format!("rule `{name}`: `message` is only shown for action block"),
            ));
        }
        Ok(Rule {
            name,
            conditions: self.conditions,
            action: self.action,
            message: self.message,
            approval: self.approval,
            mask: self.mask.map(Arc::new),
            record: self.record,
        })
    }
}
