//! The event log task: one writer thread, a bounded channel in front of it.
//! Each event becomes a record of the hash chain (see `writer`), and is
//! also appended as a plain JSON line to `<state dir>/events.jsonl` (the
//! JSONL sink, rotated by size: see `jsonl`).

use std::{path::Path, sync::Arc, time::Duration};

use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{error, warn};

use crate::sinks::Spool;

use super::{
    Event, EventKind, LogError,
    jsonl::{JsonlFile, Rotation},
    ocsf::Mapper,
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
pub(super) struct Plain<'a> {
    pub(super) seq: u64,
    #[serde(flatten)]
    pub(super) event: &'a Event,
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
    /// Builds the OCSF webhook bodies (remembers live sessions).
    mapper: Mapper,
    host: Arc<str>,
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
                mapper: Mapper::default(),
                host: host.into(),
            },
            EventSink {
                host: host.into(),
                tx,
            },
        ))
    }

    /// Also hands every event to these webhook spools (after its audit
    /// record). When the log runs, it first gives each spool the records
    /// it lacks (see `reconcile`).
    pub fn add_spools(&mut self, spools: Vec<Arc<Spool>>) {
        self.spools.extend(spools);
    }

    /// Writes events until every [`EventSink`] is dropped, then writes a
    /// final checkpoint and flushes. Its writes and fdatasync block: run it
    /// where that blocks nothing else ([`EventLog::spawn_thread`]).
    pub async fn run(mut self) {
        if !self.spools.is_empty() {
            super::reconcile::reconcile(&self.chain, &self.spools);
        }
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        let mut checkpoint = tokio::time::interval(self.chain.options().checkpoint_interval);
        checkpoint.tick().await;
        loop {
            tokio::select! {
                ev = self.rx.recv() => match ev {
                    Some(ev) => self.write(&ev),
                    None => break,
                },
                _ = flush.tick() => {
                    self.report_overflow();
                    self.flush();
                }
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
        self.write_one(ev);
        self.report_overflow();
    }

    fn write_one(&mut self, ev: &Event) {
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
        // events.jsonl and, under `unmapped`, into each webhook body.
        let mut line = match serde_json::to_vec(&Plain { seq, event: ev }) {
            Ok(line) => line,
            Err(e) => {
                error!(error = %e, "cannot encode event");
                return;
            }
        };
        if !self.spools.is_empty() {
            match self.mapper.body(Some(seq), ev, &line) {
                Ok(body) => {
                    for s in &self.spools {
                        if let Err(e) = s.append(&ev.id, seq, &body) {
                            error!(error = %e, endpoint = s.label(), "cannot spool event for a webhook");
                        }
                    }
                }
                Err(e) => error!(error = %e, "cannot encode a webhook body"),
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

    /// Records a `webhook_spool_overflow` for every spool with dropped
    /// events no event reported yet, right after the drop (and, after a
    /// crash, at the first tick). The count is durable in the spool, so a
    /// drop is reported at least once. Drops that these reports cause are
    /// reported next time, so this never loops.
    fn report_overflow(&mut self) {
        if !self.spools.iter().any(|s| s.unreported().0 > 0) {
            return;
        }
        let spools = self.spools.clone();
        for s in spools {
            let (dropped, total) = s.unreported();
            if dropped == 0 {
                continue;
            }
            warn!(
                endpoint = s.label(),
                dropped, total, "webhook spool full: oldest events dropped"
            );
            let ev = Event::now(
                &self.host,
                EventKind::WebhookSpoolOverflow {
                    endpoint: s.label().to_string(),
                    dropped,
                    total,
                },
            );
            self.write_one(&ev);
            if let Err(e) = s.mark_reported(dropped) {
                error!(error = %e, endpoint = s.label(), "cannot record an overflow report");
            }
        }
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
