//! `interlock audit verify`: checks a log directory offline and names the
//! first bad record. Pure over the files: it reads, never writes.

use std::{
    ops::ControlFlow,
    path::{Path, PathBuf},
};

use ed25519_dalek::VerifyingKey;

use super::report::{Problem, Report, Tamper};
use super::{
    LogError, key,
    record::{self, CHECKPOINT_FILE, CheckpointFile, LineError, Parsed},
    segment,
    writer::AUDIT_DIR,
};

/// The public key of the host key in `state_dir` (or an audit directory), hex.
///
/// # Errors
/// The key file is missing, unreadable or open to others.
pub fn public_key(state_dir: &Path) -> Result<String, LogError> {
    Ok(key::HostKey::load(&audit_dir(state_dir).join(key::KEY_FILE))?.public_hex())
}

fn audit_dir(dir: &Path) -> PathBuf {
    let sub = dir.join(AUDIT_DIR);
    if sub.is_dir() { sub } else { dir.to_path_buf() }
}

/// Checks every record's hash, every `prev` link, seq continuity, every
/// checkpoint signature (against `pubkey`, else the host key file in the
/// directory) and the latest checkpoint file. `dir` is a state directory or
/// its `audit` directory. Damage is reported in [`Report::problem`].
///
/// # Errors
/// No usable key, or a file cannot be read.
pub fn verify(dir: &Path, pubkey: Option<&str>) -> Result<Report, LogError> {
    let dir = audit_dir(dir);
    let (trusted, key_source) = match pubkey {
        Some(k) => (key::parse_public(k)?, "--pubkey".to_string()),
        None => {
            let path = dir.join(key::KEY_FILE);
            let k = key::HostKey::load(&path)?;
            (
                k.public(),
                format!(
                    "{} beside the log; pass --pubkey to check against a key kept elsewhere",
                    path.display()
                ),
            )
        }
    };
    let segments = segment::list(&dir).map_err(LogError::io(&dir))?;
    let mut report = Report {
        segments: segments.len(),
        key: hex::encode(trusted.as_bytes()),
        key_source,
        ..Report::default()
    };
    let latest = CheckpointFile::read(&dir);
    let mut walk = Walk {
        segments: &segments,
        trusted: &trusted,
        exp_seq: 1,
        exp_prev: record::ZERO_HASH.to_string(),
        before: None,
        last_cp_seq: 0,
        end: (segments.last().map(|(n, _)| segment::name(*n)), 0),
        latest_seq: latest.as_ref().ok().and_then(|c| c.as_ref()).map(|c| c.seq),
        latest_found: None,
    };
    for (i, (n, path)) in segments.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(LogError::io(path))?;
        let (lines, partial) = segment::lines(&bytes);
        let name = segment::name(*n);
        for (line_no, line) in lines {
            if let Some(p) = walk.step(&mut report, i, &name, line_no, line)? {
                report.problem = Some(p);
                return Ok(report);
            }
        }
        if let Some(partial) = partial {
            if i + 1 == segments.len() {
                report.partial = Some((name, partial.len()));
            } else {
                report.problem = Some(Problem {
                    kind: Tamper::Edited,
                    file: name,
                    line: segment::lines(&bytes).0.len() + 1,
                    seq: None,
                    detail: "incomplete line at the end of a segment that is not the last".into(),
                });
                return Ok(report);
            }
        }
    }
    report.unsealed = report.last_seq - walk.last_cp_seq;
    report.problem = walk.check_latest(latest, &report);
    Ok(report)
}

struct Walk<'a> {
    segments: &'a [(u32, PathBuf)],
    trusted: &'a VerifyingKey,
    exp_seq: u64,
    exp_prev: String,
    /// The good record before the current one: file, line, parsed.
    before: Option<(String, usize, Parsed)>,
    last_cp_seq: u64,
    /// File and line of the last record.
    end: (Option<String>, usize),
    latest_seq: Option<u64>,
    /// Position and hash of the record `latest_seq` names.
    latest_found: Option<(String, usize, String)>,
}

impl Walk<'_> {
    fn step(
        &mut self,
        report: &mut Report,
        seg_i: usize,
        file: &str,
        line_no: usize,
        line: &[u8],
    ) -> Result<Option<Problem>, LogError> {
        let problem = |kind, seq, detail: String| Problem {
            kind,
            file: file.to_string(),
            line: line_no,
            seq,
            detail,
        };
        let r = match record::parse(line) {
            Ok(r) => r,
            Err(LineError::Malformed) => {
                return Ok(Some(problem(
                    Tamper::Edited,
                    None,
                    "not a well-formed record".into(),
                )));
            }
            Err(LineError::HashMismatch(seq)) => {
                return Ok(Some(problem(
                    Tamper::Edited,
                    Some(seq),
                    "its content does not match its hash".into(),
                )));
            }
        };
        if r.seq != self.exp_seq || r.prev != self.exp_prev {
            return self.classify(seg_i, file, line_no, r).map(Some);
        }
        if r.kind == record::CHECKPOINT {
            let Some(cp) = r.checkpoint() else {
                return Ok(Some(problem(
                    Tamper::Edited,
                    Some(r.seq),
                    "checkpoint without its fields".into(),
                )));
            };
            if cp.covers_seq + 1 != r.seq || cp.covers_hash != r.prev {
                return Ok(Some(problem(
                    Tamper::BadSignature,
                    Some(r.seq),
                    format!(
                        "checkpoint claims to cover seq {}, not the record before it",
                        cp.covers_seq
                    ),
                )));
            }
            let msg = record::checkpoint_message(cp.covers_seq, &cp.covers_hash, &r.time);
            if !key::verify_signature(self.trusted, &msg, &cp.signature) {
                return Ok(Some(problem(
                    Tamper::BadSignature,
                    Some(r.seq),
                    format!(
                        "checkpoint signature does not verify (record names key {})",
                        cp.key
                    ),
                )));
            }
            report.checkpoints += 1;
            self.last_cp_seq = r.seq;
        }
        if Some(r.seq) == self.latest_seq {
            self.latest_found = Some((file.to_string(), line_no, r.hash.clone()));
        }
        report.records += 1;
        report.last_seq = r.seq;
        self.exp_seq = r.seq + 1;
        self.exp_prev = r.hash.clone();
        self.end = (Some(file.to_string()), line_no);
        self.before = Some((file.to_string(), line_no, r));
        Ok(None)
    }

    /// Names the damage at `r`, which does not follow the record before it.
    fn classify(
        &self,
        seg_i: usize,
        file: &str,
        line_no: usize,
        r: Parsed,
    ) -> Result<Problem, LogError> {
        let exp = self.exp_seq;
        let at = |kind, detail: String| Problem {
            kind,
            file: file.to_string(),
            line: line_no,
            seq: Some(r.seq),
            detail,
        };
        if r.seq == exp {
            return Ok(at(
                Tamper::Inserted,
                "it does not chain to the record before it (prev differs): one of the two is not part of the chain".into(),
            ));
        }
        if r.seq > exp {
            if self.scan_after(seg_i, line_no, |x| x.seq == exp)? {
                return Ok(at(
                    Tamper::Reordered,
                    format!(
                        "seq {} stands where seq {exp} belongs; seq {exp} comes later",
                        r.seq
                    ),
                ));
            }
            if r.prev == self.exp_prev {
                return Ok(at(
                    Tamper::Inserted,
                    format!("it chains to seq {} but claims seq {}", exp - 1, r.seq),
                ));
            }
            let missing = if r.seq - 1 == exp {
                format!("seq {exp} is missing before it")
            } else {
                format!("seq {exp}..{} are missing before it", r.seq - 1)
            };
            return Ok(at(Tamper::Deleted, missing));
        }
        if let Some((bfile, bline, b)) = &self.before
            && b.seq == r.seq
            && b.hash != r.hash
            && self.scan_after(seg_i, line_no, |x| x.prev == r.hash)?
        {
            return Ok(Problem {
                kind: Tamper::Inserted,
                file: bfile.clone(),
                line: *bline,
                seq: Some(b.seq),
                detail: format!(
                    "a second record with seq {} follows it, and the chain continues from that one",
                    b.seq
                ),
            });
        }
        let what = if r.hash == self.exp_prev {
            "a copy of the record before it".to_string()
        } else {
            format!("seq {} repeats or goes back (seq {exp} expected)", r.seq)
        };
        Ok(at(Tamper::Inserted, what))
    }

    /// Whether a good record after `(seg_i, line_no)` satisfies `pred`.
    fn scan_after(
        &self,
        seg_i: usize,
        line_no: usize,
        mut pred: impl FnMut(&Parsed) -> bool,
    ) -> Result<bool, LogError> {
        for (i, (_, path)) in self.segments.iter().enumerate().skip(seg_i) {
            let bytes = std::fs::read(path).map_err(LogError::io(path))?;
            let found = segment::lines(&bytes)
                .0
                .into_iter()
                .try_for_each(|(n, line)| {
                    if i == seg_i && n <= line_no {
                        return ControlFlow::Continue(());
                    }
                    match record::parse(line) {
                        Ok(x) if pred(&x) => ControlFlow::Break(()),
                        _ => ControlFlow::Continue(()),
                    }
                });
            if found.is_break() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Checks `checkpoint.json` against the records: a checkpoint beyond
    /// the end means records were cut away.
    fn check_latest(
        &self,
        latest: Result<Option<CheckpointFile>, String>,
        report: &Report,
    ) -> Option<Problem> {
        let at_file = |kind, detail: String| Problem {
            kind,
            file: CHECKPOINT_FILE.into(),
            line: 1,
            seq: None,
            detail,
        };
        let c = match latest {
            Err(e) => return Some(at_file(Tamper::Edited, e)),
            Ok(None) if report.checkpoints > 0 => {
                return Some(at_file(
                    Tamper::Truncated,
                    "the log has checkpoints but checkpoint.json is missing: records behind the last checkpoint cannot be accounted for".into(),
                ));
            }
            Ok(None) => return None,
            Ok(Some(c)) => c,
        };
        let msg =
            record::checkpoint_message(c.checkpoint.covers_seq, &c.checkpoint.covers_hash, &c.time);
        if c.checkpoint.covers_seq + 1 != c.seq
            || !key::verify_signature(self.trusted, &msg, &c.checkpoint.signature)
        {
            return Some(at_file(
                Tamper::BadSignature,
                "its signature does not verify".into(),
            ));
        }
        if c.seq > report.last_seq {
            let (file, line) = match &self.end {
                (Some(f), l) => (f.clone(), l + 1),
                (None, _) => (segment::name(1), 1),
            };
            return Some(Problem {
                kind: Tamper::Truncated,
                file,
                line,
                seq: Some(report.last_seq + 1),
                detail: format!(
                    "the log ends at seq {} but its latest checkpoint (checkpoint.json, in {}) is seq {}",
                    report.last_seq, c.segment, c.seq
                ),
            });
        }
        match &self.latest_found {
            Some((_, _, hash)) if *hash == c.hash => None,
            Some((file, line, _)) => Some(Problem {
                kind: Tamper::Edited,
                file: file.clone(),
                line: *line,
                seq: Some(c.seq),
                detail: "it is not the checkpoint record checkpoint.json signed".into(),
            }),
            None => Some(at_file(
                Tamper::Edited,
                format!("record seq {} not found", c.seq),
            )),
        }
    }
}
