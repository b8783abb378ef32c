//! The JSONL file sink: `<state dir>/events.jsonl`, one event per line,
//! rotated by size (`events.jsonl.1` is the newest rotated file, up to
//! `events.jsonl.<keep>`). It is a convenience copy for tools that tail a
//! file; the audit segments are the durable, verifiable record.

use std::{
    fs::File,
    io::{BufWriter, Read as _, Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
};

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

/// An append-only JSONL file that rotates itself.
pub(super) struct JsonlFile {
    path: PathBuf,
    rotation: Rotation,
    file: BufWriter<File>,
    size: u64,
}

impl JsonlFile {
    /// Opens (appending) `path`, ending a line a crash left unfinished.
    pub(super) fn open(path: &Path, rotation: Rotation) -> std::io::Result<JsonlFile> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(JsonlFile {
            path: path.to_owned(),
            rotation,
            file: BufWriter::new(file),
            size,
        })
    }

    /// The file's path (for messages).
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one whole line (`line` must end with `\n`), rotating first
    /// if it would not fit. One write_all per line: never half a line.
    pub(super) fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        let len = line.len() as u64;
        if self.size > 0 && self.size.saturating_add(len) > self.rotation.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size = self.size.saturating_add(len);
        Ok(())
    }

    /// Hands buffered lines to the OS.
    pub(super) fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
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
        self.file = BufWriter::new(open_append(&self.path)?);
        self.size = 0;
        Ok(())
    }
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
            f.append(format!("{{\"n\":{i:03}}}\n").as_bytes()).unwrap(); // 10 bytes each
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
        f.append(b"{\"n\":2}\n").unwrap();
        f.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"n\":1}\n{\"n\":\n{\"n\":2}\n"
        );
        assert_eq!(f.size, std::fs::metadata(&p).unwrap().len());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
