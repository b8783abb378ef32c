//! asciicast v2 recording of PTY sessions, and a best-effort
//! reconstruction of the command lines typed into them.
//!
//! The recording is `<recording_dir>/<session id>-<channel>.cast`: a JSON
//! header line, then `[seconds, "o"|"i"|"r", data]` event lines, playable
//! with `asciinema play`. Its size and SHA-256 are computed as it is
//! written and go into the audit trail when it is closed
//! ([`CastWriter::finish`]), so a recording changed afterwards is detected.
//!
//! Line reconstruction is **best effort**: it follows printable characters,
//! backspace, ^U, ^W, ^C and Enter, and skips escape sequences, but it
//! cannot see what the shell does with tab completion, history recall or
//! cursor movement, so a recorded line can differ from what ran. The
//! recording is the authoritative record.

use std::{
    fs::File,
    io::{BufWriter, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::SshError;
use crate::gate::RecordingRef;

/// Writes one asciicast v2 file.
pub(super) struct CastWriter {
    path: PathBuf,
    file: BufWriter<File>,
    start: Instant,
    out_carry: Vec<u8>,
    in_carry: Vec<u8>,
    digest: Sha256,
    bytes: u64,
}

impl CastWriter {
    /// Creates `path` and writes the header.
    pub(super) fn create(
        path: &Path,
        width: u32,
        height: u32,
        term: Option<&str>,
    ) -> Result<CastWriter, SshError> {
        let io = |source| SshError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        // Typed input can hold secrets: owner-only, like the audit log.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let header = json!({
            "version": 2,
            "width": width,
            "height": height,
            "timestamp": timestamp,
            "env": { "TERM": term },
        });
        let mut w = CastWriter {
            path: path.to_path_buf(),
            file: BufWriter::new(file),
            start: Instant::now(),
            out_carry: Vec::new(),
            in_carry: Vec::new(),
            digest: Sha256::new(),
            bytes: 0,
        };
        w.line(&header.to_string())?;
        Ok(w)
    }

    /// Writes one line, flushed so a crash keeps every event so far.
    fn line(&mut self, text: &str) -> Result<(), SshError> {
        let mut line = String::with_capacity(text.len() + 1);
        line.push_str(text);
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|source| SshError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.digest.update(line.as_bytes());
        self.bytes += line.len() as u64;
        Ok(())
    }

    fn event(&mut self, code: &str, data: &str) -> Result<(), SshError> {
        let t = self.start.elapsed().as_secs_f64();
        self.line(&json!([t, code, data]).to_string())
    }

    /// Output the terminal showed (upstream -> client).
    pub(super) fn output(&mut self, data: &[u8]) -> Result<(), SshError> {
        let text = take_utf8(&mut self.out_carry, data);
        if text.is_empty() {
            return Ok(());
        }
        self.event("o", &text)
    }

    /// Input the client typed (client -> upstream).
    pub(super) fn input(&mut self, data: &[u8]) -> Result<(), SshError> {
        let text = take_utf8(&mut self.in_carry, data);
        if text.is_empty() {
            return Ok(());
        }
        self.event("i", &text)
    }

    /// The terminal was resized.
    pub(super) fn resize(&mut self, width: u32, height: u32) -> Result<(), SshError> {
        self.event("r", &format!("{width}x{height}"))
    }

    /// Closes the recording: its path, size and digest for the audit trail.
    pub(super) fn finish(mut self) -> Result<RecordingRef, SshError> {
        self.file.flush().map_err(|source| SshError::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok(RecordingRef {
            path: self.path,
            bytes: self.bytes,
            sha256: hex::encode(self.digest.finalize()),
        })
    }
}

/// Appends `data` to `carry` and returns the text of all complete UTF-8
/// sequences (invalid bytes become U+FFFD); an incomplete sequence at the
/// end stays in `carry` for the next chunk.
fn take_utf8(carry: &mut Vec<u8>, data: &[u8]) -> String {
    carry.extend_from_slice(data);
    let keep = incomplete_tail(carry);
    let split = carry.len().saturating_sub(keep);
    let text = String::from_utf8_lossy(carry.get(..split).unwrap_or_default()).into_owned();
    carry.drain(..split);
    text
}

/// How many bytes at the end of `b` start a UTF-8 sequence not yet complete.
fn incomplete_tail(b: &[u8]) -> usize {
    for back in 1..=b.len().min(3) {
        let Some(&byte) = b.get(b.len() - back) else {
            return 0;
        };
        if byte & 0xC0 == 0x80 {
            continue;
        }
        let need = match byte {
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => 1,
        };
        return if need > back { back } else { 0 };
    }
    0
}

/// Escape-sequence state of the line reader.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Esc {
    None,
    Start,
    Csi,
    Ss3,
}

/// Best-effort reconstruction of typed lines from a PTY input stream.
pub(super) struct LineReader {
    line: String,
    esc: Esc,
    carry: Vec<u8>,
}

impl LineReader {
    pub(super) fn new() -> LineReader {
        LineReader {
            line: String::new(),
            esc: Esc::None,
            carry: Vec::new(),
        }
    }

    /// Feeds input bytes; returns the lines completed by Enter.
    pub(super) fn feed(&mut self, data: &[u8]) -> Vec<String> {
        let text = take_utf8(&mut self.carry, data);
        let mut lines = Vec::new();
        for c in text.chars() {
            match (self.esc, c) {
                (Esc::Start, '[') => self.esc = Esc::Csi,
                (Esc::Start, 'O') => self.esc = Esc::Ss3,
                (Esc::Start, _) | (Esc::Ss3, _) => self.esc = Esc::None,
                (Esc::Csi, '\u{40}'..='\u{7e}') => self.esc = Esc::None,
                (Esc::Csi, _) => {}
                (Esc::None, '\u{1b}') => self.esc = Esc::Start,
                (Esc::None, '\r' | '\n') => {
                    let line = std::mem::take(&mut self.line);
                    if !line.trim().is_empty() {
                        lines.push(line);
                    }
                }
                (Esc::None, '\u{7f}' | '\u{8}') => {
                    self.line.pop();
                }
                (Esc::None, '\u{15}' | '\u{3}') => self.line.clear(),
                (Esc::None, '\u{17}') => {
                    let kept = self.line.trim_end().len();
                    self.line.truncate(kept);
                    let cut = self.line.rfind(' ').map(|i| i + 1).unwrap_or(0);
                    self.line.truncate(cut);
                }
                (Esc::None, c) if !c.is_control() => self.line.push(c),
                (Esc::None, _) => {}
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_follow_editing_and_skip_escapes() {
        let mut r = LineReader::new();
        assert!(r.feed(b"ech").is_empty());
        assert_eq!(r.feed(b"o hix\x7f\r"), vec!["echo hi".to_string()]);
        assert_eq!(r.feed(b"ls \x1b[Dfoo\x15pwd\n"), vec!["pwd".to_string()]);
        assert_eq!(r.feed(b"a b\x17c\r\r"), vec!["a c".to_string()]);
    }

    #[test]
    fn utf8_split_across_chunks_is_kept() {
        let mut carry = Vec::new();
        let snow = "☃".as_bytes();
        assert_eq!(take_utf8(&mut carry, &snow[..1]), "");
        assert_eq!(take_utf8(&mut carry, &snow[1..]), "☃");
        assert_eq!(take_utf8(&mut carry, b"\xffa"), "\u{fffd}a");
    }

    #[test]
    fn cast_file_is_asciicast_v2() {
        let dir = crate::test_dir::TestDir::new("cast-test");
        let path = dir.join("s.cast");
        let mut w = CastWriter::create(&path, 80, 24, Some("xterm")).unwrap();
        w.output(b"hello\r\n").unwrap();
        w.input(b"ls\r").unwrap();
        w.resize(100, 30).unwrap();
        let done = w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(done.path, path);
        assert_eq!(done.bytes, bytes.len() as u64);
        assert_eq!(done.sha256, hex::encode(Sha256::digest(&bytes)));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(header["version"], 2);
        assert_eq!(header["width"], 80);
        assert_eq!(header["env"]["TERM"], "xterm");
        let events: Vec<serde_json::Value> =
            lines.map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(events[0][1], "o");
        assert_eq!(events[0][2], "hello\r\n");
        assert_eq!(events[1][1], "i");
        assert_eq!(events[2][2], "100x30");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
