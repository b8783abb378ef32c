//! The CLI commands that talk to the daemon: `interlock status` and
//! `interlock approvals ...`. Each prints for a human (or JSON) and says
//! whether it succeeded; refusals print the daemon's reason. Everything
//! printed passes `crate::text`: held requests carry text the job chose
//! (statements, commands, executables, CI values), and a terminal must
//! show it as it is, not obey escape sequences in it.

use std::{io::Write, path::Path};

use hyper::Method;
use serde_json::{Value, json};

use super::{ControlError, call};
use crate::text::{escape_controls, json_for_terminal};

/// `interlock approvals`: its subcommands live here, beside the calls they
/// make, so the control client needs nothing of the CLI above it.
#[derive(Debug, clap::Subcommand)]
pub enum ApprovalsCommand {
    /// Pending requests, oldest first.
    List {
        /// The daemon's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One request (pending or recently decided), as JSON.
    Show { id: String },
    /// Let a held request through.
    Approve {
        id: String,
        /// Why (recorded in the audit trail).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Refuse a held request.
    Deny {
        id: String,
        /// Why (recorded in the audit trail).
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Runs `interlock status`; false when the daemon refused or its audit
/// log cannot be written (it is then refusing new sessions and requests).
///
/// # Errors
/// The daemon is unreachable; writing to `out` failed.
pub async fn status(
    socket: &Path,
    as_json: bool,
    out: &mut impl Write,
) -> Result<bool, ControlError> {
    let (code, body) = call(socket, Method::GET, "/v1/status", None).await?;
    let writable = at(&body, "/audit/writable") != &Value::Bool(false);
    if code != 200 || as_json {
        return Ok(print(code, &body, out) && writable);
    }
    let targets: Vec<String> = at(&body, "/policy/targets")
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| format!("{} ({})", s(at(t, "/name")), s(at(t, "/protocol"))))
                .collect()
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "interlock {} (pid {})",
        s(at(&body, "/version")),
        at(&body, "/pid")
    );
    let _ = writeln!(
        out,
        "policy:    {} — {} rules; targets: {}",
        s(at(&body, "/policy/path")),
        at(&body, "/policy/rules"),
        targets.join(", ")
    );
    let _ = writeln!(
        out,
        "sessions:  {} live, {} since start",
        at(&body, "/sessions/live"),
        at(&body, "/sessions/total")
    );
    let _ = writeln!(
        out,
        "approvals: {} pending",
        at(&body, "/approvals/pending")
    );
    print_audit(at(&body, "/audit"), out);
    let hooks = at(&body, "/webhooks")
        .as_array()
        .cloned()
        .unwrap_or_default();
    if hooks.is_empty() {
        let _ = writeln!(out, "webhooks:  none");
    }
    for w in hooks {
        let _ = writeln!(
            out,
            "webhook:   {} — {} delivered, {} pending ({} bytes), {} dropped{}{}",
            s(at(&w, "/endpoint")),
            at(&w, "/delivered"),
            at(&w, "/pending_events"),
            at(&w, "/pending_bytes"),
            at(&w, "/dropped"),
            if at(&w, "/disabled") == &Value::Bool(true) {
                ", disabled (410)"
            } else {
                ""
            },
            match at(&w, "/last_error") {
                Value::String(e) => format!(", failing: {e}"),
                _ => String::new(),
            },
        );
    }
    Ok(writable)
}

/// The audit log's lines of `interlock status`.
fn print_audit(audit: &Value, out: &mut impl Write) {
    if audit.is_null() {
        return;
    }
    if at(audit, "/writable") == &Value::Bool(false) {
        let _ = writeln!(
            out,
            "audit:     CANNOT BE WRITTEN since {}: {}",
            s(at(audit, "/failing_since")),
            s(at(audit, "/error"))
        );
        let _ = writeln!(
            out,
            "           refusing new sessions and requests ({} sessions, {} requests refused so far); {} records of admitted requests wait in memory",
            at(audit, "/refused_sessions"),
            at(audit, "/refused_requests"),
            at(audit, "/records_waiting"),
        );
    } else {
        let _ = writeln!(out, "audit:     writable");
    }
    for b in at(audit, "/sinks_behind")
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let _ = writeln!(
            out,
            "sink:      {} is behind the audit log ({}); caught up once it can be written",
            s(at(&b, "/sink")),
            s(at(&b, "/error"))
        );
    }
}

/// Runs `interlock webhook test` without a URL: the daemon sends a signed
/// test event to each of its endpoints. False when the daemon refused,
/// has no endpoint, or one did not answer 2xx.
///
/// # Errors
/// The daemon is unreachable.
pub async fn webhook_test(socket: &Path, out: &mut impl Write) -> Result<bool, ControlError> {
    let (code, body) = call(socket, Method::POST, "/v1/webhooks/test", None).await?;
    if code != 200 {
        return Ok(print(code, &body, out));
    }
    let answers = body.as_array().cloned().unwrap_or_default();
    if answers.is_empty() {
        eprintln!("interlock: the daemon has no webhook endpoints (interlock run --webhook URL)");
        return Ok(false);
    }
    let mut ok = true;
    for a in answers {
        let status = at(&a, "/status").as_u64();
        ok &= status.is_some_and(|c| (200..300).contains(&c));
        let _ = writeln!(
            out,
            "{}: {}\n{}",
            s(at(&a, "/endpoint")),
            status.map_or_else(|| "no answer".to_string(), |c| c.to_string()),
            s(at(&a, "/body"))
        );
    }
    Ok(ok)
}

/// Runs one `interlock approvals` command; false when the daemon refused.
///
/// # Errors
/// The daemon is unreachable.
pub async fn approvals(
    socket: &Path,
    cmd: &ApprovalsCommand,
    out: &mut impl Write,
) -> Result<bool, ControlError> {
    match cmd {
        ApprovalsCommand::List { json } => {
            let (code, body) = call(socket, Method::GET, "/v1/approvals", None).await?;
            if code != 200 || *json {
                return Ok(print(code, &body, out));
            }
            let list = body.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                let _ = writeln!(out, "no requests are waiting for approval");
            }
            for p in list {
                let _ = writeln!(
                    out,
                    "{}  target {}  rule {}  by {} (uid {}) {}\n    {}\n    deadline {}",
                    s(at(&p, "/id")),
                    s(at(&p, "/target")),
                    s(at(&p, "/rule")),
                    s(at(&p, "/requester/user")),
                    s(at(&p, "/requester/uid")),
                    s(at(&p, "/requester/exe")),
                    escape_controls(&request_line(at(&p, "/request"))),
                    s(at(&p, "/deadline")),
                );
            }
            Ok(true)
        }
        ApprovalsCommand::Show { id } => {
            let (code, body) =
                call(socket, Method::GET, &format!("/v1/approvals/{id}"), None).await?;
            Ok(print(code, &body, out))
        }
        ApprovalsCommand::Approve { id, reason } | ApprovalsCommand::Deny { id, reason } => {
            let verb = if matches!(cmd, ApprovalsCommand::Approve { .. }) {
                "approve"
            } else {
                "deny"
            };
            let (code, body) = call(
                socket,
                Method::POST,
                &format!("/v1/approvals/{id}/{verb}"),
                Some(json!({ "reason": reason })),
            )
            .await?;
            if code == 200 {
                let _ = writeln!(
                    out,
                    "{}: {}",
                    escape_controls(id),
                    if verb == "approve" {
                        "approved"
                    } else {
                        "denied"
                    }
                );
                Ok(true)
            } else {
                Ok(print(code, &body, out))
            }
        }
    }
}

fn request_line(r: &Value) -> String {
    match s(at(r, "/kind")).as_str() {
        "session" => format!("connection to {}", s(at(r, "/destination"))),
        "statement" => format!("statement: {}", s(at(r, "/text"))),
        "command" => format!("{}: {}", s(at(r, "/command_kind")), s(at(r, "/text"))),
        other => other.to_string(),
    }
}

/// Prints a body (an error goes to stderr by the caller's convention: we
/// print `error: ...` to `out` and return false so the exit code says it).
/// JSON keeps its value but shows every control character as an escape.
fn print(code: u16, body: &Value, out: &mut impl Write) -> bool {
    if code == 200 {
        let _ = writeln!(
            out,
            "{}",
            json_for_terminal(&serde_json::to_string_pretty(body).unwrap_or_default())
        );
        true
    } else {
        eprintln!(
            "interlock: the daemon refused ({code}): {}",
            s(at(body, "/error"))
        );
        false
    }
}

/// The value at a JSON pointer, Null when absent.
fn at<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    v.pointer(pointer).unwrap_or(&Value::Null)
}

/// A value for a terminal: strings as they are but with control characters escaped.
fn s(v: &Value) -> String {
    match v {
        Value::String(s) => escape_controls(s).into_owned(),
        Value::Null => "-".into(),
        other => json_for_terminal(&other.to_string()).into_owned(),
    }
}
