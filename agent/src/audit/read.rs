//! Reading the events back out of the segments, for investigators
//! (`interlock sessions`, `interlock replay`). Each line's own hash is
//! checked, so an edited record is refused rather than shown; the full
//! chain check (links, seq continuity, signatures) is `interlock audit verify`.

use std::path::Path;

use super::{
    LogError,
    record::{self, CHECKPOINT, LineError},
    segment,
    writer::AUDIT_DIR,
};

/// Every event in the audit log under `dir` (a state directory or its
/// `audit/` directory), in log order, as JSON objects with their chain
/// fields (`seq`, `prev`, `hash`). Checkpoint records are left out. A
/// partial last line (a daemon that died mid-write) is ignored, as the
/// daemon itself does on restart.
///
/// # Errors
/// [`LogError::NoLog`] when there are no segments, [`LogError::Io`] when a
/// segment cannot be read, [`LogError::Corrupt`] for a line that is not an
/// intact record.
pub fn read_events(dir: &Path) -> Result<Vec<serde_json::Value>, LogError> {
    let sub = dir.join(AUDIT_DIR);
    let audit = if sub.is_dir() { sub } else { dir.to_path_buf() };
    let segments = segment::list(&audit).map_err(LogError::io(&audit))?;
    if segments.is_empty() {
        return Err(LogError::NoLog(dir.to_path_buf()));
    }
    let mut out = Vec::new();
    for (_, path) in segments {
        let bytes = std::fs::read(&path).map_err(LogError::io(&path))?;
        let (lines, _partial) = segment::lines(&bytes);
        for (line, text) in lines {
            let parsed = record::parse(text).map_err(|e| LogError::Corrupt {
                path: path.clone(),
                line,
                why: match e {
                    LineError::Malformed => "not a well-formed record",
                    LineError::HashMismatch(_) => "the record does not match its hash",
                },
            })?;
            if parsed.kind != CHECKPOINT {
                out.push(parsed.value);
            }
        }
    }
    Ok(out)
}

/// What reconciliation needs from the log: the records from a seq on,
/// and the `session_started` records of the sessions they belong to that
/// started before it.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    /// `(seq, record)` with seq at least the one asked for, in log order;
    /// no checkpoints.
    pub(crate) records: Vec<(u64, serde_json::Value)>,
    /// Earlier `session_started` records those refer to.
    pub(crate) starts: Vec<serde_json::Value>,
}

/// The [`Backlog`] from `from` in the audit directory `audit`: the
/// newest segments back to the one holding `from`, then further back only
/// while a session's start is missing. Lines that are not intact records
/// are skipped (`interlock audit verify` names them).
///
/// # Errors
/// [`LogError::Io`] when a segment cannot be read.
pub(crate) fn backlog(audit: &Path, from: u64) -> Result<Backlog, LogError> {
    let segments = segment::list(audit).map_err(LogError::io(audit))?;
    let mut out = Backlog::default();
    let mut started = std::collections::HashSet::new();
    let mut missing = std::collections::HashSet::new();
    let mut in_range = true;
    for (_, path) in segments.iter().rev() {
        let bytes = std::fs::read(path).map_err(LogError::io(path))?;
        let (lines, _partial) = segment::lines(&bytes);
        let records: Vec<record::Parsed> = lines
            .into_iter()
            .filter_map(|(_, l)| record::parse(l).ok())
            .filter(|r| r.kind != CHECKPOINT)
            .collect();
        let first = records.first().map(|r| r.seq).unwrap_or(u64::MAX);
        if in_range {
            let mut mine = Vec::new();
            for r in records {
                if r.seq >= from {
                    if r.kind == SESSION_STARTED
                        && let Some(id) = session_of(&r.value)
                    {
                        started.insert(id);
                    } else if let Some(id) = session_of(&r.value) {
                        missing.insert(id);
                    }
                    mine.push((r.seq, r.value));
                } else if r.kind == SESSION_STARTED {
                    out.starts.push(r.value);
                }
            }
            mine.append(&mut out.records);
            out.records = mine;
            in_range = first > from;
            if !in_range {
                missing.retain(|id| !started.contains(id));
                let found: Vec<String> = out.starts.iter().filter_map(session_of).collect();
                for id in found {
                    missing.remove(&id);
                }
            }
        } else {
            for r in records {
                if r.kind == SESSION_STARTED
                    && let Some(id) = session_of(&r.value)
                    && missing.remove(&id)
                {
                    out.starts.push(r.value);
                }
            }
        }
        if !in_range && missing.is_empty() {
            break;
        }
    }
    Ok(out)
}

const SESSION_STARTED: &str = "session_started";

fn session_of(v: &serde_json::Value) -> Option<String> {
    v.get("session_id")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditOptions, Event, EventKind, Fsync, writer::Chain};

    #[test]
    fn reads_events_skips_checkpoints_and_refuses_edits() {
        let d = crate::test_dir::TestDir::new("audit-read");
        assert!(matches!(read_events(&d), Err(LogError::NoLog(_))));
        let opts = AuditOptions {
            fsync: Fsync::Never,
            ..AuditOptions::default()
        };
        let mut c = Chain::open(&d, "host", opts).unwrap();
        for r in ["a", "b"] {
            let kind = EventKind::DaemonStopped {
                instance: "i".into(),
                reason: r.into(),
                pid: 1,
            };
            c.append_event(&Event::now("host", kind)).unwrap();
        }
        c.checkpoint().unwrap();
        drop(c);
        let ev = read_events(&d).unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[1]["reason"], "b");
        assert_eq!(ev[1]["ocsf"]["class_uid"], 1007);
        let seg = d.join(AUDIT_DIR).join(segment::name(1));
        let text = std::fs::read_to_string(&seg).unwrap();
        std::fs::write(
            &seg,
            text.replacen("\"reason\":\"b\"", "\"reason\":\"x\"", 1),
        )
        .unwrap();
        let err = read_events(&d.join(AUDIT_DIR)).unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains("audit verify"),
            "{err}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
