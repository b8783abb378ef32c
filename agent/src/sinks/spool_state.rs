//! The persisted counters of a spool: `<spool dir>/state`, one line
//! `acked=N delivered=N dropped=N reported=N seq=N`, replaced atomically
//! (write beside, rename). One file, so the acked offset and the drop
//! count it implies can never disagree after a crash: a drop is counted in
//! the same write that skips the dropped events.
//!
//! Spools of older versions have only `acked` (the offset alone); it is
//! read once and superseded.

use std::path::Path;

use super::SinkError;

pub(super) const STATE: &str = "state";
/// The offset-only file of older versions.
pub(super) const LEGACY_ACKED: &str = "acked";

/// What a spool keeps across restarts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct State {
    /// Logical offset up to which events were delivered or dropped.
    pub(super) acked: u64,
    /// Events delivered since the spool was made.
    pub(super) delivered: u64,
    /// Events dropped on overflow since the spool was made.
    pub(super) dropped: u64,
    /// Of `dropped`, how many a `webhook_spool_overflow` event reported.
    pub(super) reported: u64,
    /// Audit seq of the newest event handed to the spool when this was
    /// written (the queue's last line may be newer).
    pub(super) seq: u64,
}

impl State {
    /// Reads the state of `dir` and whether its state file exists (false:
    /// a new spool, or one of an older version, whose `acked` offset is
    /// then taken over).
    ///
    /// # Errors
    /// A file exists but cannot be read.
    pub(super) fn read(dir: &Path) -> Result<(State, bool), SinkError> {
        let path = dir.join(STATE);
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok((State::parse(&text), true)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SinkError::spool(&path)(e)),
        }
        let legacy = dir.join(LEGACY_ACKED);
        let acked = match std::fs::read_to_string(&legacy) {
            Ok(s) => s.trim().parse::<u64>().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(SinkError::spool(&legacy)(e)),
        };
        Ok((
            State {
                acked,
                ..State::default()
            },
            false,
        ))
    }

    /// Unknown keys and bad numbers are skipped: a value read as 0 can
    /// only make the spool deliver or report again, never skip.
    fn parse(text: &str) -> State {
        let mut s = State::default();
        for (k, v) in text.split_whitespace().filter_map(|t| t.split_once('=')) {
            let Ok(n) = v.parse::<u64>() else { continue };
            match k {
                "acked" => s.acked = n,
                "delivered" => s.delivered = n,
                "dropped" => s.dropped = n,
                "reported" => s.reported = n,
                "seq" => s.seq = n,
                _ => {}
            }
        }
        s.reported = s.reported.min(s.dropped);
        s
    }

    /// Writes the state of `dir` (without fsync: after a crash an event may
    /// be delivered or an overflow reported again, never skipped).
    ///
    /// # Errors
    /// The file cannot be written or renamed into place.
    pub(super) fn write(&self, dir: &Path) -> Result<(), SinkError> {
        let tmp = dir.join("state.tmp");
        let text = format!(
            "acked={} delivered={} dropped={} reported={} seq={}\n",
            self.acked, self.delivered, self.dropped, self.reported, self.seq
        );
        crate::state_dir::write_private(&tmp, text.as_bytes()).map_err(SinkError::spool(&tmp))?;
        std::fs::rename(&tmp, dir.join(STATE)).map_err(SinkError::spool(&tmp))
    }

    /// Replaces an older version's `acked` file by the state file (so a
    /// stale offset never wins later); nothing when there is none.
    ///
    /// # Errors
    /// The state cannot be written.
    pub(super) fn supersede_legacy(&self, dir: &Path) -> Result<(), SinkError> {
        let legacy = dir.join(LEGACY_ACKED);
        if legacy.exists() {
            self.write(dir)?;
            let _ = std::fs::remove_file(legacy);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_the_legacy_offset() {
        let d = crate::test_dir::TestDir::new("il-spool-state");
        assert_eq!(State::read(&d).unwrap(), (State::default(), false));
        std::fs::write(d.join(LEGACY_ACKED), "120\n").unwrap();
        let (s, current) = State::read(&d).unwrap();
        assert_eq!((s.acked, current), (120, false));
        let s = State {
            acked: 7,
            delivered: 3,
            dropped: 5,
            reported: 4,
            seq: 99,
        };
        s.supersede_legacy(&d).unwrap();
        assert!(!d.join(LEGACY_ACKED).exists());
        assert_eq!(State::read(&d).unwrap(), (s, true));
        assert_eq!(
            State::parse("acked=x dropped=2 reported=9 junk"),
            State {
                dropped: 2,
                reported: 2,
                ..State::default()
            }
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
