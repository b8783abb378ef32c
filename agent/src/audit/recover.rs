//! Start-up recovery: find where the chain ends so the writer can continue
//! it. A partially written last line (the daemon died mid-write, so the
//! record never fully reached the file) is cut off here.

use std::path::Path;

use tracing::warn;

use super::{LogError, record, segment};

/// Where the chain on disk ends.
#[derive(Debug)]
pub(crate) struct Tail {
    /// Segment to append to and its size (after cutting a partial line).
    pub segment: Option<(u32, u64)>,
    /// Seq of the last record (0: no record yet).
    pub last_seq: u64,
    /// Hash of the last record ([`record::ZERO_HASH`] if none).
    pub last_hash: String,
    /// Seq of the last checkpoint record found in the tail (0: none found).
    pub last_checkpoint_seq: u64,
    /// Seq of the last event (not checkpoint) record found in the tail
    /// segment (0: none found).
    pub last_event_seq: u64,
    /// `(segment name, bytes)` of a partial last line that was cut off.
    pub dropped_partial: Option<(String, u64)>,
}

/// Reads the end of the chain in `dir`, cutting off a partial last line.
///
/// Only the last segment holding a record is read. Breaks inside it are
/// logged (`interlock audit verify` names them); the chain continues from
/// the last well-formed record either way.
///
/// # Errors
/// A segment cannot be read, or the partial line cannot be cut off.
pub(crate) fn recover(dir: &Path) -> Result<Tail, LogError> {
    let segments = segment::list(dir).map_err(LogError::io(dir))?;
    let mut tail = Tail {
        segment: None,
        last_seq: 0,
        last_hash: record::ZERO_HASH.to_string(),
        last_checkpoint_seq: 0,
        last_event_seq: 0,
        dropped_partial: None,
    };
    for (i, (n, path)) in segments.iter().enumerate().rev() {
        let mut bytes = std::fs::read(path).map_err(LogError::io(path))?;
        let is_last = i + 1 == segments.len();
        let partial_len = segment::lines(&bytes).1.map(<[u8]>::len).unwrap_or(0);
        if is_last && partial_len > 0 {
            let keep = bytes.len() - partial_len;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(LogError::io(path))?;
            f.set_len(keep as u64)
                .and_then(|()| f.sync_all())
                .map_err(LogError::io(path))?;
            warn!(
                segment = %path.display(),
                bytes = partial_len,
                "audit log: cut off a partially written last record (the daemon died while writing it)"
            );
            tail.dropped_partial = Some((segment::name(*n), partial_len as u64));
            bytes.truncate(keep);
        }
        if is_last {
            tail.segment = Some((*n, bytes.len() as u64));
        }
        let (lines, _) = segment::lines(&bytes);
        let mut last: Option<record::Parsed> = None;
        for (line_no, line) in lines {
            let r = match record::parse(line) {
                Ok(r) => r,
                Err(e) => {
                    warn!(segment = %path.display(), line = line_no, error = ?e,
                        "audit log: bad record; run `interlock audit verify`");
                    continue;
                }
            };
            if let Some(p) = &last
                && (r.seq != p.seq + 1 || r.prev != p.hash)
            {
                warn!(segment = %path.display(), line = line_no, seq = r.seq,
                    "audit log: chain broken; run `interlock audit verify`");
            }
            if r.kind == record::CHECKPOINT {
                tail.last_checkpoint_seq = r.seq;
            } else {
                tail.last_event_seq = r.seq;
            }
            last = Some(r);
        }
        if let Some(r) = last {
            tail.last_seq = r.seq;
            tail.last_hash = r.hash;
            break;
        }
    }
    Ok(tail)
}
