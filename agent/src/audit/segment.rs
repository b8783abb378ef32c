//! Segment files: `<audit dir>/segment-NNNNNN.jsonl`, numbered from 1.

use std::path::{Path, PathBuf};

const PREFIX: &str = "segment-";
const SUFFIX: &str = ".jsonl";

/// The file name of segment `n`.
pub(crate) fn name(n: u32) -> String {
    format!("{PREFIX}{n:06}{SUFFIX}")
}

/// Segments in `dir`, in order.
///
/// # Errors
/// The directory cannot be read (a missing directory is no segments).
pub(crate) fn list(dir: &Path) -> std::io::Result<Vec<(u32, PathBuf)>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(n) = file_name
            .to_str()
            .and_then(|s| s.strip_prefix(PREFIX))
            .and_then(|s| s.strip_suffix(SUFFIX))
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        out.push((n, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// Numbered lines (from 1) of a segment, without their newlines.
pub(crate) type Lines<'a> = Vec<(usize, &'a [u8])>;

/// Lines of a segment's bytes: `(line number from 1, bytes without '\n')`,
/// and the trailing bytes after the last newline, if any (a partial line).
pub(crate) fn lines(bytes: &[u8]) -> (Lines<'_>, Option<&[u8]>) {
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut n = 0;
    while let Some(i) = rest.iter().position(|b| *b == b'\n') {
        n += 1;
        let (line, after) = rest.split_at(i);
        out.push((n, line));
        rest = after.get(1..).unwrap_or_default();
    }
    (out, (!rest.is_empty()).then_some(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_partial_tail() {
        let (l, p) = lines(b"a\nbc\n");
        assert_eq!(l, vec![(1, &b"a"[..]), (2, &b"bc"[..])]);
        assert_eq!(p, None);
        let (l, p) = lines(b"a\nxy");
        assert_eq!(l.len(), 1);
        assert_eq!(p, Some(&b"xy"[..]));
    }

    #[test]
    fn names_sort_by_number() {
        assert_eq!(name(3), "segment-000003.jsonl");
        let dir = crate::test_dir::TestDir::new("seg");
        for n in [10, 2, 1] {
            std::fs::write(dir.join(name(n)), b"").unwrap();
        }
        std::fs::write(dir.join("other.txt"), b"").unwrap();
        let got: Vec<u32> = list(&dir).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(got, vec![1, 2, 10]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
