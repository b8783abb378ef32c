//! The full OCSF event of a webhook body: the class's attributes at top
//! level, interlock's own event under `unmapped`. Events after a session's
//! start carry only its id, so the mapper remembers each live session's
//! actor and endpoints from its `session_started` and puts them on every
//! later event of the session.

use std::{collections::BTreeMap, sync::Arc};

use serde::Serialize;

use super::{
    Class, Classification, Enum, Header, NETWORK, SSH, epoch_ms,
    objects::{
        Actor, ConnectionInfo, Database, Device, Endpoint, File, Metadata, Process, Product,
        QueryInfo, Rule, Traffic, User, Verdict,
    },
};
use crate::audit::{DecisionView, Disposition, Event, EventKind};

/// Live sessions remembered at most (the oldest is forgotten first).
const MAX_SESSIONS: usize = 65_536;

/// What later events of a session take from its start.
#[derive(Debug)]
pub(super) struct SessionCtx {
    actor: Actor,
    src: Endpoint,
    dst: Endpoint,
}

/// Turns events into OCSF webhook bodies, remembering live sessions.
#[derive(Debug, Default)]
pub(crate) struct Mapper {
    /// By session id; ids are UUID v7, so the first is the oldest.
    pub(super) sessions: BTreeMap<String, Arc<SessionCtx>>,
}

/// The top-level OCSF event (without `unmapped`, appended as raw JSON).
#[derive(Serialize)]
pub(super) struct Body {
    #[serde(flatten)]
    pub(super) header: Header,
    #[serde(skip)]
    pub(super) class: Class,
    pub(super) type_name: String,
    pub(super) time: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) status_detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) message: Option<String>,
    pub(super) metadata: Metadata,
    pub(super) device: Device,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) actor: Option<Actor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) src_endpoint: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) dst_endpoint: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) connection_info: Option<ConnectionInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) traffic: Option<Traffic>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) start_time: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) end_time: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) action_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) action: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) disposition_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) disposition: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) firewall_rule: Option<Rule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) database: Option<Database>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) query_info: Option<QueryInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) file: Option<File>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) process: Option<Process>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) user: Option<User>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) privileges: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) app: Option<Product>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) log_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) log_provider: Option<&'static str>,
}

pub(super) const ALLOWED: Verdict = Verdict {
    action: (1, "Allowed"),
    disposition: (1, "Allowed"),
};
pub(super) const APPROVED: Verdict = Verdict {
    action: (1, "Allowed"),
    disposition: (8, "Approved"),
};
pub(super) const HELD: Verdict = Verdict {
    action: (99, "Held"),
    disposition: (14, "Delayed"),
};
pub(super) const BLOCKED: Verdict = Verdict {
    action: (2, "Denied"),
    disposition: (2, "Blocked"),
};

fn verdict(d: Disposition) -> Verdict {
    match d {
        Disposition::Allowed => ALLOWED,
        Disposition::Approved => APPROVED,
        Disposition::Held => HELD,
        Disposition::Blocked => BLOCKED,
    }
}

impl Body {
    pub(super) fn new(c: &Classification, ev: &Event, seq: Option<u64>) -> Body {
        Body {
            header: Header::from(c),
            class: c.class,
            type_name: format!("{}: {}", c.class.name, c.activity.1),
            time: epoch_ms(&ev.time).unwrap_or(0),
            status_detail: None,
            message: None,
            metadata: Metadata {
                uid: Some(ev.id.clone()),
                correlation_uid: ev.kind.session_id().map(str::to_string),
                sequence: seq,
                log_name: Some("interlock audit"),
                profiles: vec!["host", "security_control"],
                ..Metadata::compact()
            },
            device: Device::host(&ev.host),
            actor: None,
            src_endpoint: None,
            dst_endpoint: None,
            connection_info: None,
            traffic: None,
            duration: None,
            start_time: None,
            end_time: None,
            action_id: None,
            action: None,
            disposition_id: None,
            disposition: None,
            firewall_rule: None,
            database: None,
            query_info: None,
            file: None,
            process: None,
            user: None,
            privileges: None,
            app: None,
            log_name: None,
            log_provider: None,
        }
    }

    pub(super) fn verdict(&mut self, v: Verdict) {
        let (a, d): (Enum, Enum) = (v.action, v.disposition);
        self.action_id = Some(a.0);
        self.action = Some(a.1);
        self.disposition_id = Some(d.0);
        self.disposition = Some(d.1);
    }

    pub(super) fn decision(&mut self, d: &DecisionView) {
        self.verdict(verdict(d.action));
        self.firewall_rule = Some(Rule::named(d.rule.as_deref()));
    }

    /// Actor and endpoints of the session (or its id only, if its start
    /// is not at hand).
    pub(super) fn session(&mut self, id: &str, ctx: Option<&SessionCtx>, target: Option<&str>) {
        match ctx {
            Some(c) => {
                self.actor = Some(c.actor.clone());
                self.src_endpoint = Some(c.src.clone());
                self.dst_endpoint = Some(c.dst.clone());
            }
            None => {
                self.actor = Some(Actor::session(id));
                self.src_endpoint = Some(Endpoint {
                    uid: Some(id.to_string()),
                    ..Endpoint::default()
                });
                self.dst_endpoint = target.map(Endpoint::named);
            }
        }
        if matches!(self.class, NETWORK | SSH) {
            self.connection_info = Some(ConnectionInfo::outbound(id));
        }
    }

    /// A log event of interlock itself (Event Log Activity).
    pub(super) fn log(&mut self, name: String) {
        self.actor = Some(Actor::interlock());
        self.log_name = Some(name);
        self.log_provider = Some("interlock");
    }
}

impl Mapper {
    /// The OCSF body of `ev` (record `seq`, when it has one), with
    /// `native` (interlock's own JSON of the event) under `unmapped`.
    /// A `session_started` is remembered for the session's later events; a
    /// `session_ended` forgets it. Call it in log order.
    ///
    /// # Errors
    /// Serialization failed (not expected for these types).
    pub(crate) fn body(
        &mut self,
        seq: Option<u64>,
        ev: &Event,
        native: &[u8],
    ) -> Result<Vec<u8>, serde_json::Error> {
        let body = self.build(seq, ev);
        let mut out = serde_json::to_vec(&body)?;
        if out.last() == Some(&b'}') {
            out.pop();
            out.extend_from_slice(b",\"unmapped\":");
            out.extend_from_slice(native);
            out.push(b'}');
        }
        Ok(out)
    }

    /// Remembers a session's start without producing a body.
    pub(crate) fn remember(&mut self, ev: &Event) {
        if let EventKind::SessionStarted {
            session_id,
            identity,
            ..
        } = &ev.kind
        {
            if self.sessions.len() >= MAX_SESSIONS {
                self.sessions.pop_first();
            }
            let mut dst = Endpoint::addr(identity.original_destination);
            dst.name = Some(identity.target.clone());
            self.sessions.insert(
                session_id.clone(),
                Arc::new(SessionCtx {
                    actor: Actor::of(identity),
                    src: Endpoint::addr(identity.client),
                    dst,
                }),
            );
        }
    }
}
