//! Terminal recordings (asciicast v2 files the SSH proxy writes as
//! `<state dir>/recordings/<session id>-<channel>.cast`): found for a
//! session, checked against the size and SHA-256 the audit trail recorded
//! for them (the trail's own hash chain is `interlock audit verify`'s), and
//! played back, output only, optionally in real time.

use std::{
    io::{Read as _, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::{error::SessionsError, recording::Recording};

/// A session's terminal recording and what the audit trail says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cast {
    /// Where the file is (or was expected) under the state directory.
    pub(crate) path: PathBuf,
    /// The size and digest the trail recorded; `None` for a file the trail
    /// names nowhere (its session was still open, or the daemon died).
    pub(crate) recorded: Option<Recorded>,
}

/// A `recording` object of a `command` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recorded {
    pub(crate) bytes: u64,
    pub(crate) sha256: String,
    /// The record's audit seq.
    pub(crate) seq: Option<u64>,
}

/// How a recording compares with the trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Integrity {
    /// Size and SHA-256 are those recorded.
    Verified,
    /// The file changed after the trail recorded it.
    Differs { bytes: u64, sha256: String },
    /// The trail names it, but it is gone.
    Missing,
    /// No digest in the trail to check it against.
    Unrecorded,
}

/// The session's recordings: those its `command` records name, in log
/// order, then files of the session the trail names nowhere.
pub(crate) fn casts(state_dir: &Path, r: &Recording) -> Vec<Cast> {
    let dir = state_dir.join("recordings");
    let mut out: Vec<Cast> = Vec::new();
    for e in r.entries() {
        let Some(rec) = e.record.get("recording") else {
            continue;
        };
        let (Some(path), Some(bytes), Some(sha256)) = (
            rec.get("path").and_then(Value::as_str),
            rec.get("bytes").and_then(Value::as_u64),
            rec.get("sha256").and_then(Value::as_str),
        ) else {
            continue;
        };
        // The state directory may have been copied elsewhere for the
        // investigation: look beside the log first.
        let recorded_path = Path::new(path);
        let local = recorded_path.file_name().map(|n| dir.join(n));
        let path = match local {
            Some(p) if p.exists() || !recorded_path.exists() => p,
            _ => recorded_path.to_path_buf(),
        };
        out.push(Cast {
            path,
            recorded: Some(Recorded {
                bytes,
                sha256: sha256.to_string(),
                seq: e.record.get("seq").and_then(Value::as_u64),
            }),
        });
    }
    let prefix = format!("{}-", r.id());
    let mut loose: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().is_some_and(|x| x == "cast")
                        && p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with(&prefix))
                })
                .collect()
        })
        .unwrap_or_default();
    loose.sort();
    for path in loose {
        let known = out.iter().any(|c| c.path.file_name() == path.file_name());
        if !known {
            out.push(Cast {
                path,
                recorded: None,
            });
        }
    }
    out
}

/// Compares `cast` with what the trail recorded.
///
/// # Errors
/// The file exists but cannot be read.
pub(crate) fn check(cast: &Cast) -> Result<Integrity, SessionsError> {
    let Some(recorded) = &cast.recorded else {
        return Ok(Integrity::Unrecorded);
    };
    let mut file = match std::fs::File::open(&cast.path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Integrity::Missing),
        Err(source) => {
            return Err(SessionsError::Recording {
                path: cast.path.clone(),
                source,
            });
        }
    };
    let (mut digest, mut bytes, mut buf) = (Sha256::new(), 0u64, vec![0u8; 64 * 1024]);
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|source| SessionsError::Recording {
                path: cast.path.clone(),
                source,
            })?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
            break;
        };
        digest.update(chunk);
        bytes += n as u64;
    }
    let sha256 = hex::encode(digest.finalize());
    Ok(if sha256 == recorded.sha256 && bytes == recorded.bytes {
        Integrity::Verified
    } else {
        Integrity::Differs { bytes, sha256 }
    })
}

/// One line on `cast` and how it compares with the trail.
pub(crate) fn describe(cast: &Cast, integrity: &Integrity) -> String {
    let path = cast.path.display();
    let seq = cast
        .recorded
        .as_ref()
        .and_then(|r| r.seq)
        .map_or("?".to_string(), |s| s.to_string());
    match (integrity, &cast.recorded) {
        (Integrity::Verified, Some(r)) => format!(
            "{path}: {} B, sha256 {} as recorded (audit seq {seq})",
            r.bytes, r.sha256
        ),
        (Integrity::Differs { bytes, sha256 }, Some(r)) => format!(
            "WARNING: {path} does not match the audit trail: it is {bytes} B with sha256 {sha256}, the trail recorded {} B with sha256 {} (audit seq {seq}); it was changed after the session",
            r.bytes, r.sha256
        ),
        (Integrity::Missing, _) => {
            format!("WARNING: {path} is missing; the audit trail recorded it (audit seq {seq})")
        }
        _ => format!(
            "{path}: not in the audit trail (the session was still open, or the daemon died): unverified"
        ),
    }
}

/// The error for a recording that failed its check, if it did.
pub(crate) fn failure(cast: &Cast, integrity: &Integrity) -> Option<SessionsError> {
    match integrity {
        Integrity::Differs { .. } | Integrity::Missing => Some(SessionsError::RecordingChanged {
            path: cast.path.clone(),
            missing: *integrity == Integrity::Missing,
        }),
        Integrity::Verified | Integrity::Unrecorded => None,
    }
}

/// Writes the output of the asciicast at `path` to `out`; with `speed`,
/// paced like the original divided by it. Malformed lines are skipped (a
/// recording cut by a crash still plays up to its last whole event).
/// Unless `raw`, the output is plain text: the recorded program's escape
/// sequences are removed and other control characters shown escaped, so
/// it cannot drive the reader's terminal (`crate::text::strip_terminal`).
///
/// # Errors
/// The file cannot be read; writing fails.
pub(crate) fn play(
    path: &Path,
    speed: Option<f64>,
    raw: bool,
    out: &mut dyn Write,
) -> Result<(), SessionsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SessionsError::Recording {
        path: path.to_owned(),
        source,
    })?;
    let mut last = 0.0f64;
    for line in text.lines().skip(1) {
        let Ok(Value::Array(ev)) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let (Some(t), Some("o"), Some(data)) = (
            ev.first().and_then(Value::as_f64),
            ev.get(1).and_then(Value::as_str),
            ev.get(2).and_then(Value::as_str),
        ) else {
            continue;
        };
        if let Some(s) = speed {
            let gap = ((t - last) / s).clamp(0.0, 5.0);
            std::thread::sleep(Duration::from_secs_f64(gap));
        }
        last = t;
        if raw {
            out.write_all(data.as_bytes())?;
        } else {
            out.write_all(crate::text::strip_terminal(data).as_bytes())?;
        }
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CAST: &str = "{\"version\":2,\"width\":80,\"height\":24}\n[0.1,\"o\",\"$ ls\\r\\n\"]\n[0.2,\"i\",\"x\"]\n[0.3,\"r\",\"100x30\"]\nnot json\n[0.4,\"o\",\"a b\\r\\n\"]\n[0.5,\"o\",\"cut";

    fn session(dir: &Path, id: &str, recorded: &Path, body: &[u8]) -> Recording {
        let record = json!({"type": "command", "session_id": id, "seq": 7, "time": "x",
            "recording": {"path": recorded, "bytes": body.len(),
                "sha256": hex::encode(Sha256::digest(body))}});
        let _ = dir;
        Recording::collect(vec![record]).remove(0)
    }

    #[test]
    fn plays_output_events_and_skips_the_rest() {
        let dir = crate::test_dir::TestDir::new("il-cast");
        std::fs::create_dir_all(dir.join("recordings")).unwrap();
        let p = dir.join("recordings/s1-0.cast");
        std::fs::write(&p, CAST).unwrap();
        let mut out = Vec::new();
        play(&p, None, true, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "$ ls\r\na b\r\n");
        let mut out = Vec::new();
        play(&p, None, false, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "$ ls\na b\n");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn recordings_are_checked_against_the_trail() {
        let dir = crate::test_dir::TestDir::new("il-cast-check");
        std::fs::create_dir_all(dir.join("recordings")).unwrap();
        let p = dir.join("recordings/s1-0.cast");
        std::fs::write(&p, CAST).unwrap();
        std::fs::write(dir.join("recordings/s1-1.cast"), "{}\n").unwrap();
        std::fs::write(dir.join("recordings/s2-0.cast"), "{}\n").unwrap();
        // Recorded under another state directory: found beside this log.
        let r = session(
            &dir,
            "s1",
            Path::new("/elsewhere/recordings/s1-0.cast"),
            CAST.as_bytes(),
        );
        let found = casts(&dir, &r);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].path, p);
        assert_eq!(found[0].recorded.as_ref().unwrap().seq, Some(7));
        assert_eq!(check(&found[0]).unwrap(), Integrity::Verified);
        assert!(describe(&found[0], &Integrity::Verified).contains("as recorded (audit seq 7)"));
        assert_eq!(found[1].recorded, None);
        assert_eq!(check(&found[1]).unwrap(), Integrity::Unrecorded);
        assert!(failure(&found[1], &Integrity::Unrecorded).is_none());

        std::fs::write(&p, CAST.replace("ls", "rm")).unwrap();
        let changed = check(&found[0]).unwrap();
        assert!(matches!(changed, Integrity::Differs { .. }), "{changed:?}");
        let line = describe(&found[0], &changed);
        assert!(
            line.starts_with("WARNING: ") && line.contains("changed after"),
            "{line}"
        );
        assert!(failure(&found[0], &changed).is_some());

        std::fs::remove_file(&p).unwrap();
        assert_eq!(check(&found[0]).unwrap(), Integrity::Missing);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
