//! Catching the webhook spools up with the audit log at start. An event is
//! appended to the spools right after its audit record; a daemon killed
//! between the two (or records the log wrote before the spools were
//! attached: the restart's own `audit_*` events) would leave records that
//! no receiver ever gets. So before the log takes new events, each spool
//! is given every record after the newest one it holds, with bodies built
//! as they would have been (sessions' starts looked up further back).

use std::{collections::HashSet, sync::Arc};

use serde::Deserialize as _;
use tracing::{error, info, warn};

use super::{Event, log::Plain, ocsf::Mapper, read, writer::Chain};
use crate::sinks::Spool;

/// Gives each spool the records of the log it lacks; problems are logged
/// (the records stay in the audit log either way).
pub(super) fn reconcile(chain: &Chain, spools: &[Arc<Spool>]) {
    let last = chain.last_seq();
    let mut wants: Vec<(&Arc<Spool>, u64)> = Vec::new();
    for s in spools {
        if s.is_disabled() {
            continue;
        }
        if s.is_fresh() {
            // A new endpoint gets events from now on, not the log's history.
            if let Err(e) = s.start_at(last) {
                error!(endpoint = s.label(), error = %e, "cannot record where a new spool starts");
            }
            continue;
        }
        let have = s.last_seq();
        if have > last {
            warn!(
                endpoint = s.label(),
                spool_seq = have,
                log_seq = last,
                "webhook spool is ahead of the audit log (was the log replaced?); nothing to catch up"
            );
        } else if have < last {
            wants.push((s, have + 1));
        }
    }
    let Some(from) = wants.iter().map(|(_, from)| *from).min() else {
        return;
    };
    let backlog = match read::backlog(chain.dir(), from) {
        Ok(b) => b,
        Err(e) => {
            error!(error = %e, "cannot read the audit log to catch webhook spools up");
            return;
        }
    };
    let mut mapper = Mapper::default();
    for v in &backlog.starts {
        if let Ok(ev) = Event::deserialize(v) {
            mapper.remember(&ev);
        }
    }
    let mut given = 0u64;
    for (seq, record) in backlog.records {
        let Some((id, body)) = body_of(&mut mapper, seq, record) else {
            continue;
        };
        for (s, from) in &wants {
            if seq < *from {
                continue;
            }
            match s.append(&id, seq, &body) {
                Ok(_) => given += 1,
                Err(e) => {
                    error!(endpoint = s.label(), error = %e, "cannot spool a caught-up event")
                }
            }
        }
    }
    let endpoints: HashSet<&str> = wants.iter().map(|(s, _)| s.label()).collect();
    info!(
        from_seq = from,
        to_seq = last,
        events = given,
        endpoints = endpoints.len(),
        "webhook spools caught up with the audit log (the daemon did not stop cleanly)"
    );
}

/// The id and webhook body of a record read back from the log. A record
/// this version cannot read as an event (an unknown type) goes as it is.
fn body_of(mapper: &mut Mapper, seq: u64, mut v: serde_json::Value) -> Option<(String, Vec<u8>)> {
    if let Some(o) = v.as_object_mut() {
        o.remove("prev");
        o.remove("hash");
    }
    let id = v.get("id")?.as_str()?.to_string();
    let body = match Event::deserialize(&v) {
        Ok(ev) => serde_json::to_vec(&Plain { seq, event: &ev })
            .and_then(|native| mapper.body(Some(seq), &ev, &native)),
        Err(e) => {
            warn!(seq, error = %e, "a logged record is not an event this version knows; delivered as logged");
            serde_json::to_vec(&v)
        }
    };
    match body {
        Ok(b) => Some((id, b)),
        Err(e) => {
            error!(seq, error = %e, "cannot encode a caught-up event");
            None
        }
    }
}
