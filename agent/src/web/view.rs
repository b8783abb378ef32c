//! What the page shows of a held or decided request. Every piece of text the job controls
//! (statement, command, executable, CI values, claims) has its control and bidirectional
//! characters made visible (`crate::text`), so a request cannot display as another; the
//! templates then HTML-escape everything.

use std::time::{Duration, SystemTime};

use crate::{
    approval::{Decided, DecidedBy, Decision, Pending, RequestView},
    policy::Grant,
    text::escape_controls,
};

/// Characters of a request shown in a list.
const PREVIEW: usize = 240;

fn shown(s: &str) -> String {
    escape_controls(s).into_owned()
}

fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", s.get(..i).unwrap_or(s)),
        None => s.to_string(),
    }
}

/// RFC 3339 to the second.
pub(super) fn when(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// "4 min 12 s left", or "past the deadline".
fn left(deadline: SystemTime) -> (String, &'static str) {
    match deadline.duration_since(SystemTime::now()) {
        Ok(d) => {
            let s = d.as_secs();
            let text = if s >= 3600 {
                format!("{} h {} min left", s / 3600, (s % 3600) / 60)
            } else if s >= 60 {
                format!("{} min {} s left", s / 60, s % 60)
            } else {
                format!("{s} s left")
            };
            (
                text,
                if d < Duration::from_secs(120) {
                    "soon"
                } else {
                    ""
                },
            )
        }
        Err(_) => ("past the deadline".into(), "soon"),
    }
}

/// A request as the list and the detail page show it.
pub(super) struct HoldView {
    pub(super) id: String,
    pub(super) session: String,
    pub(super) kind: String,
    pub(super) target: String,
    pub(super) rule: String,
    pub(super) text: String,
    pub(super) preview: String,
    pub(super) classes: String,
    pub(super) grant: String,
    pub(super) requested_at: String,
    pub(super) deadline: String,
    pub(super) time_left: String,
    pub(super) urgency: &'static str,
    pub(super) approvers: String,
    /// One line: user, uid, executable.
    pub(super) requester: String,
    /// One line: the job token's subject and run, or the CI job.
    pub(super) job_line: String,
    pub(super) who: Vec<(String, String)>,
    pub(super) job: Vec<(String, String)>,
}

impl HoldView {
    pub(super) fn of(p: &Pending) -> HoldView {
        let (kind, text, classes) = match &p.request {
            RequestView::Session { destination } => (
                "Connection".to_string(),
                format!("connect to {destination}"),
                String::new(),
            ),
            RequestView::Statement {
                text,
                classes,
                opaque,
            } => {
                let mut classes = classes
                    .iter()
                    .filter_map(|c| serde_json::to_value(c).ok())
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect::<Vec<_>>()
                    .join(", ");
                // An approver must see that interlock could not read it.
                if let Some(why) = opaque {
                    classes.push_str(&format!(" (opaque: {})", shown(why)));
                }
                ("Statement".to_string(), shown(text), classes)
            }
            RequestView::Command { command_kind, text } => (
                format!(
                    "Command ({})",
                    serde_json::to_value(command_kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                ),
                shown(text),
                String::new(),
            ),
            // Never held (refused by the target's settings); shown for completeness.
            RequestView::Login { user } => ("Login".to_string(), shown(user), String::new()),
            RequestView::Env { name } => ("Env".to_string(), shown(name), String::new()),
        };
        let r = &p.requester;
        let user = r.user.as_deref().map(shown).unwrap_or_else(|| "?".into());
        let exe = r.exe.as_deref().map(shown).unwrap_or_else(|| "?".into());
        let mut who = vec![
            ("user".to_string(), format!("{user} (uid {})", r.uid)),
            ("process".to_string(), format!("{exe} (pid {})", r.tgid)),
        ];
        if let Some(c) = &r.cgroup {
            who.push(("cgroup".into(), shown(c)));
        }
        for (k, v) in &r.ci {
            who.push((k.clone(), shown(v)));
        }
        let mut job = Vec::new();
        let mut job_line =
            r.ci.iter()
                .filter(|(k, _)| {
                    k.ends_with("_ID") || k.ends_with("REPOSITORY") || k.ends_with("PROJECT_PATH")
                })
                .map(|(k, v)| format!("{k}={}", shown(v)))
                .collect::<Vec<_>>()
                .join(" ");
        if let Some(t) = &r.job {
            match &t.error {
                Some(e) => job.push(("refused".into(), shown(e))),
                None => {
                    let s = |o: &Option<String>| o.as_deref().map(shown).unwrap_or_default();
                    job.push(("issuer".into(), format!("{} ({})", s(&t.issuer), s(&t.iss))));
                    job.push(("subject".into(), s(&t.sub)));
                    job_line = format!("job token {}", s(&t.sub));
                    for (k, v) in &t.claims {
                        let v = match v {
                            serde_json::Value::String(s) => shown(s),
                            other => shown(&other.to_string()),
                        };
                        job.push((k.clone(), v));
                    }
                    if !t.groups.is_empty() {
                        job.push(("groups".into(), shown(&t.groups.join(", "))));
                    }
                }
            }
        }
        let a = &p.approvers;
        let mut approvers = Vec::new();
        for (label, list) in [
            ("users", &a.users),
            ("groups", &a.groups),
            ("IdP groups", &a.oidc_groups),
            ("e-mails", &a.oidc_emails),
            ("subjects", &a.oidc_subjects),
        ] {
            if !list.is_empty() {
                approvers.push(format!("{label}: {}", list.join(", ")));
            }
        }
        let (time_left, urgency) = left(p.deadline);
        HoldView {
            id: p.id.clone(),
            session: p.session_id.clone(),
            kind,
            target: p.target.clone(),
            rule: p.rule.clone(),
            preview: clip(&text, PREVIEW),
            text,
            classes,
            grant: match p.grant {
                Grant::Once => "once".into(),
                Grant::Session => "the rest of the session".into(),
                Grant::For(d) => format!("{} for this job", humantime::format_duration(d)),
            },
            requested_at: when(p.requested_at),
            deadline: when(p.deadline),
            time_left,
            urgency,
            approvers: approvers.join("; "),
            requester: format!("{user} (uid {}) running {exe}", r.uid),
            job_line,
            who,
            job,
        }
    }
}

/// How a request ended, as the page shows it.
pub(super) struct DecidedView {
    pub(super) id: String,
    pub(super) target: String,
    pub(super) preview: String,
    pub(super) decision: &'static str,
    pub(super) by: String,
    pub(super) reason: String,
    pub(super) when: String,
}

impl DecidedView {
    pub(super) fn of(d: &Decided) -> DecidedView {
        let preview = match &d.pending.request {
            RequestView::Session { destination } => format!("connect to {destination}"),
            RequestView::Statement { text, .. } | RequestView::Command { text, .. } => {
                clip(&shown(text), 120)
            }
            RequestView::Login { user } => format!("login as {}", clip(&shown(user), 120)),
            RequestView::Env { name } => format!("env {}", clip(&shown(name), 120)),
        };
        let by = match &d.by {
            Some(DecidedBy::Local(p)) => format!(
                "{} (cli)",
                p.user.clone().unwrap_or_else(|| format!("uid {}", p.uid))
            ),
            Some(DecidedBy::SignedIn(s)) => format!(
                "{} ({})",
                shown(&s.display()),
                match d.channel {
                    Some(crate::approval::Channel::Api) => "api",
                    _ => "web",
                }
            ),
            None => String::new(),
        };
        DecidedView {
            id: d.pending.id.clone(),
            target: d.pending.target.clone(),
            preview,
            decision: match d.decision {
                Decision::Approved => "approved",
                Decision::Denied => "denied",
                Decision::Expired => "expired",
                Decision::Withdrawn => "withdrawn",
            },
            by,
            reason: d.reason.as_deref().map(shown).unwrap_or_default(),
            when: when(d.decided_at),
        }
    }
}
