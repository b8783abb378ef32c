//! Catching the webhook spools up with the audit log. An event is
//! appended to the spools right after its audit record; a daemon killed
//! between the two, records the log wrote before the spools were attached
//! (the restart's own `audit_*` events), or a spool that could not be
//! written (a full disk) would leave records that no receiver ever gets.
//! So each spool is given every record after the newest one it holds, with
//! bodies built as they would have been (sessions' starts looked up
//! further back): at start, before the log takes new events, and whenever a
//! spool that fell behind can be written again.

use std::{collections::HashSet, sync::Arc};

use serde::Deserialize as _;
use tracing::{error, info, warn};

use super::{AuditSink, Event, log::Plain, ocsf::Mapper, read, writer::Chain};

/// Gives each spool the records of the log it lacks. Returns the indexes
/// of spools that could not be given all of them (they are behind; the
/// records stay in the audit log either way).
pub(super) fn reconcile(chain: &Chain, spools: &[Arc<dyn AuditSink>]) -> Vec<usize> {
    let last = chain.last_seq();
    let mut wants: Vec<(usize, &Arc<dyn AuditSink>, u64)> = Vec::new();
    for (i, s) in spools.iter().enumerate() {
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
            wants.push((i, s, have + 1));
        }
    }
    let Some(from) = wants.iter().map(|(_, _, from)| *from).min() else {
        return Vec::new();
    };
    let backlog = match read::backlog(chain.dir(), from) {
        Ok(b) => b,
        Err(e) => {
            error!(error = %e, "cannot read the audit log to catch webhook spools up");
            return wants.iter().map(|(i, ..)| *i).collect();
        }
    };
    let mut mapper = Mapper::default();
    for v in &backlog.starts {
        if let Ok(ev) = Event::deserialize(v) {
            mapper.remember(&ev);
        }
    }
    let mut given = 0u64;
    let mut failed = Vec::new();
    for (seq, record) in backlog.records {
        let Some((id, body)) = body_of(&mut mapper, seq, record) else {
            continue;
        };
        for (i, s, from) in &wants {
            // A spool that could not take a record takes none after it:
            // it must only ever lack a tail, which the next catch-up gives.
            if seq < *from || failed.contains(i) {
                continue;
            }
            match s.append(&id, seq, &body) {
                Ok(_) => given += 1,
                Err(e) => {
                    error!(endpoint = s.label(), error = %e, "cannot spool a caught-up event");
                    failed.push(*i);
                }
            }
        }
    }
    let endpoints: HashSet<&str> = wants.iter().map(|(_, s, _)| s.label()).collect();
    info!(
        from_seq = from,
        to_seq = last,
        events = given,
        endpoints = endpoints.len(),
        "webhook spools caught up with the audit log (the daemon did not stop cleanly)"
    );
    failed
}

/// Gives `spool` (behind since it could not be written) every record after
/// the newest one it holds.
///
/// # Errors
/// The log could not be read or the spool written (it stays behind).
pub(super) fn catch_up(chain: &Chain, spool: &Arc<dyn AuditSink>) -> Result<(), String> {
    let from = spool.last_seq() + 1;
    if from > chain.last_seq() {
        return Ok(());
    }
    let backlog = read::backlog(chain.dir(), from).map_err(|e| e.to_string())?;
    let mut mapper = Mapper::default();
    for v in &backlog.starts {
        if let Ok(ev) = Event::deserialize(v) {
            mapper.remember(&ev);
        }
    }
    for (seq, record) in backlog.records {
        if let Some((id, body)) = body_of(&mut mapper, seq, record) {
            spool.append(&id, seq, &body).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Gives the JSONL file every record from `from` on, as the lines it would
/// have had; returns how many.
///
/// # Errors
/// The first seq still missing, and why.
pub(super) fn plain(
    chain: &Chain,
    file: &mut super::jsonl::JsonlFile,
    from: u64,
) -> Result<u64, (u64, String)> {
    if from > chain.last_seq() {
        return Ok(0);
    }
    let backlog = read::backlog(chain.dir(), from).map_err(|e| (from, e.to_string()))?;
    let mut n = 0;
    for (seq, mut v) in backlog.records {
        if let Some(o) = v.as_object_mut() {
            o.remove("prev");
            o.remove("hash");
        }
        let line = match Event::deserialize(&v) {
            Ok(ev) => serde_json::to_vec(&Plain { seq, event: &ev }),
            // Not an event this version knows: as logged, with its seq.
            Err(_) => serde_json::to_vec(&v),
        };
        let mut line = line.map_err(|e| (seq, e.to_string()))?;
        line.push(b'\n');
        file.append(seq, &line)
            .map_err(|e| (e.from_seq, e.source.to_string()))?;
        n += 1;
    }
    file.flush()
        .map_err(|e| (e.from_seq, e.source.to_string()))?;
    Ok(n)
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
