//! The event log task: one writer thread, a bounded channel in front of it.
//! Each event becomes a record of the hash chain (see `writer`), and is
//! also appended as a plain JSON line to `<state dir>/events.jsonl` (the
//! JSONL sink, rotated by size: see `jsonl`).

use std::{path::Path, sync::Arc, time::Duration};

use serde::Serialize;
use tokio::sync::mpsc;
use tracing::error;

use crate::sinks::Spool;

use super::{
    Event, EventKind, LogError,
    jsonl::{JsonlFile, Rotation},
    writer::{AuditOptions, Chain, Fsync},
};

const CHANNEL: usize = 4096;
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// The plain event file beside the audit directory.
const EVENTS_FILE: &str = "events.jsonl";

/// Cheap handle for producing events.
#[derive(Clone)]
pub struct EventSink {
    host: std::sync::Arc<str>,
    tx: mpsc::Sender<Event>,
}

impl EventSink {
    /// Records `kind`. Waits when the log is behind (backpressure, never a
    /// silent drop).
    ///
    /// # Errors
    /// [`LogError::Closed`] once the log task has stopped.
    pub async fn emit(&self, kind: EventKind) -> Result<(), LogError> {
        self.tx
            .send(Event::now(&self.host, kind))
            .await
            .map_err(|_| LogError::Closed)
    }

    /// A sink whose events the test reads from the receiver.
    #[cfg(test)]
    pub(crate) fn for_test() -> (EventSink, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(CHANNEL);
        (
            EventSink {
                host: "test".into(),
                tx,
            },
            rx,
        )
    }
}

/// A line of `events.jsonl`: the event with its seq (no chain fields).
#[derive(Serialize)]
struct Plain<'a> {
    seq: u64,
    #[serde(flatten)]
    event: &'a Event,
}

/// The writer side; run it with [`EventLog::spawn_thread`].
pub struct EventLog {
    chain: Chain,
    plain: JsonlFile,
    rx: mpsc::Receiver<Event>,
    /// Plain lines written since the last flush.
    plain_dirty: bool,
    /// Webhook spools: each event is appended before it counts as handed off.
    spools: Vec<Arc<Spool>>,
}

impl EventLog {
    /// Opens the audit log in `<state_dir>/audit` (recovering and sealing
    /// what an earlier run left) and `<state_dir>/events.jsonl`. Reads and
    /// writes files: call it from a blocking context.
    ///
    /// # Errors
    /// [`LogError`] if the key, a segment or the event file cannot be
    /// opened or written.
    pub fn open(
        state_dir: &Path,
        host: &str,
        opts: AuditOptions,
        rotation: Rotation,
    ) -> Result<(EventLog, EventSink), LogError> {
        let chain = Chain::open(state_dir, host, opts)?;
        let plain_path = state_dir.join(EVENTS_FILE);
        let plain = JsonlFile::open(&plain_path, rotation).map_err(|source| LogError::Open {
            path: plain_path.clone(),
            source,
        })?;
        let (tx, rx) = mpsc::channel(CHANNEL);
        Ok((
            EventLog {
                chain,
                plain,
                rx,
                plain_dirty: false,
                spools: Vec::new(),
            },
            EventSink {
                host: host.into(),
                tx,
            },
        ))
    }

    /// Also hands every event to these webhook spools (after its audit record).
    pub fn add_spools(&mut self, spools: Vec<Arc<Spool>>) {
        self.spools.extend(spools);
    }

    /// Writes events until every [`EventSink`] is dropped, then writes a
    /// final checkpoint and flushes. Its writes and fdatasync block: run it
    /// where that blocks nothing else ([`EventLog::spawn_thread`]).
    pub async fn run(mut self) {
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        let mut checkpoint = tokio::time::interval(self.chain.options().checkpoint_interval);
        checkpoint.tick().await;
        loop {
            tokio::select! {
                ev = self.rx.recv() => match ev {
                    Some(ev) => self.write(&ev),
                    None => break,
                },
                _ = flush.tick() => self.flush(),
                _ = checkpoint.tick() => self.checkpoint(),
            }
        }
        self.checkpoint();
        self.flush();
    }

    /// Runs the log on a thread of its own (with a single-threaded runtime),
    /// so disk writes never stall the daemon's async workers.
    ///
    /// # Errors
    /// The thread or its runtime could not be started.
    pub fn spawn_thread(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        std::thread::Builder::new()
            .name("event-log".into())
            .spawn(move || rt.block_on(self.run()))
    }

    fn write(&mut self, ev: &Event) {
        let seq = match self.chain.append_event(ev) {
            Ok(seq) => seq,
            Err(e) => {
                error!(error = %e, "cannot write audit record");
                return;
            }
        };
        if self.chain.since_checkpoint() >= self.chain.options().checkpoint_every {
            self.checkpoint();
        }
        // Serialized once: the same line (the event plus its seq) goes to
        // events.jsonl and, as the body, to every webhook spool.
        let mut line = match serde_json::to_vec(&Plain { seq, event: ev }) {
            Ok(line) => line,
            Err(e) => {
                error!(error = %e, "cannot encode event");
                return;
            }
        };
        for s in &self.spools {
            if let Err(e) = s.append(&ev.id, &line) {
                error!(error = %e, "cannot spool event for a webhook");
            }
        }
        // One write_all per whole line: the buffer is never flushed mid-line,
        // so a crash leaves whole lines only.
        line.push(b'\n');
        if let Err(e) = self.plain.append(&line) {
            error!(error = %e, path = %self.plain.path().display(), "cannot write event");
        }
        self.plain_dirty = true;
    }

    fn checkpoint(&mut self) {
        if let Err(e) = self.chain.checkpoint() {
            error!(error = %e, "cannot write audit checkpoint");
        }
    }

    fn flush(&mut self) {
        if self.chain.options().fsync == Fsync::Interval
            && let Err(e) = self.chain.sync()
        {
            error!(error = %e, "cannot sync audit log");
        }
        if std::mem::take(&mut self.plain_dirty)
            && let Err(e) = self.plain.flush()
        {
            error!(error = %e, path = %self.plain.path().display(), "cannot flush event file");
        }
        if self.chain.options().fsync != Fsync::Never {
            for s in &self.spools {
                if let Err(e) = s.sync() {
                    error!(error = %e, "cannot sync a webhook spool");
                }
            }
        }
    }
}
