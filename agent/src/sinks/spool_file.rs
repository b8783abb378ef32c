//! Reading a spool's queue file: its lines, the last one, and how many
//! lie in a range. Offsets are logical (see `spool`).

use std::{fs::File, os::unix::fs::FileExt as _};

use super::spool::Inner;

/// Bytes read at a time.
pub(super) const CHUNK: usize = 64 * 1024;

/// One queued event.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Line {
    pub(super) id: String,
    /// The audit seq, from the line (or, in lines of older versions, from
    /// the body's `seq` field).
    seq: Option<u64>,
    pub(super) body: Vec<u8>,
}

impl Line {
    /// Parses `<id>\t<seq>\t<body>` or the older `<id>\t<body>` (a body is
    /// a JSON object or array, so it never starts with a digit).
    pub(super) fn parse(line: &[u8]) -> Option<Line> {
        let tab = line.iter().position(|b| *b == b'\t')?;
        let id = String::from_utf8_lossy(line.get(..tab)?).into_owned();
        let rest = line.get(tab + 1..)?;
        if rest.first().is_some_and(u8::is_ascii_digit) {
            let tab = rest.iter().position(|b| *b == b'\t')?;
            let seq = std::str::from_utf8(rest.get(..tab)?).ok()?.parse().ok()?;
            return Some(Line {
                id,
                seq: Some(seq),
                body: rest.get(tab + 1..)?.to_vec(),
            });
        }
        let seq = serde_json::from_slice::<serde_json::Value>(rest)
            .ok()
            .and_then(|v| v.get("seq").and_then(serde_json::Value::as_u64));
        Some(Line {
            id,
            seq,
            body: rest.to_vec(),
        })
    }

    /// The event's audit seq, if the line says.
    pub(super) fn seq(&self) -> Option<u64> {
        self.seq
    }
}

/// The file's length up to and including its last newline.
pub(super) fn complete_len(file: &File) -> std::io::Result<u64> {
    let mut end = file.metadata()?.len();
    let mut buf = vec![0u8; CHUNK];
    while end > 0 {
        let n = usize::try_from(end).unwrap_or(CHUNK).min(CHUNK);
        let start = end - n as u64;
        let chunk = buf.get_mut(..n).unwrap_or_default();
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// The last whole line of the first `len` bytes of `file`, if any.
pub(super) fn last_line(file: &File, len: u64) -> std::io::Result<Option<Line>> {
    if len == 0 {
        return Ok(None);
    }
    // `len` ends with a newline: look for the one before it.
    let mut start = len - 1;
    let mut buf = vec![0u8; CHUNK];
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = usize::try_from(start).unwrap_or(CHUNK).min(CHUNK);
        let from = start - n as u64;
        let chunk = buf.get_mut(..n).unwrap_or_default();
        file.read_exact_at(chunk, from)?;
        match chunk.iter().rposition(|b| *b == b'\n') {
            Some(i) => {
                let mut line = chunk.get(i + 1..).unwrap_or_default().to_vec();
                line.extend_from_slice(&tail);
                return Ok(Line::parse(&line));
            }
            None if from == 0 => {
                let mut line = chunk.to_vec();
                line.extend_from_slice(&tail);
                return Ok(Line::parse(&line));
            }
            None => {
                let mut t = chunk.to_vec();
                t.extend_from_slice(&tail);
                tail = t;
                start = from;
            }
        }
    }
}

/// Newlines in the logical range `[from, to)`.
pub(super) fn count_lines(g: &Inner, from: u64, to: u64) -> std::io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let (mut pos, mut lines) = (from.max(g.base), 0u64);
    let to = to.min(g.base + g.len);
    while pos < to {
        let want = usize::try_from(to - pos).unwrap_or(CHUNK).min(CHUNK);
        let chunk = buf.get_mut(..want).unwrap_or_default();
        let n = g.file.read_at(chunk, pos - g.base)?;
        if n == 0 {
            break;
        }
        lines += chunk.iter().take(n).filter(|b| **b == b'\n').count() as u64;
        pos += n as u64;
    }
    Ok(lines)
}

/// The offset after the fewest whole lines from `from` covering `need`
/// bytes, and how many lines that is.
pub(super) fn skip_lines(g: &Inner, from: u64, need: u64) -> std::io::Result<(u64, u64)> {
    let end = g.base + g.len;
    let (mut pos, mut lines) = (from, 0u64);
    let mut buf = vec![0u8; CHUNK];
    let mut scan = from;
    while pos - from < need && scan < end {
        let n = g.file.read_at(&mut buf, scan - g.base)?;
        if n == 0 {
            break;
        }
        for (i, b) in buf.iter().take(n).enumerate() {
            if *b == b'\n' {
                pos = scan + i as u64 + 1;
                lines += 1;
                if pos - from >= need {
                    break;
                }
            }
        }
        scan += n as u64;
    }
    Ok((pos, lines))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_both_formats_parse() {
        assert_eq!(
            Line::parse(b"e1\t42\t{\"a\":1}"),
            Some(Line {
                id: "e1".into(),
                seq: Some(42),
                body: b"{\"a\":1}".to_vec()
            })
        );
        let old = Line::parse(b"e2\t{\"seq\":7,\"id\":\"e2\"}").unwrap();
        assert_eq!((old.id.as_str(), old.seq()), ("e2", Some(7)));
        assert_eq!(old.body, b"{\"seq\":7,\"id\":\"e2\"}");
        assert_eq!(Line::parse(b"e3\t[1]").unwrap().seq(), None);
        assert_eq!(Line::parse(b"no tab"), None);
    }

    #[test]
    fn the_last_line_is_found_across_chunks() {
        let d = crate::test_dir::TestDir::new("il-spool-file");
        let p = d.join("q");
        let long = "x".repeat(CHUNK + 10);
        std::fs::write(&p, format!("a\t1\t{{}}\nb\t2\t{{\"{long}\":1}}\n")).unwrap();
        let f = File::open(&p).unwrap();
        let len = complete_len(&f).unwrap();
        let last = last_line(&f, len).unwrap().unwrap();
        assert_eq!((last.id.as_str(), last.seq()), ("b", Some(2)));
        std::fs::write(&p, "only\t3\t{}\n").unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(last_line(&f, 10).unwrap().unwrap().seq(), Some(3));
        assert!(last_line(&f, 0).unwrap().is_none());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
