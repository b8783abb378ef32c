//! Choosing sessions: `--since`, `--identity`, `--target` for `sessions
//! list`, and finding one session by full id or unique prefix.

use std::{path::Path, time::SystemTime};

use serde_json::Value;

use super::{error::SessionsError, recording::Recording};

/// Which sessions `sessions list` shows; every given criterion must hold.
#[derive(Debug, Default)]
pub struct Filter {
    since: Option<SystemTime>,
    identity: Option<String>,
    target: Option<String>,
}

impl Filter {
    /// A filter from the command-line values, `since` relative to `now`.
    ///
    /// # Errors
    /// [`SessionsError::Since`] when `since` is neither a time nor a duration.
    pub fn new(
        since: Option<&str>,
        identity: Option<String>,
        target: Option<String>,
        now: SystemTime,
    ) -> Result<Filter, SessionsError> {
        Ok(Filter {
            since: since.map(|s| parse_since(s, now)).transpose()?,
            identity,
            target,
        })
    }

    /// Whether `r` passes. A session whose start time is unknown fails
    /// `--since`; one without a `session_started` record fails `--identity`.
    pub fn matches(&self, r: &Recording) -> bool {
        let since = self
            .since
            .is_none_or(|since| r.start().is_some_and(|t| t >= since));
        let target = self
            .target
            .as_deref()
            .is_none_or(|want| r.target() == Some(want));
        let identity = self
            .identity
            .as_deref()
            .is_none_or(|needle| r.identity().is_some_and(|i| identity_has(i, needle)));
        since && target && identity
    }
}

/// `--since`: an RFC 3339 UTC time, or a duration back from `now` (`1h`, `90s`).
///
/// # Errors
/// [`SessionsError::Since`] for anything else.
pub fn parse_since(s: &str, now: SystemTime) -> Result<SystemTime, SessionsError> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    humantime::parse_duration(s)
        .ok()
        .and_then(|d| now.checked_sub(d))
        .ok_or_else(|| SessionsError::Since(s.to_string()))
}

/// Whether `needle` is a substring of the process's exe, an argv element
/// (or the whole command line), the user, a CI value, the cgroup path, or
/// the verified job token's subject or issuer.
fn identity_has(identity: &Value, needle: &str) -> bool {
    let verified = identity
        .get("job_token")
        .filter(|j| j.get("error").is_none());
    let in_token = ["sub", "iss", "issuer"].iter().any(|k| {
        verified
            .and_then(|j| j.get(*k))
            .and_then(Value::as_str)
            .is_some_and(|s| s.contains(needle))
    });
    if in_token {
        return true;
    }
    let Some(p) = identity.get("process") else {
        return false;
    };
    let strings = |key: &str| -> Vec<&str> {
        match p.get(key) {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            Some(Value::Object(o)) => o.values().filter_map(Value::as_str).collect(),
            Some(Value::String(s)) => vec![s.as_str()],
            _ => Vec::new(),
        }
    };
    let argv = strings("argv");
    let in_fields = ["exe", "user", "cgroup", "ci", "argv"]
        .iter()
        .flat_map(|k| strings(k))
        .any(|s| s.contains(needle));
    in_fields || argv.join(" ").contains(needle)
}

/// The session whose id is `id` or, failing that, starts with `id`.
///
/// # Errors
/// [`SessionsError::Unknown`] if none matches, [`SessionsError::Ambiguous`]
/// if several start with `id`.
pub fn find<'a>(
    recs: &'a [Recording],
    id: &str,
    dir: &Path,
) -> Result<&'a Recording, SessionsError> {
    if let Some(r) = recs.iter().find(|r| r.id() == id) {
        return Ok(r);
    }
    let hits: Vec<&Recording> = recs.iter().filter(|r| r.id().starts_with(id)).collect();
    match hits.as_slice() {
        [one] => Ok(one),
        [] => Err(SessionsError::Unknown {
            id: id.to_string(),
            dir: dir.to_path_buf(),
        }),
        many => Err(SessionsError::Ambiguous {
            prefix: id.to_string(),
            count: many.len(),
            examples: many
                .iter()
                .take(3)
                .map(|r| r.id())
                .chain((many.len() > 3).then_some("..."))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sessions::recording::tests::session;

    fn recs() -> Vec<Recording> {
        let mut log = session("0190aaaa-1", 1, &["psql", "-c", "select marker-a"], "alice");
        log.extend(session("0190aaab-2", 30, &["pg_dump", "prod"], "bob"));
        Recording::collect(log)
    }

    fn ids(f: &Filter) -> Vec<String> {
        recs()
            .iter()
            .filter(|r| f.matches(r))
            .map(|r| r.id().to_string())
            .collect()
    }

    #[test]
    fn identity_matches_substrings_of_exe_argv_user_ci_cgroup() {
        let f = |s: &str| Filter::new(None, Some(s.into()), None, SystemTime::now()).unwrap();
        assert_eq!(ids(&f("marker-a")), ["0190aaaa-1"]);
        assert_eq!(ids(&f("-c select")), ["0190aaaa-1"], "whole command line");
        assert_eq!(ids(&f("bob")), ["0190aaab-2"]);
        assert_eq!(ids(&f("pg_dump")), ["0190aaab-2"]);
        assert_eq!(ids(&f("4242")).len(), 2, "CI values");
        assert_eq!(ids(&f("job-1")).len(), 2, "cgroup");
        assert_eq!(ids(&f("/usr/bin/psql")).len(), 2, "exe");
        assert!(ids(&f("nobody")).is_empty());
    }

    #[test]
    fn target_and_since() {
        let now = humantime::parse_rfc3339("2026-01-02T03:01:00Z").unwrap();
        let f = Filter::new(None, None, Some("db".into()), now).unwrap();
        assert_eq!(ids(&f).len(), 2);
        let f = Filter::new(None, None, Some("other".into()), now).unwrap();
        assert!(ids(&f).is_empty());
        let f = Filter::new(Some("45s"), None, None, now).unwrap();
        assert_eq!(ids(&f), ["0190aaab-2"], "started 03:00:30, since 03:00:15");
        let f = Filter::new(Some("2026-01-02T03:00:00Z"), None, None, now).unwrap();
        assert_eq!(ids(&f).len(), 2);
    }

    #[test]
    fn since_parses_times_and_durations() {
        let now = humantime::parse_rfc3339("2026-01-02T03:00:00Z").unwrap();
        assert_eq!(
            parse_since("1h", now).unwrap(),
            now - Duration::from_secs(3600)
        );
        assert_eq!(
            parse_since("2026-01-01T00:00:00Z", now).unwrap(),
            humantime::parse_rfc3339("2026-01-01T00:00:00Z").unwrap()
        );
        for bad in ["yesterday", "", "1 fortnight"] {
            let e = parse_since(bad, now).unwrap_err().to_string();
            assert!(e.contains("RFC 3339"), "{e}");
        }
    }

    #[test]
    fn find_by_full_id_or_unique_prefix() {
        let r = recs();
        let dir = Path::new("/state");
        assert_eq!(find(&r, "0190aaab-2", dir).unwrap().id(), "0190aaab-2");
        assert_eq!(find(&r, "0190aaaa", dir).unwrap().id(), "0190aaaa-1");
        let e = find(&r, "0190", dir).unwrap_err().to_string();
        assert!(e.contains("matches 2 sessions"), "{e}");
        let e = find(&r, "ffff", dir).unwrap_err().to_string();
        assert!(e.contains("no session `ffff`"), "{e}");
    }
}
