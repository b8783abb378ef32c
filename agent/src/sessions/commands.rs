//! The investigator commands over a state directory's audit log:
//! `sessions list`, `sessions show`, `replay`. Read-only.

use std::{io::Write, path::Path};

use super::{
    error::SessionsError,
    filter::{Filter, find},
    recording::Recording,
    render, terminal,
};
use crate::{
    audit,
    text::{escape_controls, json_for_terminal},
};

fn recordings(state_dir: &Path) -> Result<Vec<Recording>, SessionsError> {
    Ok(Recording::collect(audit::read_events(state_dir)?))
}

/// `interlock sessions list`: one line (or, with `json`, one JSON object)
/// per session that passes `filter`, oldest first.
///
/// # Errors
/// The log is missing, unreadable or damaged; `out` fails.
pub fn list(
    state_dir: &Path,
    filter: &Filter,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), SessionsError> {
    let recs = recordings(state_dir)?;
    if !json {
        writeln!(out, "{}", render::list_header())?;
    }
    for r in recs.iter().filter(|r| filter.matches(r)) {
        if json {
            writeln!(
                out,
                "{}",
                json_for_terminal(&render::list_json(r).to_string())
            )?;
        } else {
            writeln!(out, "{}", escape_controls(&render::list_line(r)))?;
        }
    }
    Ok(())
}

/// `interlock sessions show ID`: everything the log holds about one
/// session, `id` being a full id or a unique prefix.
///
/// # Errors
/// Unknown id, ambiguous prefix, a missing or damaged log; `out` fails;
/// [`SessionsError::RecordingChanged`] after printing everything when a
/// terminal recording does not match its digest in the trail.
pub fn show(state_dir: &Path, id: &str, out: &mut dyn Write) -> Result<(), SessionsError> {
    let recs = recordings(state_dir)?;
    let r = find(&recs, id, state_dir)?;
    write!(out, "{}", render::show(r))?;
    let mut failed = None;
    for cast in terminal::casts(state_dir, r) {
        let integrity = terminal::check(&cast)?;
        writeln!(
            out,
            "{:<13}{}",
            "recording",
            terminal::describe(&cast, &integrity)
        )?;
        failed = failed.or(terminal::failure(&cast, &integrity));
    }
    failed.map_or(Ok(()), Err)
}

/// `interlock replay ID`: the session's records as a transcript timed from
/// its start. With `speed`, entries are paced in real time divided by it
/// (2.0 = twice as fast); without, printed at once.
///
/// # Errors
/// As [`show`], and [`SessionsError::Speed`] for a speed that is not > 0.
/// A terminal recording that differs from the digest the audit trail
/// holds, or is gone, is [`SessionsError::RecordingChanged`] once the rest
/// was played (a changed one is still played, after a warning).
pub fn replay(
    state_dir: &Path,
    id: &str,
    speed: Option<f64>,
    raw: bool,
    out: &mut dyn Write,
) -> Result<(), SessionsError> {
    if let Some(s) = speed.filter(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(SessionsError::Speed(s));
    }
    let recs = recordings(state_dir)?;
    let r = find(&recs, id, state_dir)?;
    let mut prev = None;
    for e in r.entries() {
        if let (Some(speed), Some(prev)) = (speed, prev) {
            std::thread::sleep(render::gap(prev, e).div_f64(speed));
        }
        writeln!(out, "{}", escape_controls(&render::replay_line(r, e)))?;
        out.flush()?;
        prev = Some(e);
    }
    if r.ended().is_none() {
        writeln!(out, "{}", render::NO_END)?;
    }
    // SSH shells: play the terminal itself after the transcript, each
    // recording first checked against the digest the trail holds for it.
    let mut failed = None;
    for cast in terminal::casts(state_dir, r) {
        let integrity = terminal::check(&cast)?;
        let line = terminal::describe(&cast, &integrity);
        if let Some(e) = terminal::failure(&cast, &integrity) {
            writeln!(out, "{line}")?;
            failed = failed.or(Some(e));
            if integrity == terminal::Integrity::Missing {
                continue;
            }
        }
        writeln!(out, "--- terminal recording {line} ---")?;
        terminal::play(&cast.path, speed, raw, out)?;
        writeln!(out, "\n--- end of terminal recording ---")?;
    }
    failed.map_or(Ok(()), Err)
}
