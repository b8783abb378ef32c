//! The JSONL file sink: `<state dir>/events.jsonl`, one event per line,
//! rotated by size (`events.jsonl.1` is the newest rotated file, up to
//! `events.jsonl.<keep>`). It is a copy for tools that tail a file, derived
//! from the audit segments (the durable, verifiable record): lines carry
//! their record's seq, so lines that could not be written (a full disk) or
//! that a crash lost are written again from the log (see `reconcile`).

use std::{
    fs::File,
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
};

/// Lines are handed to the OS at the latest when this many bytes wait.
const BUFFER: usize = 64 * 1024;

/// Size-based rotation of the JSONL file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// The file is rotated before a line would take it past this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept; older ones are deleted.
    pub keep: u32,
}

impl Default for Rotation {
    fn default() -> Rotation {
        Rotation {
            max_bytes: 64 << 20,
            keep: 5,
        }
    }
}

/// A write that failed: the lines from `from_seq` on are not in the file.
#[derive(Debug)]
pub(super) struct Unwritten {
    pub(super) from_seq: u64,
    pub(super) source: std::io::Error,
}

/// An append-only JSONL file that rotates itself.
pub(super) struct JsonlFile {
    path: PathBuf,
    rotation: Rotation,
    /// `None` after a failed write: opened again by the next write.
    file: Option<File>,
    /// Bytes of whole lines handed to the OS.
    written: u64,
    /// Whole lines not yet handed to the OS...
    buf: Vec<u8>,
    /// ...the first of which is this record's.
    buf_from: Option<u64>,
}

impl JsonlFile {
    /// Opens (appending) `path`, ending a line a crash left unfinished.
    pub(super) fn open(path: &Path, rotation: Rotation) -> std::io::Result<JsonlFile> {
        let file = open_append(path)?;
        let written = file.metadata()?.len();
        Ok(JsonlFile {
            path: path.to_owned(),
            rotation,
            file: Some(file),
            written,
            buf: Vec::new(),
            buf_from: None,
        })
    }

    /// The file's path (for messages).
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the whole line of record `seq` (`line` ends with `\n`),
    /// rotating first if it would not fit.
    ///
    /// # Errors
    /// Writing or rotating failed: the lines from [`Unwritten::from_seq`]
    /// on are not in the file (nothing of them is: never half a line).
    pub(super) fn append(&mut self, seq: u64, line: &[u8]) -> Result<(), Unwritten> {
        let len = line.len() as u64;
        let size = self.written + self.buf.len() as u64;
        if size > 0 && size.saturating_add(len) > self.rotation.max_bytes {
            self.flush()?;
            if let Err(source) = self.rotate() {
                return Err(self.failed(seq, source));
            }
        }
        self.buf_from.get_or_insert(seq);
        self.buf.extend_from_slice(line);
        if self.buf.len() >= BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands buffered lines to the OS.
    ///
    /// # Errors
    /// As [`JsonlFile::append`].
    pub(super) fn flush(&mut self) -> Result<(), Unwritten> {
        let Some(from) = self.buf_from else {
            return Ok(());
        };
        let r = match self.file.as_mut() {
            Some(f) => f.write_all(&self.buf),
            None => open_append(&self.path).and_then(|mut f| {
                self.written = f.metadata()?.len();
                let r = f.write_all(&self.buf);
                self.file = Some(f);
                r
            }),
        };
        match r {
            Ok(()) => {
                self.written += self.buf.len() as u64;
                self.buf.clear();
                self.buf_from = None;
                Ok(())
            }
            Err(source) => Err(self.failed(from, source)),
        }
    }

    /// Drops what is buffered and whatever part of it reached the file.
    fn failed(&mut self, seq: u64, source: std::io::Error) -> Unwritten {
        if let Some(f) = self.file.take() {
            // Never leave part of a line in front of a later one.
            let _ = f.set_len(self.written);
        }
        self.buf.clear();
        Unwritten {
            from_seq: self.buf_from.take().unwrap_or(seq).min(seq),
            source,
        }
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let numbered = |n: u32| rotated(&self.path, n);
        if self.rotation.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(numbered(self.rotation.keep));
            for n in (1..self.rotation.keep).rev() {
                let from = numbered(n);
                if from.exists() {
                    std::fs::rename(&from, numbered(n + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        self.file = Some(open_append(&self.path)?);
        self.written = 0;
        Ok(())
    }
}

/// The `n`th rotated file of `path` (1: the newest).
pub(super) fn rotated(path: &Path, n: u32) -> PathBuf {
    PathBuf::from(format!("{}.{n}", path.display()))
}

/// The seq of the last whole line of the JSONL file at `path` (`None`: no
/// such file, no line, or no seq in it). Reads backwards from the end.
pub(super) fn last_seq(path: &Path) -> Option<u64> {
    const CHUNK: u64 = 64 * 1024;
    /// A line longer than this is not looked for (no seq known: no catch-up).
    const MAX_LINE: u64 = 64 << 20;
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    // Whole lines only: anything after the last newline is a cut line.
    let mut end = len;
    let mut tail: Vec<u8> = Vec::new();
    let mut pos = len;
    let mut seen_end = false;
    while pos > 0 && len - pos <= MAX_LINE {
        let start = pos.saturating_sub(CHUNK);
        let mut chunk = vec![0u8; usize::try_from(pos - start).ok()?];
        f.seek(SeekFrom::Start(start)).ok()?;
        f.read_exact(&mut chunk).ok()?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
        pos = start;
        if !seen_end {
            let Some(nl) = tail.iter().rposition(|b| *b == b'\n') else {
                continue;
            };
            seen_end = true;
            end = pos + nl as u64;
            tail.truncate(nl);
        }
        if let Some(nl) = tail.iter().rposition(|b| *b == b'\n') {
            return seq_of(tail.get(nl + 1..)?);
        }
    }
    (seen_end && pos == 0 && end > 0).then(|| seq_of(&tail))?
}

fn seq_of(line: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    serde_json::from_slice::<Seq>(line).ok().map(|s| s.seq)
}

fn open_append(path: &Path) -> std::io::Result<File> {
    let mut file = crate::state_dir::private_file()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let len = file.metadata()?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(len - 1))?;
        file.read_exact(&mut last)?;
        if last != *b"\n" {
            file.write_all(b"\n")?;
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> crate::test_dir::TestDir {
        crate::test_dir::TestDir::new(&format!("interlock-jsonl-{name}"))
    }

    #[test]
    fn rotates_by_size_and_keeps_the_newest_files() {
        let d = dir("rotate");
        let p = d.join("events.jsonl");
        let mut f = JsonlFile::open(
            &p,
            Rotation {
                max_bytes: 20,
                keep: 2,
            },
        )
        .unwrap();
        for i in 0..7 {
            f.append(i, format!("{{\"n\":{i:03}}}\n").as_bytes())
                .unwrap(); // 10 bytes each
        }
        f.flush().unwrap();
        let read = |s: &str| std::fs::read_to_string(d.join(s)).unwrap();
        assert_eq!(read("events.jsonl"), "{\"n\":006}\n");
        assert_eq!(read("events.jsonl.1"), "{\"n\":004}\n{\"n\":005}\n");
        assert_eq!(read("events.jsonl.2"), "{\"n\":002}\n{\"n\":003}\n");
        assert!(
            !d.join("events.jsonl.3").exists(),
            "only `keep` rotated files"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_line_cut_by_a_crash_is_ended_and_size_is_resumed() {
        let d = dir("partial");
        let p = d.join("events.jsonl");
        std::fs::write(&p, "{\"n\":1}\n{\"n\":").unwrap();
        let mut f = JsonlFile::open(&p, Rotation::default()).unwrap();
        f.append(2, b"{\"n\":2}\n").unwrap();
        f.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"n\":1}\n{\"n\":\n{\"n\":2}\n"
        );
        assert_eq!(f.written, std::fs::metadata(&p).unwrap().len());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_failed_write_names_the_first_line_it_lost() {
        // /dev/full: every write fails with ENOSPC, as on a full disk.
        let mut f = JsonlFile::open(Path::new("/dev/full"), Rotation::default()).unwrap();
        f.append(7, b"{\"seq\":7}\n").unwrap();
        f.append(8, b"{\"seq\":8}\n").unwrap();
        let e = f.flush().unwrap_err();
        assert_eq!(e.from_seq, 7);
        assert_eq!(e.source.raw_os_error(), Some(libc::ENOSPC));
        assert!(f.buf.is_empty() && f.buf_from.is_none());
        f.append(9, b"{\"seq\":9}\n").unwrap();
        assert_eq!(f.flush().unwrap_err().from_seq, 9);
    }

    #[test]
    fn the_last_whole_line_gives_the_seq() {
        let d = dir("last");
        let p = d.join("events.jsonl");
        assert_eq!(last_seq(&p), None);
        std::fs::write(&p, "").unwrap();
        assert_eq!(last_seq(&p), None);
        std::fs::write(&p, "{\"seq\":4,\"x\":1}\n").unwrap();
        assert_eq!(last_seq(&p), Some(4));
        // A cut last line is not a line.
        std::fs::write(&p, "{\"seq\":4}\n{\"seq\":5}\n{\"seq\":6,\"x\"").unwrap();
        assert_eq!(last_seq(&p), Some(5));
        // Lines longer than a read chunk.
        let long = "y".repeat(200_000);
        std::fs::write(
            &p,
            format!("{{\"seq\":8,\"t\":\"{long}\"}}\n{{\"seq\":9,\"t\":\"{long}\"}}\n"),
        )
        .unwrap();
        assert_eq!(last_seq(&p), Some(9));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
