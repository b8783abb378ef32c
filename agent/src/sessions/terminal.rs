//! Terminal recordings (asciicast v2 files the SSH proxy writes as
//! `<state dir>/recordings/<session id>-<channel>.cast`): found for a
//! session and played back, output only, optionally in real time.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;

use super::error::SessionsError;

/// The session's .cast files, in channel order.
pub(crate) fn casts(state_dir: &Path, session_id: &str) -> Vec<PathBuf> {
    let dir = state_dir.join("recordings");
    let prefix = format!("{session_id}-");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
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
    found.sort();
    found
}

/// Writes the output of the asciicast at `path` to `out`; with `speed`,
/// paced like the original divided by it. Malformed lines are skipped (a
/// recording cut by a crash still plays up to its last whole event).
///
/// # Errors
/// The file cannot be read; writing fails.
pub(crate) fn play(
    path: &Path,
    speed: Option<f64>,
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
        out.write_all(data.as_bytes())?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plays_output_events_and_skips_the_rest() {
        let dir = std::env::temp_dir().join(format!("il-cast-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("recordings")).unwrap();
        let p = dir.join("recordings/s1-0.cast");
        std::fs::write(
            &p,
            "{\"version\":2,\"width\":80,\"height\":24}\n[0.1,\"o\",\"$ ls\\r\\n\"]\n[0.2,\"i\",\"x\"]\n[0.3,\"r\",\"100x30\"]\nnot json\n[0.4,\"o\",\"a b\\r\\n\"]\n[0.5,\"o\",\"cut",
        )
        .unwrap();
        std::fs::write(dir.join("recordings/s2-0.cast"), "{}\n").unwrap();
        assert_eq!(casts(&dir, "s1"), vec![p.clone()]);
        let mut out = Vec::new();
        play(&p, None, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "$ ls\r\na b\r\n");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
