//! The on-disk queue of one webhook endpoint: `<state dir>/spool/<hash>/`.
//!
//! `queue-<base>.jsonl` holds lines `<event id>\t<audit seq>\t<body>\n`
//! (older versions wrote `<event id>\t<body>\n`; both are read); `<base>`
//! is the logical offset of its first byte, so offsets stay meaningful
//! across compactions. `state` holds the acked offset and the counters
//! (see `spool_state`). `disabled` exists once the receiver answered 410.
//! Format and policies: docs/design-notes.md, "Webhook sink".

use std::{
    fs::File,
    io::Write as _,
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::sync::Notify;

use super::{
    SinkError,
    spool_file::{self, CHUNK, Line},
    spool_state::State,
};

const DISABLED: &str = "disabled";
/// Delivered bytes at the head of the file before it is rewritten.
const COMPACT_AFTER: u64 = 1 << 20;

/// Events read for one delivery: ids, bodies, and the offset after them.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) ids: Vec<String>,
    pub(crate) bodies: Vec<Vec<u8>>,
    pub(crate) end: u64,
}

pub(super) struct Inner {
    pub(super) file: File,
    path: PathBuf,
    /// Logical offset of the file's first byte.
    pub(super) base: u64,
    /// Bytes in the file.
    pub(super) len: u64,
    /// Events after `state.acked`.
    pending: u64,
    /// Audit seq of the newest event appended.
    last_seq: u64,
    state: State,
    /// Deliveries acknowledged since `state` was last written (see [`ACK_PERSIST_EVERY`]).
    acks_unwritten: bool,
    state_written: Instant,
}

/// How long an acknowledged delivery may stay unwritten to the state file. Writing it on
/// every ack (a file created and renamed per batch) was the largest cost of delivery. A crash
/// in between only means those events are delivered again, with the same `webhook-id`, which
/// at-least-once delivery allows; drops and overflow reports are still written at once.
const ACK_PERSIST_EVERY: Duration = Duration::from_millis(200);

/// One endpoint's counters, for `interlock status`.
#[derive(Clone, Debug, Serialize)]
pub struct SpoolStats {
    /// Events the receiver accepted, since the spool was made.
    pub delivered: u64,
    /// Events waiting in the spool, and their bytes.
    pub pending_events: u64,
    pub pending_bytes: u64,
    /// Events dropped on overflow, since the spool was made (each drop is
    /// also a `webhook_spool_overflow` event).
    pub dropped: u64,
    /// The receiver answered 410 Gone: nothing more is sent.
    pub disabled: bool,
    /// Why the last attempt failed, until one succeeds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One endpoint's spool; shared by the log thread (appends) and the
/// delivery task (peeks and acks). Each lock section is short file I/O.
pub struct Spool {
    dir: PathBuf,
    label: String,
    max_bytes: u64,
    compact_after: u64,
    /// [`ACK_PERSIST_EVERY`]; a field so tests can make deferral certain.
    ack_persist_every: Duration,
    inner: Mutex<Inner>,
    /// Neither a state file nor a queued event was found at open.
    fresh: bool,
    disabled: AtomicBool,
    last_error: Mutex<Option<String>>,
    notify: Notify,
}

impl Spool {
    /// Opens (or creates) the spool of endpoint `label` in `dir`, holding
    /// at most `max_bytes` of undelivered events. A line cut short by a
    /// crash is removed.
    ///
    /// # Errors
    /// [`SinkError::Spool`] when the directory or its files cannot be used.
    pub fn open(dir: &Path, label: &str, max_bytes: u64) -> Result<Spool, SinkError> {
        crate::state_dir::private_dir(dir).map_err(SinkError::spool(dir))?;
        let (mut state, known) = State::read(dir)?;
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
        let base = queues.last().copied().unwrap_or(state.acked);
        for old in queues.iter().filter(|b| **b != base) {
            let _ = std::fs::remove_file(queue_path(dir, *old));
        }
        let path = queue_path(dir, base);
        let file = crate::state_dir::private_file()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(SinkError::spool(&path))?;
        let io = |e| SinkError::spool(&path)(e);
        let len = spool_file::complete_len(&file).map_err(io)?;
        file.set_len(len).map_err(io)?;
        state.acked = state.acked.clamp(base, base + len);
        let last = spool_file::last_line(&file, len).map_err(io)?;
        let last_seq = last
            .as_ref()
            .and_then(Line::seq)
            .unwrap_or(0)
            .max(state.seq);
        let mut inner = Inner {
            file,
            path,
            base,
            len,
            pending: 0,
            last_seq,
            state,
            acks_unwritten: false,
            state_written: Instant::now(),
        };
        inner.pending = spool_file::count_lines(&inner, inner.state.acked, base + len)
            .map_err(SinkError::spool(&inner.path))?;
        inner.state.seq = inner.last_seq;
        inner.state.supersede_legacy(dir)?;
        Ok(Spool {
            dir: dir.to_owned(),
            label: label.to_string(),
            max_bytes,
            compact_after: COMPACT_AFTER,
            ack_persist_every: ACK_PERSIST_EVERY,
            inner: Mutex::new(inner),
            fresh: !known && last.is_none(),
            disabled: AtomicBool::new(dir.join(DISABLED).exists()),
            last_error: Mutex::new(None),
            notify: Notify::new(),
        })
    }

    /// The endpoint, without credentials or query.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether the spool was made by this open (nothing to catch up on).
    pub(crate) fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// Audit seq of the newest event the spool was given (0: none).
    pub(crate) fn last_seq(&self) -> u64 {
        self.lock().last_seq
    }

    /// Records that the spool starts at audit seq `seq` (a new endpoint
    /// gets the events from now on, not the log's history).
    ///
    /// # Errors
    /// [`SinkError::Spool`] when the state cannot be written.
    pub(crate) fn start_at(&self, seq: u64) -> Result<(), SinkError> {
        let mut g = self.lock();
        g.last_seq = g.last_seq.max(seq);
        self.write_state(&mut g)
    }

    /// Appends the event of audit record `seq` and wakes the delivery
    /// task. When the undelivered events would exceed the bound, the
    /// oldest are dropped and counted (durably, with the offset); returns
    /// how many. A disabled endpoint takes nothing.
    ///
    /// # Errors
    /// [`SinkError::Spool`] when the file cannot be written.
    pub fn append(&self, id: &str, seq: u64, body: &[u8]) -> Result<u64, SinkError> {
        if self.is_disabled() {
            return Ok(0);
        }
        let seq_text = seq.to_string();
        let mut line = Vec::with_capacity(id.len() + seq_text.len() + body.len() + 3);
        line.extend_from_slice(id.as_bytes());
        line.push(b'\t');
        line.extend_from_slice(seq_text.as_bytes());
        line.push(b'\t');
        line.extend_from_slice(body);
        line.push(b'\n');
        let size = line.len() as u64;
        let mut dropped = 0;
        {
            let mut g = self.lock();
            let end = g.base + g.len;
            if end - g.state.acked + size > self.max_bytes {
                let need = end - g.state.acked + size - self.max_bytes;
                let (to, lines) = spool_file::skip_lines(&g, g.state.acked, need)
                    .map_err(SinkError::spool(&g.path))?;
                g.state.acked = to;
                g.state.dropped += lines;
                g.pending = g.pending.saturating_sub(lines);
                dropped = lines;
                self.write_state(&mut g)?;
            }
            // One write per whole line: a crash leaves whole lines only.
            if let Err(e) = g.file.write_all(&line) {
                // A failed write (a full disk) leaves no part of the line
                // either: the log catches the spool up from this event on.
                let _ = g.file.set_len(g.len);
                return Err(SinkError::spool(&g.path)(e));
            }
            g.len += size;
            g.pending += 1;
            g.last_seq = g.last_seq.max(seq);
            self.maybe_compact(&mut g)?;
        }
        self.notify.notify_one();
        Ok(dropped)
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
            end: g.state.acked,
        };
        let mut buf = Vec::new();
        let mut pos = g.state.acked;
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
                let raw: Vec<u8> = buf.drain(..=nl).collect();
                batch.end += raw.len() as u64;
                if let Some(line) = Line::parse(raw.get(..nl).unwrap_or_default()) {
                    batch.ids.push(line.id);
                    batch.bodies.push(line.body);
                }
            }
        }
        Ok((!batch.ids.is_empty()).then_some(batch))
    }

    /// Marks everything before `end` delivered.
    ///
    /// # Errors
    /// [`SinkError::Spool`] when the state or a compaction cannot be written.
    pub(crate) fn ack(&self, end: u64) -> Result<(), SinkError> {
        let mut g = self.lock();
        let end = end.min(g.base + g.len);
        // Overflow may have dropped part of the batch meanwhile: only what
        // is still after `acked` counts as delivered.
        if end > g.state.acked {
            let n = spool_file::count_lines(&g, g.state.acked, end)
                .map_err(SinkError::spool(&g.path))?;
            g.state.acked = end;
            g.state.delivered += n;
            g.pending = g.pending.saturating_sub(n);
            if g.state_written.elapsed() >= self.ack_persist_every {
                self.write_state(&mut g)?;
            } else {
                g.acks_unwritten = true;
            }
        }
        self.maybe_compact(&mut g)
    }

    /// Writes acknowledged deliveries that [`Spool::ack`] left for later (the delivery task
    /// calls it when it goes idle and when it stops; dropping the spool does too).
    ///
    /// # Errors
    /// [`SinkError::Spool`] when the state cannot be written.
    pub(crate) fn persist_acks(&self) -> Result<(), SinkError> {
        let mut g = self.lock();
        if g.acks_unwritten {
            self.write_state(&mut g)?;
        }
        Ok(())
    }

    /// Dropped events no `webhook_spool_overflow` event reported yet, and
    /// the total dropped.
    pub(crate) fn unreported(&self) -> (u64, u64) {
        let g = self.lock();
        (g.state.dropped - g.state.reported, g.state.dropped)
    }

    /// Notes that `n` dropped events were reported.
    ///
    /// # Errors
    /// [`SinkError::Spool`] when the state cannot be written.
    pub(crate) fn mark_reported(&self, n: u64) -> Result<(), SinkError> {
        let mut g = self.lock();
        g.state.reported = (g.state.reported + n).min(g.state.dropped);
        self.write_state(&mut g)
    }

    /// The counters, for `interlock status`.
    pub fn stats(&self) -> SpoolStats {
        let (state, pending, bytes) = {
            let g = self.lock();
            (g.state, g.pending, g.base + g.len - g.state.acked)
        };
        SpoolStats {
            delivered: state.delivered,
            pending_events: pending,
            pending_bytes: bytes,
            dropped: state.dropped,
            disabled: self.is_disabled(),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Notes why the last attempt failed (`None`: it succeeded).
    pub(crate) fn set_last_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    /// Flushes appended lines to the disk (the log's durability cadence).
    pub fn sync(&self) -> std::io::Result<()> {
        self.lock().file.sync_data()
    }

    /// Disables the endpoint for good (kept across restarts).
    ///
    /// # Errors
    /// [`SinkError::Spool`] when the marker cannot be written.
    pub(crate) fn disable(&self, status: u16) -> Result<(), SinkError> {
        self.disabled.store(true, Ordering::Relaxed);
        let p = self.dir.join(DISABLED);
        crate::state_dir::write_private(&p, format!("{status}\n").as_bytes())
            .map_err(SinkError::spool(p))
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

    fn write_state(&self, g: &mut Inner) -> Result<(), SinkError> {
        g.state.seq = g.last_seq;
        g.state.write(&self.dir)?;
        g.acks_unwritten = false;
        g.state_written = Instant::now();
        Ok(())
    }

    /// Rewrites the queue without its delivered head once that head is big.
    fn maybe_compact(&self, g: &mut Inner) -> Result<(), SinkError> {
        let head = g.state.acked - g.base;
        if head < self.compact_after || head * 2 < g.len {
            return Ok(());
        }
        let tmp = self.dir.join("queue.tmp");
        let path = queue_path(&self.dir, g.state.acked);
        let io = SinkError::spool(&tmp);
        let r = (|| {
            let mut out = crate::state_dir::private_file()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
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
        g.base = g.state.acked;
        // An emptied queue no longer shows the newest seq: the state does.
        self.write_state(g)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Err(e) = self.persist_acks() {
            tracing::warn!(endpoint = %self.label, error = %e, "cannot record webhook deliveries");
        }
    }
}

fn queue_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("queue-{base}.jsonl"))
}

#[cfg(test)]
#[path = "spool_tests.rs"]
mod tests;
