//! How sessions read on a terminal: the `sessions list` line (and its
//! `--json` object), the `sessions show` page and the `replay` transcript.

use std::{fmt::Write as _, time::Duration};

use serde_json::{Value, json};

use super::recording::{ENDED, Entry, Recording, STARTED, text};

/// Column titles of [`list_line`].
pub(crate) fn list_header() -> String {
    format!(
        "{:<36}  {:<24}  {:>8}  TARGET  DESTINATION  OUTCOME  UP/DOWN  WHO",
        "SESSION", "STARTED", "DURATION"
    )
}

/// One line of `sessions list`.
pub(crate) fn list_line(r: &Recording) -> String {
    let (up, down) = r
        .bytes()
        .map_or(("-".to_string(), "-".to_string()), |(u, d)| {
            (bytes(u), bytes(d))
        });
    format!(
        "{:<36}  {:<24}  {:>8}  {}  {}  {}  {up}/{down}  {}",
        r.id(),
        r.start_text().unwrap_or("-"),
        r.duration_ms().map_or("-".to_string(), seconds),
        r.target().unwrap_or("-"),
        dest(r),
        r.outcome().unwrap_or("open"),
        who(r),
    )
}

/// One `sessions list --json` object (one per line).
pub(crate) fn list_json(r: &Recording) -> Value {
    let (up, down) = r.bytes().unzip();
    let p = r.identity().and_then(|i| i.get("process"));
    let field = |k: &str| p.and_then(|p| p.get(k)).cloned().unwrap_or(Value::Null);
    json!({
        "session_id": r.id(),
        "start": r.start_text(),
        "duration_ms": r.duration_ms(),
        "target": r.target(),
        "original_destination": r.identity().and_then(|i| i.get("original_destination")),
        "outcome": r.outcome(),
        "bytes_client_to_server": up,
        "bytes_server_to_client": down,
        "user": field("user"),
        "uid": field("uid"),
        "pid": field("pid"),
        "exe": field("exe"),
        "argv": field("argv"),
        "ci": field("ci"),
        "job_token": r.identity().and_then(|i| i.get("job_token")).cloned(),
    })
}

/// The `sessions show` page: every field the recording holds.
pub(crate) fn show(r: &Recording) -> String {
    let mut s = String::new();
    // Values come from the job (argv, exe, CI values, claims): shown escaped.
    let mut line = |k: &str, v: &str| {
        let _ = writeln!(s, "{k:<13}{}", crate::text::escape_controls(v));
    };
    line("session", r.id());
    line("target", r.target().unwrap_or("-"));
    line("destination", &dest(r));
    line("started", r.start_text().unwrap_or("-"));
    // PostgreSQL: how the client's leg to interlock was protected.
    if let Some(leg) = r.started().and_then(|v| text(v, &["client_leg"])) {
        match r
            .started()
            .and_then(|v| text(v, &["client_tls_unavailable"]))
        {
            Some(why) => line("client leg", &format!("{leg} (TLS refused: {why})")),
            None => line("client leg", leg),
        }
    }
    match r.ended() {
        Some(e) => {
            line("ended", text(e, &["time"]).unwrap_or("-"));
            line("duration", &r.duration_ms().map_or("-".into(), seconds));
            line("outcome", r.outcome().unwrap_or("-"));
            if let Some(err) = text(e, &["error"]) {
                line("error", err);
            }
            if let Some((u, d)) = r.bytes() {
                line(
                    "bytes",
                    &format!("{} up (client to server), {} down", bytes(u), bytes(d)),
                );
            }
        }
        None => line(
            "ended",
            "no session_ended record (still open when the log ends)",
        ),
    }
    if let Some(i) = r.identity() {
        let t = |path: &[&str]| text(i, path).unwrap_or("-").to_string();
        let n = |path: &[&str]| {
            path.iter()
                .try_fold(i, |v, k| v.get(k))
                .map_or("-".to_string(), Value::to_string)
        };
        line("protocol", &t(&["protocol"]));
        line("client", &t(&["client"]));
        line("comm", &t(&["comm"]));
        line(
            "pid",
            &format!(
                "{} (tgid {}, ppid {})",
                n(&["process", "pid"]),
                n(&["process", "tgid"]),
                n(&["process", "ppid"])
            ),
        );
        line(
            "user",
            &format!(
                "{} (uid {}, gid {})",
                t(&["process", "user"]),
                n(&["process", "uid"]),
                n(&["process", "gid"])
            ),
        );
        line("exe", &t(&["process", "exe"]));
        line("argv", &argv(i.get("process").and_then(|p| p.get("argv"))));
        line(
            "cgroup",
            &format!("{} (id {})", t(&["process", "cgroup"]), n(&["cgroup_id"])),
        );
        if let Some(ci) = i.pointer("/process/ci").and_then(Value::as_object) {
            for (k, v) in ci {
                line("ci", &format!("{k}={}", v.as_str().unwrap_or_default()));
            }
        }
        match i.pointer("/process/ci_source/from").and_then(Value::as_str) {
            Some("job_root") => line(
                "ci from",
                &format!(
                    "job root {} under runner {} {}",
                    n(&["process", "ci_source", "job_root_tgid"]),
                    n(&["process", "ci_source", "runner_tgid"]),
                    t(&["process", "ci_source", "runner_exe"])
                ),
            ),
            Some(_) => line(
                "ci from",
                &format!("none: {}", t(&["process", "ci_source", "reason"])),
            ),
            None => {}
        }
        if let Some(j) = i.get("job_token") {
            let s = |k: &str| text(j, &[k]).unwrap_or("-").to_string();
            match j.get("error") {
                Some(_) => line("job token", &format!("refused: {}", s("error"))),
                None => line(
                    "job token",
                    &format!("{} (issuer {}, {})", s("sub"), s("issuer"), s("iss")),
                ),
            }
            if let Some(claims) = j.get("claims").and_then(Value::as_object) {
                for (k, v) in claims {
                    line("claim", &format!("{k}={v}"));
                }
            }
        }
        let ancestry = i.pointer("/process/ancestry").and_then(Value::as_array);
        for a in ancestry.into_iter().flatten() {
            let tgid = a.get("tgid").map_or("-".to_string(), Value::to_string);
            let exe = text(a, &["exe"]).unwrap_or("-");
            line("ancestor", &format!("{tgid} {exe} {}", argv(a.get("argv"))));
        }
    }
    let seqs: Vec<String> = r
        .entries()
        .iter()
        .filter_map(|e| e.record.get("seq").map(Value::to_string))
        .collect();
    line(
        "records",
        &format!("{} (audit seq {})", r.entries().len(), seqs.join(", ")),
    );
    s
}

/// One transcript line of `replay` for `e`, timed from the session start.
pub(crate) fn replay_line(r: &Recording, e: &Entry) -> String {
    let at = match (r.start(), e.at) {
        (Some(start), Some(at)) => format!(
            "+{:.3}s",
            at.duration_since(start).unwrap_or_default().as_secs_f64()
        ),
        _ => "+?".to_string(),
    };
    let v = &e.record;
    let what = match e.kind.as_str() {
        STARTED => format!(
            "session started by {} -> {} ({})",
            who(r),
            r.target().unwrap_or("-"),
            dest(r)
        ),
        ENDED => {
            let mut s = format!("session ended {}", text(v, &["outcome"]).unwrap_or("-"));
            if let Some((u, d)) = r.bytes() {
                let _ = write!(s, ", {} up / {} down", bytes(u), bytes(d));
            }
            if let Some(ms) = r.duration_ms() {
                let _ = write!(s, " after {}", seconds(ms));
            }
            if let Some(err) = text(v, &["error"]) {
                let _ = write!(s, ": {err}");
            }
            s
        }
        "statement" => statement(v),
        other => generic(other, v),
    };
    format!("{at:>10}  {what}")
}

/// A PostgreSQL `statement` event: its text (or that the recording level
/// left it out), what came of it, how long it ran and who decided.
fn statement(v: &Value) -> String {
    let mut s = format!(
        "statement: {}",
        text(v, &["text"]).unwrap_or("(text not recorded)")
    );
    match (v["rows"].as_u64(), text(v, &["error"])) {
        (_, Some(code)) => {
            let _ = write!(s, " -> error {code}");
        }
        (Some(1), None) => s.push_str(" -> 1 row"),
        (Some(n), None) => {
            let _ = write!(s, " -> {n} rows");
        }
        (None, None) => s.push_str(" -> done"),
    }
    if let Some(ms) = v["duration_ms"].as_u64() {
        let _ = write!(s, " in {}", seconds(ms));
    }
    let action = text(v, &["decision", "action"]).unwrap_or("-");
    match text(v, &["decision", "rule"]) {
        Some(rule) => {
            let _ = write!(s, " ({action} by rule {rule})");
        }
        None => {
            let _ = write!(s, " ({action})");
        }
    }
    s
}

/// A record kind this module does not know (a protocol's transcript entry):
/// its type and its own fields as `key=value`.
fn generic(kind: &str, v: &Value) -> String {
    const ENVELOPE: &[&str] = &[
        "seq",
        "prev",
        "hash",
        "id",
        "time",
        "host",
        "type",
        "session_id",
        "ocsf",
    ];
    let mut s = kind.to_string();
    for (k, val) in v.as_object().into_iter().flatten() {
        if !ENVELOPE.contains(&k.as_str()) {
            let _ = write!(s, " {k}={val}");
        }
    }
    s
}

/// The closing line of a replay when the session never ended in the log.
pub(crate) const NO_END: &str =
    "(no session_ended record: the session was still open when the log ends, or the daemon died)";

/// The time between two entries, for `--speed` pacing.
pub(crate) fn gap(prev: &Entry, next: &Entry) -> Duration {
    match (prev.at, next.at) {
        (Some(a), Some(b)) => b.duration_since(a).unwrap_or_default(),
        _ => Duration::ZERO,
    }
}

fn who(r: &Recording) -> String {
    let Some(i) = r.identity() else {
        return "-".to_string();
    };
    let mut s = format!(
        "{} pid {} {}",
        text(i, &["process", "user"]).unwrap_or("?"),
        i.pointer("/process/pid")
            .map_or("?".to_string(), Value::to_string),
        text(i, &["process", "exe"])
            .or_else(|| text(i, &["comm"]))
            .unwrap_or("?"),
    );
    let ids = i.pointer("/process/ci").and_then(Value::as_object);
    for (k, v) in ids
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.ends_with("_ID"))
    {
        let _ = write!(s, " {k}={}", v.as_str().unwrap_or_default());
    }
    s
}

fn dest(r: &Recording) -> String {
    r.identity()
        .and_then(|i| text(i, &["original_destination"]))
        .unwrap_or("-")
        .to_string()
}

fn argv(v: Option<&Value>) -> String {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn bytes(n: u64) -> String {
    format!("{n} B")
}

fn seconds(ms: u64) -> String {
    format!("{:.3}s", Duration::from_millis(ms).as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::recording::tests::session;

    fn rec() -> Recording {
        let mut log = session("0190aaaa-1", 1, &["psql", "-c", "x"], "alice");
        log.insert(
            1,
            json!({"type": "statement", "session_id": "0190aaaa-1", "seq": 5,
            "time": "2026-01-02T03:00:01.500Z", "target": "db", "text": "select 1",
            "classes": ["read"], "decision": {"action": "allowed", "rule": null},
            "rows": 1, "duration_ms": 3, "ocsf": {}}),
        );
        Recording::collect(log).remove(0)
    }

    #[test]
    fn list_line_names_everything() {
        let l = list_line(&rec());
        for want in [
            "0190aaaa-1",
            "2026-01-02T03:00:01.000Z",
            "1.250s",
            "db",
            "127.0.0.2:5432",
            "closed",
            "12 B/345 B",
            "alice pid 10 /usr/bin/psql GITHUB_RUN_ID=4242",
        ] {
            assert!(l.contains(want), "{want} in {l}");
        }
        let j = list_json(&rec());
        assert_eq!(j["bytes_server_to_client"], 345);
        assert_eq!(j["argv"][1], "-c");
    }

    #[test]
    fn replay_is_timed_from_the_start_and_keeps_later_entries() {
        let r = rec();
        let lines: Vec<String> = r.entries().iter().map(|e| replay_line(&r, e)).collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].contains("+0.000s  session started by alice pid 10"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains("+0.500s  statement: select 1 -> 1 row in 0.003s (allowed)"),
            "{}",
            lines[1]
        );
        assert!(!lines[1].contains("ocsf"), "{}", lines[1]);
        assert!(
            lines[2].contains("+1.250s  session ended closed, 12 B up / 345 B down after 1.250s"),
            "{}",
            lines[2]
        );
        assert_eq!(
            gap(&r.entries()[0], &r.entries()[1]),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn show_has_identity_and_ancestry() {
        let s = show(&rec());
        for want in [
            "session      0190aaaa-1",
            "argv         psql -c x",
            "user         alice (uid 1000, gid 1000)",
            "ci           GITHUB_RUN_ID=4242",
            "ancestor     1 /bin/sh sh -c x",
            "cgroup       /ci.slice/job-1 (id 7)",
            "records      3 (audit seq 1, 5, 2)",
        ] {
            assert!(s.contains(want), "{want} in\n{s}");
        }
        assert!(!s.contains("client leg"), "{s}");
        let mut log = session("0190aaaa-2", 1, &["psql"], "alice");
        log[0]["client_leg"] = json!("plain");
        log[0]["client_tls_unavailable"] = json!("no certificate");
        let s = show(&Recording::collect(log).remove(0));
        assert!(
            s.contains("client leg   plain (TLS refused: no certificate)"),
            "{s}"
        );
    }
}
