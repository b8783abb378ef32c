//! The on-disk queue of one webhook endpoint: `<state dir>/spool/<hash>/`.
//!
//! `queue-<base>.jsonl` holds lines `<event id>\t<event json>\n`; `<base>`
//! is the logical offset of its first byte, so offsets stay meaningful
//! across compactions. `acked` holds the logical offset up to which
//! events were delivered (or dropped on overflow). `disabled` exists once
//! the receiver answered 410. Format and policies: docs/design-notes.md.

use std::{
    fs::File,
    io::Write as _,
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use tokio::sync::Notify;

use super::SinkError;

const ACKED: &str = "acked";
const DISABLED: &str = "disabled";
const CHUNK: usize = 64 * 1024;
/// Delivered bytes at the head of the file before it is rewritten.
const COMPACT_AFTER: u64 = 1 << 20;

/// Events read for one delivery: ids, bodies, and the offset after them.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) ids: Vec<String>,
    pub(crate) bodies: Vec<Vec<u8>>,
    pub(crate) end: u64,
}

struct Inner {
    file: File,
    path: PathBuf,
    /// Logical offset of the file's first byte.
    base: u64,
    /// Bytes in the file.
    len: u64,
    acked: u64,
}

/// One endpoint's spool; shared by the log thread (appends) and the
/// delivery task (peeks and acks). Each lock section is short file I/O.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    compact_after: u64,
    inner: Mutex<Inner>,
    dropped: AtomicU64,
    disabled: AtomicBool,
    notify: Notify,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, holding at most `max_bytes`
    /// of undelivered events. A line cut short by a crash is removed.
    ///
    /// # Errors
    /// [`SinkError::Spool`] when the directory or its files cannot be used.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SinkError> {
        std::fs::create_dir_all(dir).map_err(SinkError::spool(dir))?;
        let acked_path = dir.join(ACKED);
        let mut acked = match std::fs::read_to_string(&acked_path) {
            Ok(s) => s.trim().parse::<u64>().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(SinkError::spool(&acked_path)(e)),
        };
        // The newest queue file is complete (it is renamed into place);
        // older ones and temporaries are what a compaction left behind.
        let mut queues = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(SinkError::spool(dir))? {
            let entry = entry.map_err(SinkError::spool(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(b) = name
                .strip_prefix("queue-")
                .and_then(|n| n.strip_suffix(".jsonl"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                queues.push(b);
            } else if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        queues.sort_unstable();
        let base = queues.last().copied().unwrap_or(acked);
        for old in queues.iter().filter(|b| **b != base) {
            let _ = std::fs::remove_file(queue_path(dir, *old));
        }
        let path = queue_path(dir, base);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(SinkError::spool(&path))?;
        let len = complete_len(&file).map_err(SinkError::spool(&path))?;
        file.set_len(len).map_err(SinkError::spool(&path))?;
        acked = acked.clamp(base, base + len);
        let disabled = dir.join(DISABLED).exists();
        Ok(Spool {
            dir: dir.to_owned(),
            max_bytes,
            compact_after: COMPACT_AFTER,
            inner: Mutex::new(Inner {
                file,
                path,
                base,
                len,
                acked,
            }),
            dropped: AtomicU64::new(0),
            disabled: AtomicBool::new(disabled),
            notify: Notify::new(),
        })
    }

    /// Appends one event and wakes the delivery task. When the undelivered
    /// events would exceed the bound, the oldest are dropped and counted
    /// ([`Spool::take_dropped`]). A disabled endpoint takes nothing.
    ///
    /// # Errors
    /// [`SinkError::Spool`] when the file cannot be written.
    pub fn append(&self, id: &str, json: &[u8]) -> Result<(), SinkError> {
        if self.is_disabled() {
            return Ok(());
        }
        let mut line = Vec::with_capacity(id.len() + json.len() + 2);
        line.extend_from_slice(id.as_bytes());
        line.push(b'\t');
        line.extend_from_slice(json);
        line.push(b'\n');
        let size = line.len() as u64;
        {
            let mut g = self.lock();
            let end = g.base + g.len;
            if end - g.acked + size > self.max_bytes {
                let need = end - g.acked + size - self.max_bytes;
                let (to, lines) = skip_lines(&g, need).map_err(SinkError::spool(&g.path))?;
                g.acked = to;
                self.write_acked(to)?;
                self.dropped.fetch_add(lines, Ordering::Relaxed);
            }
            // One write per whole line: a crash leaves whole lines only.
            g.file.write_all(&line).map_err(SinkError::spool(&g.path))?;
            g.len += size;
            self.maybe_compact(&mut g)?;
        }
        self.notify.notify_one();
        Ok(())
    }

    /// Up to `max` undelivered events, oldest first; `None` when there are none.
    ///
    /// # Errors
    /// [`SinkError::Spool`] when the file cannot be read.
    pub(crate) fn peek(&self, max: usize) -> Result<Option<Batch>, SinkError> {
        let g = self.lock();
        let mut batch = Batch {
            ids: Vec::new(),
            bodies: Vec::new(),
            end: g.acked,
        };
        let mut buf = Vec::new();
        let mut pos = g.acked;
        let end = g.base + g.len;
        while batch.ids.len() < max && pos < end {
            let want = usize::try_from(end - pos).unwrap_or(CHUNK).min(CHUNK);
            let start = buf.len();
            buf.resize(start + want, 0);
            let n = g
                .file
                .read_at(buf.get_mut(start..).unwrap_or_default(), pos - g.base)
                .map_err(SinkError::spool(&g.path))?;
            buf.truncate(start + n);
            pos += n as u64;
            if n == 0 {
                break;
            }
            while batch.ids.len() < max
                && let Some(nl) = buf.iter().position(|b| *b == b'\n')
            {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                batch.end += line.len() as u64;
                let line = line.get(..nl).unwrap_or_default();
                if let Some(tab) = line.iter().position(|b| *b == b'\t') {
                    let id = String::from_utf8_lossy(line.get(..tab).unwrap_or_default());
                    batch.ids.push(id.into_owned());
                    batch
                        .bodies
                        .push(line.get(tab + 1..).unwrap_or_default().to_vec());
                }
            }
        }
        Ok((!batch.ids.is_empty()).then_some(batch))
    }

    /// Marks everything before `end` delivered.
    ///
    /// # Errors
    /// [`SinkError::Spool`] when the ack or a compaction cannot be written.
    pub(crate) fn ack(&self, end: u64) -> Result<(), SinkError> {
        let mut g = self.lock();
        if end > g.acked {
            g.acked = end.min(g.base + g.len);
            self.write_acked(g.acked)?;
        }
        self.maybe_compact(&mut g)
    }

    /// Flushes appended lines to the disk (the log's durability cadence).
    pub fn sync(&self) -> std::io::Result<()> {
        self.lock().file.sync_data()
    }

    /// Events dropped on overflow since the last call.
    pub(crate) fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    /// Disables the endpoint for good (kept across restarts).
    ///
    /// # Errors
    /// [`SinkError::Spool`] when the marker cannot be written.
    pub(crate) fn disable(&self, status: u16) -> Result<(), SinkError> {
        self.disabled.store(true, Ordering::Relaxed);
        let p = self.dir.join(DISABLED);
        std::fs::write(&p, format!("{status}\n")).map_err(SinkError::spool(p))
    }

    /// Whether the receiver answered 410 Gone (now or in an earlier run).
    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Relaxed)
    }

    /// Resolves once an event was appended after the last wake-up.
    pub(crate) async fn appended(&self) {
        self.notify.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write_acked(&self, acked: u64) -> Result<(), SinkError> {
        let tmp = self.dir.join("acked.tmp");
        std::fs::write(&tmp, format!("{acked}\n")).map_err(SinkError::spool(&tmp))?;
        std::fs::rename(&tmp, self.dir.join(ACKED)).map_err(SinkError::spool(&tmp))
    }

    /// Rewrites the queue without its delivered head once that head is big.
    fn maybe_compact(&self, g: &mut Inner) -> Result<(), SinkError> {
        let head = g.acked - g.base;
        if head < self.compact_after || head * 2 < g.len {
            return Ok(());
        }
        let tmp = self.dir.join("queue.tmp");
        let path = queue_path(&self.dir, g.acked);
        let io = SinkError::spool(&tmp);
        let r = (|| {
            let mut out = File::create(&tmp)?;
            let mut pos = head;
            let mut buf = vec![0u8; CHUNK];
            while pos < g.len {
                let n = g.file.read_at(&mut buf, pos)?;
                if n == 0 {
                    break;
                }
                out.write_all(buf.get(..n).unwrap_or_default())?;
                pos += n as u64;
            }
            out.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::OpenOptions::new()
                .read(true)
                .append(true)
                .open(&path)
        })();
        let file = r.map_err(io)?;
        let _ = std::fs::remove_file(&g.path);
        g.file = file;
        g.path = path;
        g.len -= head;
        g.base = g.acked;
        Ok(())
    }
}

fn queue_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("queue-{base}.jsonl"))
}

/// The file's length up to and including its last newline.
fn complete_len(file: &File) -> std::io::Result<u64> {
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

/// The offset after the fewest whole lines from `acked` covering `need`
/// bytes, and how many lines that is.
fn skip_lines(g: &Inner, need: u64) -> std::io::Result<(u64, u64)> {
    let end = g.base + g.len;
    let (mut pos, mut lines) = (g.acked, 0u64);
    let mut buf = vec![0u8; CHUNK];
    let mut scan = g.acked;
    while pos - g.acked < need && scan < end {
        let n = g.file.read_at(&mut buf, scan - g.base)?;
        if n == 0 {
            break;
        }
        for (i, b) in buf.iter().take(n).enumerate() {
            if *b == b'\n' {
                pos = scan + i as u64 + 1;
                lines += 1;
                if pos - g.acked >= need {
                    break;
                }
            }
        }
        scan += n as u64;
    }
    Ok((pos, lines))
}

#[cfg(test)]
#[path = "spool_tests.rs"]
mod tests;
