//! What each event kind puts into its OCSF event (see `body`).

use super::{
    body::{APPROVED, BLOCKED, Body, HELD, Mapper},
    classify,
    objects::{
        Actor, Database, Endpoint, File, Group, Idp, Process, Product, QueryInfo, Rule, Traffic,
        User,
    },
};
use crate::{
    approval::{DecidedBy, Decision, RequestView},
    audit::{Disposition, Event, EventKind, SessionOutcome},
    gate::Side,
    policy::CommandKind,
};

impl Mapper {
    pub(super) fn build(&mut self, seq: Option<u64>, ev: &Event) -> Body {
        use EventKind as K;
        self.remember(ev);
        let c = classify(&ev.kind);
        let mut b = Body::new(&c, ev, seq);
        let ctx = ev
            .kind
            .session_id()
            .and_then(|id| self.sessions.get(id).cloned());
        let ctx = ctx.as_deref();
        match &ev.kind {
            K::SessionStarted {
                session_id,
                decision,
                ..
            } => {
                b.session(session_id, ctx, None);
                b.decision(decision);
                if decision.action == Disposition::Held {
                    b.status_detail = Some("held for approval".into());
                }
            }
            K::SessionEnded {
                session_id,
                target,
                outcome,
                bytes_client_to_server,
                bytes_server_to_client,
                duration_ms,
                error,
                ..
            } => {
                b.session(session_id, ctx, Some(target));
                b.traffic = Some(Traffic {
                    bytes_in: *bytes_server_to_client,
                    bytes_out: *bytes_client_to_server,
                    bytes: bytes_client_to_server.saturating_add(*bytes_server_to_client),
                });
                b.duration = Some(*duration_ms);
                b.end_time = Some(b.time);
                b.start_time = Some(b.time.saturating_sub(*duration_ms));
                b.status_detail = error.clone();
                if matches!(
                    outcome,
                    SessionOutcome::Blocked | SessionOutcome::NotApproved
                ) {
                    b.verdict(BLOCKED);
                }
                self.sessions.remove(session_id);
            }
            K::RequestBlocked {
                session_id,
                target,
                request,
                rule,
                message,
            } => {
                b.session(session_id, ctx, Some(target));
                b.verdict(BLOCKED);
                b.firewall_rule = Some(Rule::named(Some(rule)));
                b.status_detail = Some(message.clone());
                request_attrs(&mut b, request, &ev.id, target);
            }
            K::ApprovalRequested {
                session_id,
                approval,
            } => {
                b.session(session_id, ctx, Some(&approval.target));
                b.verdict(HELD);
                hold_attrs(&mut b, approval);
            }
            K::ApprovalDecided {
                session_id,
                approval,
            } => {
                b.session(session_id, ctx, Some(&approval.pending.target));
                if let Some(by) = &approval.by {
                    b.actor = Some(match by {
                        DecidedBy::Local(by) => Actor {
                            user: Some(User::peer(by)),
                            process: Some(Process {
                                pid: Some(by.pid),
                                user: Some(User::peer(by)),
                                ..Process::default()
                            }),
                            ..Actor::default()
                        },
                        // Signed in on the approvals page: the provider vouches for them.
                        DecidedBy::SignedIn(s) => Actor {
                            user: Some(User {
                                uid: Some(s.subject.clone()),
                                name: Some(s.display()),
                                groups: s
                                    .groups
                                    .iter()
                                    .map(|g| Group { name: g.clone() })
                                    .collect(),
                            }),
                            idp: Some(Idp {
                                name: "approvals-page".into(),
                                uid: s.issuer.clone(),
                            }),
                            ..Actor::default()
                        },
                    });
                } else {
                    b.actor = Some(Actor::interlock());
                }
                b.verdict(match approval.decision {
                    Decision::Approved => APPROVED,
                    _ => BLOCKED,
                });
                hold_attrs(&mut b, &approval.pending);
                let decision = match approval.decision {
                    Decision::Approved => "approved",
                    Decision::Denied => "denied",
                    Decision::Expired => "expired",
                    Decision::Withdrawn => "withdrawn",
                };
                b.status_detail = Some(match &approval.reason {
                    Some(r) => format!("{decision}: {r}"),
                    None => decision.to_string(),
                });
            }
            K::Statement {
                session_id,
                target,
                text,
                decision,
                error,
                duration_ms,
                ..
            } => {
                b.session(session_id, ctx, Some(target));
                b.decision(decision);
                b.database = Some(Database::postgres(target));
                b.query_info = text.as_ref().map(|t| QueryInfo {
                    query_string: t.clone(),
                    uid: ev.id.clone(),
                });
                b.duration = Some(*duration_ms);
                b.status_detail = error.clone();
            }
            K::Command {
                session_id,
                target,
                command_kind,
                text,
                decision,
                exit_status,
                exit_signal,
                duration_ms,
                reconstructed,
                recording: _,
            } => {
                b.session(session_id, ctx, Some(target));
                b.decision(decision);
                command_attrs(&mut b, *command_kind, text.as_deref());
                b.duration = Some(*duration_ms);
                b.status_detail = match (exit_signal, exit_status) {
                    (Some(sig), _) => Some(format!("killed by signal {sig}")),
                    (None, Some(s)) if *s != 0 => Some(format!("exit status {s}")),
                    _ => None,
                };
                if *reconstructed {
                    b.message = Some(
                        "command line reconstructed from the shell's terminal input (best effort)"
                            .into(),
                    );
                }
            }
            K::Masked {
                session_id,
                target,
                rule,
                counts,
            } => {
                b.session(session_id, ctx, Some(target));
                b.database = Some(Database::postgres(target));
                b.firewall_rule = Some(Rule::named(Some(rule)));
                let total: u64 = counts.iter().map(|(_, n)| n).sum();
                b.message = Some(format!("{total} values masked by rule {rule}"));
            }
            K::ProtocolError {
                session_id,
                target,
                side,
                message,
            } => {
                b.session(session_id, ctx, Some(target));
                let side = match side {
                    Side::Client => "client",
                    Side::Server => "server",
                };
                b.status_detail = Some(format!("{side} side: {message}"));
            }
            K::ConnectionRefused {
                listener,
                peer,
                reason,
            } => {
                b.src_endpoint = Some(Endpoint::addr(*peer));
                b.dst_endpoint = Some(Endpoint::addr(*listener));
                b.verdict(BLOCKED);
                b.status_detail = Some(reason.clone());
            }
            K::ConnectsRefused {
                reason,
                count,
                total,
                by,
            } => {
                b.log("kernel flow table".into());
                b.message = Some(match by {
                    None => format!(
                        "{count} connects to targets not redirected ({reason:?}; {total} in all)"
                    ),
                    Some(by) => format!(
                        "{count} connects to targets from cgroup {} not redirected ({reason:?}; {total} in all from it)",
                        by.cgroup.as_deref().unwrap_or("(gone)")
                    ),
                });
                if let Some(by) = by {
                    let process = Process {
                        pid: Some(by.pid),
                        name: Some(by.comm.clone()),
                        user: User::of(by.uid, None),
                        ..Process::default()
                    };
                    b.actor = Some(Actor {
                        user: process.user.clone(),
                        process: Some(process),
                        ..Actor::default()
                    });
                }
            }
            K::KernelIntegrity {
                finding,
                path,
                detail,
                repaired,
            } => {
                b.log("interlock kernel side".into());
                b.message = Some(format!(
                    "{finding:?} at {path}: {detail}{}",
                    if *repaired {
                        " (repaired)"
                    } else {
                        " (not repaired)"
                    }
                ));
            }
            K::PolicyReloaded {
                path,
                trigger,
                targets,
                rules,
            } => {
                b.actor = Some(Actor::interlock());
                b.app = Some(Product::interlock());
                b.message = Some(format!(
                    "policy {path} in force ({trigger:?}): {targets} targets, {rules} rules"
                ));
            }
            K::PolicyReloadFailed { path, error, .. } => {
                b.actor = Some(Actor::interlock());
                b.app = Some(Product::interlock());
                b.message = Some(format!("policy {path} not reloaded"));
                b.status_detail = Some(error.clone());
            }
            K::DaemonStarted {
                instance,
                pid,
                version,
                ppid,
                uid,
                exe,
                argv,
                ..
            } => {
                let mut p = Process::daemon(*pid, *uid, exe.as_deref(), argv);
                if *ppid != 0 {
                    p.parent_process = Some(Box::new(Process {
                        pid: Some(*ppid),
                        ..Process::default()
                    }));
                }
                b.actor = Some(match ppid {
                    0 => Actor::interlock(),
                    _ => Actor {
                        process: p.parent_process.as_deref().cloned(),
                        ..Actor::default()
                    },
                });
                b.process = Some(p);
                b.message = Some(format!("interlock {version} started (instance {instance})"));
            }
            K::DaemonStopped {
                instance,
                reason,
                pid,
            } => {
                let p = Process::daemon(*pid, u32::MAX, None, &[]);
                b.actor = Some(Actor {
                    process: Some(p.clone()),
                    ..Actor::default()
                });
                b.process = Some(p);
                b.message = Some(format!("interlock stopped (instance {instance}): {reason}"));
            }
            K::ProcessRecordsLost { lost, total } => {
                b.log("kernel process records".into());
                b.message = Some(format!("{lost} process records lost ({total} in all)"));
            }
            K::AuditTailSealed { from_seq, to_seq } => {
                b.log("interlock audit".into());
                b.message = Some(format!(
                    "sealed records {from_seq}..{to_seq} after an unclean stop"
                ));
            }
            K::AuditPartialRecordDropped { segment, bytes } => {
                b.log("interlock audit".into());
                b.message = Some(format!(
                    "cut a partial record of {bytes} bytes off {segment}"
                ));
            }
            K::AuditTruncationDetected {
                checkpoint_seq,
                last_seq,
            } => {
                b.log("interlock audit".into());
                b.message = Some(format!(
                    "records removed: the log ends at {last_seq}, its checkpoint names {checkpoint_seq}"
                ));
            }
            K::AuditWriteFailed {
                since,
                error,
                records_held,
                refused_sessions,
                refused_requests,
            } => {
                b.log("interlock audit".into());
                b.status_detail = Some(error.clone());
                b.message = Some(format!(
                    "the audit log could not be written since {since}: {refused_sessions} sessions and {refused_requests} requests refused, {records_held} records held and written late"
                ));
            }
            K::WebhookDisabled { endpoint, status } => {
                b.log(format!("webhook {endpoint}"));
                b.status_detail = Some(format!("HTTP {status}"));
            }
            K::WebhookSpoolOverflow {
                endpoint, dropped, ..
            } => {
                b.log(format!("webhook {endpoint}"));
                b.message = Some(format!("{dropped} undelivered events dropped: spool full"));
            }
            K::WebhookTest { endpoint } => {
                b.log(format!("webhook {endpoint}"));
                b.message = Some("test event from `interlock webhook test`".into());
            }
        }
        b
    }
}

/// Attributes of a blocked request, by its kind.
fn request_attrs(b: &mut Body, r: &RequestView, event_id: &str, target: &str) {
    match r {
        RequestView::Statement { text, .. } => {
            b.database = Some(Database::postgres(target));
            b.query_info = Some(QueryInfo {
                query_string: text.clone(),
                uid: event_id.to_string(),
            });
        }
        RequestView::Command { command_kind, text } => {
            command_attrs(b, *command_kind, Some(text));
        }
        RequestView::Login { user } => b.message = Some(format!("login as {user}")),
        RequestView::Env { name } => b.message = Some(format!("env {name}")),
        RequestView::Session { .. } => {}
    }
}

/// Attributes of an SSH request: file operations name their path.
fn command_attrs(b: &mut Body, kind: CommandKind, text: Option<&str>) {
    let name = kind_name(kind);
    if let Some(t) = text {
        if name.starts_with("file_") {
            b.file = Some(File::regular(t));
        }
        b.message = Some(format!("{name}: {t}"));
    }
}

/// Authorize Session attributes of a hold: the requester is the user the
/// privilege (to run the held request) is for.
fn hold_attrs(b: &mut Body, p: &crate::approval::Pending) {
    b.user = User::of(p.requester.uid, p.requester.user.as_deref()).or_else(|| {
        Some(User {
            uid: Some(p.requester.uid.to_string()),
            ..User::default()
        })
    });
    b.privileges = Some(vec![format!("{} ({})", p.rule, grant_text(p))]);
    b.firewall_rule = Some(Rule::named(Some(&p.rule)));
    b.message = Some(match &p.request {
        RequestView::Session { destination } => format!("connection to {destination}"),
        RequestView::Statement { text, .. } => format!("statement: {text}"),
        RequestView::Command { command_kind, text } => {
            format!("{}: {text}", kind_name(*command_kind))
        }
        RequestView::Login { user } => format!("login as {user}"),
        RequestView::Env { name } => format!("env {name}"),
    });
}

/// The snake_case name of a command kind, as events spell it.
fn kind_name(kind: CommandKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn grant_text(p: &crate::approval::Pending) -> String {
    serde_json::to_value(p.grant)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "once".into())
}
