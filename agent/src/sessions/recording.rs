//! A session's recording: every audit record that names its `session_id`,
//! in log order. For tcp that is `session_started` (identity, target,
//! start) and `session_ended` (outcome, byte counts, duration). This is the
//! extension point for protocol transcripts: any event kind that carries a
//! `session_id` (a PostgreSQL statement, an SSH command) becomes an entry of
//! its session's recording and is replayed in order, with no change here.

use std::{collections::HashMap, time::SystemTime};

use serde_json::Value;

/// The record type that opens a session.
pub(crate) const STARTED: &str = "session_started";
/// The record type that closes a session.
pub(crate) const ENDED: &str = "session_ended";

/// One record of a session.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The record's `type`.
    pub kind: String,
    /// When it was recorded (`None` if its `time` does not parse).
    pub at: Option<SystemTime>,
    /// The whole record.
    pub record: Value,
}

/// Everything the audit log holds about one session.
#[derive(Debug, Clone)]
pub struct Recording {
    id: String,
    entries: Vec<Entry>,
}

impl Recording {
    /// Groups `records` (in log order) into recordings, ordered by each
    /// session's first record. Records without a `session_id` are skipped.
    pub fn collect(records: Vec<Value>) -> Vec<Recording> {
        let mut out: Vec<Recording> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for record in records {
            let Some(id) = record.get("session_id").and_then(Value::as_str) else {
                continue;
            };
            let id = id.to_string();
            let entry = Entry {
                kind: text(&record, &["type"]).unwrap_or_default().to_string(),
                at: text(&record, &["time"]).and_then(|t| humantime::parse_rfc3339(t).ok()),
                record,
            };
            match index.get(&id).and_then(|i| out.get_mut(*i)) {
                Some(r) => r.entries.push(entry),
                None => {
                    index.insert(id.clone(), out.len());
                    out.push(Recording {
                        id,
                        entries: vec![entry],
                    });
                }
            }
        }
        out
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Every record of the session, in log order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The `session_started` record; `None` if the log lacks it.
    pub fn started(&self) -> Option<&Value> {
        self.find(STARTED)
    }

    /// The `session_ended` record; `None` while the session was open when
    /// the log ends (or the daemon died before ending it).
    pub fn ended(&self) -> Option<&Value> {
        self.find(ENDED)
    }

    fn find(&self, kind: &str) -> Option<&Value> {
        self.entries
            .iter()
            .find(|e| e.kind == kind)
            .map(|e| &e.record)
    }

    /// The flow identity from `session_started`.
    pub fn identity(&self) -> Option<&Value> {
        self.started().and_then(|s| s.get("identity"))
    }

    /// When the session started: its first record's time.
    pub fn start(&self) -> Option<SystemTime> {
        self.entries.first().and_then(|e| e.at)
    }

    /// The start time as recorded (RFC 3339).
    pub fn start_text(&self) -> Option<&str> {
        self.entries
            .first()
            .and_then(|e| text(&e.record, &["time"]))
    }

    /// The target name (from the identity, else from `session_ended`).
    pub fn target(&self) -> Option<&str> {
        self.identity()
            .and_then(|i| text(i, &["target"]))
            .or_else(|| self.ended().and_then(|e| text(e, &["target"])))
    }

    /// `closed`, `error`, ... from `session_ended`; `None` while open.
    pub fn outcome(&self) -> Option<&str> {
        self.ended().and_then(|e| text(e, &["outcome"]))
    }

    /// Bytes client -> server and server -> client, once ended.
    pub fn bytes(&self) -> Option<(u64, u64)> {
        let e = self.ended()?;
        Some((
            e.get("bytes_client_to_server")?.as_u64()?,
            e.get("bytes_server_to_client")?.as_u64()?,
        ))
    }

    /// The duration the daemon measured, once ended.
    pub fn duration_ms(&self) -> Option<u64> {
        self.ended()?.get("duration_ms")?.as_u64()
    }
}

/// The string at `path` in `v`.
pub(crate) fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(v, |v, key| v.get(key))
        .and_then(Value::as_str)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A started/ended pair as the daemon writes them.
    pub(crate) fn session(id: &str, secs: u32, argv: &[&str], user: &str) -> Vec<Value> {
        let identity = json!({
            "original_destination": "127.0.0.2:5432", "target": "db", "protocol": "tcp",
            "client": "127.0.0.1:40000", "cgroup_id": 7, "comm": "psql",
            "process": {"pid": 10, "tgid": 10, "ppid": 1, "uid": 1000, "user": user, "gid": 1000,
                "comm": "psql", "exe": "/usr/bin/psql", "argv": argv,
                "ancestry": [{"tgid": 1, "exe": "/bin/sh", "argv": ["sh", "-c", "x"]}],
                "cgroup": "/ci.slice/job-1", "ci": {"GITHUB_RUN_ID": "4242"}}
        });
        vec![
            json!({"seq": 1, "id": "e1", "time": format!("2026-01-02T03:00:{secs:02}.000Z"),
                "host": "h", "type": STARTED, "session_id": id, "identity": identity}),
            json!({"seq": 2, "id": "e2", "time": format!("2026-01-02T03:00:{:02}.250Z", secs + 1),
                "host": "h", "type": ENDED, "session_id": id, "target": "db", "outcome": "closed",
                "bytes_client_to_server": 12, "bytes_server_to_client": 345, "duration_ms": 1250}),
        ]
    }

    #[test]
    fn groups_by_session_in_order() {
        let mut log = vec![json!({"type": "daemon_started", "time": "2026-01-02T03:00:00Z"})];
        let a = session("aaa", 1, &["psql", "-c", "x"], "alice");
        let b = session("bbb", 2, &["psql"], "bob");
        // Interleaved: a starts, b starts, a ends, b ends.
        log.extend([a[0].clone(), b[0].clone(), a[1].clone(), b[1].clone()]);
        log.push(json!({"type": "session_note", "session_id": "bbb", "time": "x"}));
        let recs = Recording::collect(log);
        assert_eq!(recs.len(), 2);
        let (a, b) = (&recs[0], &recs[1]);
        assert_eq!(a.id(), "aaa");
        assert_eq!(a.target(), Some("db"));
        assert_eq!(a.outcome(), Some("closed"));
        assert_eq!(a.bytes(), Some((12, 345)));
        assert_eq!(a.duration_ms(), Some(1250));
        assert_eq!(a.start_text(), Some("2026-01-02T03:00:01.000Z"));
        assert_eq!(b.entries().len(), 3, "later entries join their session");
        assert_eq!(b.entries()[2].at, None);
    }

    #[test]
    fn an_open_session_has_no_end() {
        let mut log = session("ccc", 1, &["x"], "u");
        log.pop();
        let r = &Recording::collect(log)[0];
        assert_eq!(
            (r.outcome(), r.bytes(), r.duration_ms()),
            (None, None, None)
        );
        assert_eq!(r.target(), Some("db"));
    }
}
