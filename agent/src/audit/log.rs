//! The event log task: one writer thread, a bounded channel in front of it.
//! Each event becomes a record of the hash chain (see `writer`), and is
//! also appended as a plain JSON line to `<state dir>/events.jsonl` (the
//! JSONL sink, rotated by size: see `jsonl`) and to each webhook spool.
//!
//! A record that cannot be written is never dropped: the writer marks the
//! log unwritable (the gate then refuses new sessions and requests, see
//! `health`), keeps that record and every later one in memory, in order,
//! and retries every [`FLUSH_EVERY`]; once they are all written it records
//! the outage and admits again. A session start is confirmed: its emitter
//! learns whether its record was written, and refuses the session if not
//! (the record is then not kept: the session never ran). Sinks that cannot
//! be written fall behind and are caught up from the log (`reconcile`).

use std::{collections::VecDeque, path::Path, sync::Arc, time::Duration};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use super::{
    AuditSink, Event, EventKind, LogError,
    health::{AuditHealth, Unwritable, cause_of},
    jsonl::{self, JsonlFile, Rotation},
    ocsf::Mapper,
    writer::{AuditOptions, Chain, Fsync},
};

const CHANNEL: usize = 4096;
/// Flush, sync and (during an outage) retry cadence.
pub(super) const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// The plain event file beside the audit directory.
const EVENTS_FILE: &str = "events.jsonl";
/// Most records held in memory while the log cannot be written; beyond
/// that the writer stops taking events and their producers wait.
const HELD_MAX: usize = 65_536;
/// ... and most bytes (as serialized).
const HELD_BYTES: usize = 64 << 20;
/// How long a stopping daemon keeps retrying records it holds.
const LAST_TRIES: u32 = 50;

/// An event on its way to the writer; `ack` learns whether it was written.
pub(crate) struct Queued {
    pub(crate) event: Event,
    ack: Option<oneshot::Sender<Result<u64, Unwritable>>>,
}

/// Cheap handle for producing events.
#[derive(Clone)]
pub struct EventSink {
    host: Arc<str>,
    tx: mpsc::Sender<Queued>,
    health: Arc<AuditHealth>,
}

impl EventSink {
    /// Queues `kind`. Waits when the log is behind (backpressure, never a
    /// silent drop). Once queued it is written, now or after an outage.
    ///
    /// # Errors
    /// [`LogError::Closed`] once the log task has stopped.
    pub async fn emit(&self, kind: EventKind) -> Result<(), LogError> {
        self.tx
            .send(Queued {
                event: Event::now(&self.host, kind),
                ack: None,
            })
            .await
            .map_err(|_| LogError::Closed)
    }

    /// [`EventSink::emit`] for what has already happened and cannot be
    /// refused any more: if the log has stopped (a shutdown ordering bug),
    /// the event goes to the daemon's own log instead of nowhere.
    pub async fn record(&self, kind: EventKind) {
        let queued = Queued {
            event: Event::now(&self.host, kind),
            ack: None,
        };
        if let Err(mpsc::error::SendError(q)) = self.tx.send(queued).await {
            let json = serde_json::to_string(&q.event).unwrap_or_default();
            error!(event = %json, "event log closed: event not recorded");
        }
    }

    /// Writes `kind` and waits until it is in the audit log; returns its
    /// seq. For records whose request is refused when they cannot be
    /// written (a session's start).
    ///
    /// # Errors
    /// [`Unwritable`] when the log cannot be written (or has stopped); the
    /// event is then not recorded at all.
    pub async fn emit_confirmed(&self, kind: EventKind) -> Result<u64, Unwritable> {
        let (tx, rx) = oneshot::channel();
        let closed = || Unwritable {
            cause: "the event log has stopped".into(),
        };
        self.tx
            .send(Queued {
                event: Event::now(&self.host, kind),
                ack: Some(tx),
            })
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// Whether the log can be written; the gate asks before admitting.
    pub fn health(&self) -> &AuditHealth {
        &self.health
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
    rx: mpsc::Receiver<Queued>,
    /// Plain lines written since the last flush.
    plain_dirty: bool,
    /// Webhook spools: each event is appended before it counts as handed off.
    spools: Vec<Arc<dyn AuditSink>>,
    /// Builds the OCSF webhook bodies (remembers live sessions).
    mapper: Mapper,
    host: Arc<str>,
    health: Arc<AuditHealth>,
    /// Records not written yet (in order), with their sizes; only during an outage.
    held: VecDeque<(Event, usize)>,
    held_bytes: usize,
    /// Records held during this outage.
    held_total: u64,
    /// Set from a failed write until everything held is written.
    outage: bool,
    /// A checkpoint or sync failed and is retried.
    checkpoint_due: bool,
    sync_due: bool,
    /// The first seq `events.jsonl` lacks, while it is behind the log.
    plain_behind: Option<u64>,
    /// Spools (by index) behind the log.
    spools_behind: Vec<bool>,
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
        // Lines the file lacks (a crash, an earlier outage, the events
        // the chain's own recovery just wrote) are written again from the log.
        // A file without any seq (new, or from a version before seqs) is
        // left as it is rather than given the whole log.
        let plain_behind = plain_last_seq(&plain_path)
            .filter(|s| *s < chain.last_event_seq())
            .map(|s| s + 1);
        let plain = JsonlFile::open(&plain_path, rotation).map_err(|source| LogError::Open {
            path: plain_path.clone(),
            source,
        })?;
        let (tx, rx) = mpsc::channel(CHANNEL);
        let health = Arc::new(AuditHealth::default());
        Ok((
            EventLog {
                chain,
                plain,
                rx,
                plain_dirty: false,
                spools: Vec::new(),
                mapper: Mapper::default(),
                host: host.into(),
                health: Arc::clone(&health),
                held: VecDeque::new(),
                held_bytes: 0,
                held_total: 0,
                outage: false,
                checkpoint_due: false,
                sync_due: false,
                plain_behind,
                spools_behind: Vec::new(),
            },
            EventSink {
                host: host.into(),
                tx,
                health,
            },
        ))
    }

    /// Also hands every event to these webhook spools (after its audit
    /// record). When the log runs, it first gives each spool the records
    /// it lacks (see `reconcile`).
    pub fn add_spools<S: AuditSink + 'static>(&mut self, spools: Vec<Arc<S>>) {
        self.spools
            .extend(spools.into_iter().map(|s| s as Arc<dyn AuditSink>));
        self.spools_behind.resize(self.spools.len(), false);
    }

    /// Writes events until every [`EventSink`] is dropped, then writes a
    /// final checkpoint and flushes. Its writes and fdatasync block: run it
    /// where that blocks nothing else ([`EventLog::spawn_thread`]).
    pub async fn run(mut self) {
        if !self.spools.is_empty() {
            let failed = super::reconcile::reconcile(&self.chain, &self.spools);
            for i in failed {
                self.spool_failed(i, "cannot catch up with the audit log at start".into());
            }
        }
        self.catch_up();
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        let mut checkpoint = tokio::time::interval(self.chain.options().checkpoint_interval);
        checkpoint.tick().await;
        loop {
            // Full of held records: producers wait in `emit` (backpressure).
            let room = self.held.len() < HELD_MAX && self.held_bytes < HELD_BYTES;
            tokio::select! {
                q = self.rx.recv(), if room => match q {
                    Some(q) => self.take(q),
                    None => break,
                },
                _ = flush.tick() => {
                    self.retry();
                    self.catch_up();
                    self.report_overflow();
                    self.flush();
                }
                _ = checkpoint.tick() => self.checkpoint(),
            }
        }
        self.finish().await;
    }

    /// Makes every write of the chain fail (as on a full disk) while set.
    #[cfg(test)]
    pub(crate) fn full_switch(&self) -> Arc<std::sync::atomic::AtomicBool> {
        Arc::clone(&self.chain.full)
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

    /// Writes one queued event (or holds it), then reports spool overflows.
    fn take(&mut self, q: Queued) {
        self.write_event(q);
        self.report_overflow();
    }

    /// Writes one queued event, or holds it while the log cannot be written.
    fn write_event(&mut self, q: Queued) {
        let Queued { event, ack } = q;
        if self.outage {
            match ack {
                // Its request is refused instead: nothing of it is kept.
                Some(ack) => {
                    let cause = self.health.cause();
                    // The requester may have gone; then there is nobody to tell.
                    let _ = ack.send(Err(Unwritable { cause }));
                }
                None => self.hold(event),
            }
            return;
        }
        match self.chain.append_event(&event) {
            Ok(seq) => {
                if let Some(ack) = ack {
                    // As above: a requester that left finds its record written.
                    let _ = ack.send(Ok(seq));
                }
                self.written(seq, &event);
            }
            Err(e) => {
                self.failed(&e);
                match ack {
                    Some(ack) => {
                        let _ = ack.send(Err(Unwritable {
                            cause: cause_of(&e),
                        }));
                    }
                    None => self.hold(event),
                }
            }
        }
    }

    /// Keeps `event` (its record could not be written) behind those held.
    fn hold(&mut self, event: Event) {
        let size = serde_json::to_vec(&event).map_or(1024, |v| v.len());
        self.held.push_back((event, size));
        self.held_bytes += size;
        self.held_total += 1;
        self.health.set_waiting(self.held.len() as u64);
    }

    /// A write failed: nothing new is admitted until everything held is written.
    fn failed(&mut self, e: &LogError) {
        if !self.outage {
            error!(error = %e, "cannot write the audit log: refusing new sessions and requests until it can be written");
        }
        self.outage = true;
        self.health.fail(cause_of(e), e.to_string());
    }

    /// During an outage: writes what is due and what is held, in order;
    /// once all is written, records the outage and admits again.
    fn retry(&mut self) {
        if !self.outage {
            return;
        }
        if self.checkpoint_due {
            if let Err(e) = self.chain.checkpoint() {
                return self.failed(&e);
            }
            self.checkpoint_due = false;
        }
        if self.sync_due {
            if let Err(e) = self.chain.sync() {
                return self.failed(&e);
            }
            self.sync_due = false;
        }
        while let Some((event, _)) = self.held.front() {
            match self.chain.append_event(event) {
                Ok(seq) => {
                    if let Some((event, size)) = self.held.pop_front() {
                        self.held_bytes -= size;
                        self.written(seq, &event);
                    }
                    self.health.set_waiting(self.held.len() as u64);
                }
                Err(e) => return self.failed(&e),
            }
            if self.checkpoint_due {
                return;
            }
        }
        // Everything held is written. The outage's own record comes next;
        // writing it is also the proof that the log can be written again.
        let view = self.health.view();
        let outage = Event::now(
            &self.host,
            EventKind::AuditWriteFailed {
                since: view.failing_since.unwrap_or_default(),
                error: view.error.unwrap_or_default(),
                records_held: self.held_total,
                refused_sessions: view.refused_sessions,
                refused_requests: view.refused_requests,
            },
        );
        match self.chain.append_event(&outage) {
            Ok(seq) => {
                info!(
                    held = self.held_total,
                    refused_sessions = view.refused_sessions,
                    refused_requests = view.refused_requests,
                    "the audit log can be written again: admitting new sessions and requests"
                );
                self.outage = false;
                self.held_total = 0;
                self.health.recover();
                self.written(seq, &outage);
            }
            Err(e) => self.failed(&e),
        }
    }

    /// What follows a record in the chain: maybe a checkpoint, then the
    /// spools and the JSONL file (each skipped while it is behind).
    fn written(&mut self, seq: u64, ev: &Event) {
        if self.chain.since_checkpoint() >= self.chain.options().checkpoint_every {
            self.checkpoint();
        }
        // Serialized once: the same line (the event plus its seq) goes to
        // events.jsonl and, under `unmapped`, into each webhook body.
        let mut line = match serde_json::to_vec(&Plain { seq, event: ev }) {
            Ok(line) => line,
            Err(e) => {
                error!(error = %e, seq, "cannot encode event for the sinks; they are caught up from the log");
                self.plain_failed(seq, e.to_string());
                return;
            }
        };
        if !self.spools.is_empty() {
            // The mapper remembers sessions, so it sees every event.
            match self.mapper.body(Some(seq), ev, &line) {
                Ok(body) => {
                    for i in 0..self.spools.len() {
                        if self.spools_behind.get(i).copied().unwrap_or(false) {
                            continue;
                        }
                        let Some(s) = self.spools.get(i) else {
                            continue;
                        };
                        if let Err(e) = s.append(&ev.id, seq, &body) {
                            self.spool_failed(i, e.to_string());
                        }
                    }
                }
                Err(e) => {
                    error!(error = %e, seq, "cannot encode a webhook body; spools are caught up from the log");
                    for i in 0..self.spools.len() {
                        self.spool_failed(i, e.to_string());
                    }
                }
            }
        }
        if self.plain_behind.is_some() {
            return;
        }
        // One whole line at a time: the file never holds half a line.
        line.push(b'\n');
        match self.plain.append(seq, &line) {
            Ok(()) => self.plain_dirty = true,
            Err(e) => self.plain_failed(e.from_seq, e.source.to_string()),
        }
    }

    fn plain_failed(&mut self, from_seq: u64, error: String) {
        if self.plain_behind.is_none() {
            warn!(
                path = %self.plain.path().display(),
                from_seq, %error,
                "cannot write the event file; it is caught up from the audit log once it can be"
            );
        }
        self.plain_behind = Some(self.plain_behind.map_or(from_seq, |s| s.min(from_seq)));
        self.health.sink(EVENTS_FILE, Some(error));
    }

    fn spool_failed(&mut self, i: usize, error: String) {
        let Some(s) = self.spools.get(i) else { return };
        if let Some(b) = self.spools_behind.get_mut(i) {
            if !*b {
                warn!(endpoint = s.label(), %error, "cannot spool events for a webhook; its spool is caught up from the audit log once it can be written");
            }
            *b = true;
        }
        self.health
            .sink(&format!("webhook {}", s.label()), Some(error));
    }

    /// Gives sinks that fell behind the records they lack, from the log.
    fn catch_up(&mut self) {
        if let Some(from) = self.plain_behind {
            match super::reconcile::plain(&self.chain, &mut self.plain, from) {
                Ok(n) => {
                    info!(
                        from_seq = from,
                        lines = n,
                        "event file caught up with the audit log"
                    );
                    self.plain_behind = None;
                    self.health.sink(EVENTS_FILE, None);
                }
                Err((from, e)) => {
                    self.plain_behind = Some(from);
                    self.health.sink(EVENTS_FILE, Some(e));
                }
            }
        }
        for i in 0..self.spools.len() {
            if !self.spools_behind.get(i).copied().unwrap_or(false) {
                continue;
            }
            let Some(s) = self.spools.get(i).cloned() else {
                continue;
            };
            let name = format!("webhook {}", s.label());
            match super::reconcile::catch_up(&self.chain, &s) {
                Ok(()) => {
                    info!(
                        endpoint = s.label(),
                        "webhook spool caught up with the audit log"
                    );
                    if let Some(b) = self.spools_behind.get_mut(i) {
                        *b = false;
                    }
                    self.health.sink(&name, None);
                }
                Err(e) => self.health.sink(&name, Some(e)),
            }
        }
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
            // Held like any other record if the log cannot be written.
            self.write_event(Queued {
                event: ev,
                ack: None,
            });
            if let Err(e) = s.mark_reported(dropped) {
                error!(error = %e, endpoint = s.label(), "cannot record an overflow report");
            }
        }
    }

    fn checkpoint(&mut self) {
        if self.outage {
            // Retried (with everything held) by `retry`.
            self.checkpoint_due = true;
            return;
        }
        if let Err(e) = self.chain.checkpoint() {
            self.checkpoint_due = true;
            self.failed(&e);
        }
    }

    fn flush(&mut self) {
        if !self.outage
            && self.chain.options().fsync == Fsync::Interval
            && let Err(e) = self.chain.sync()
        {
            self.sync_due = true;
            self.failed(&e);
        }
        if std::mem::take(&mut self.plain_dirty)
            && let Err(e) = self.plain.flush()
        {
            self.plain_failed(e.from_seq, e.source.to_string());
        }
        if self.chain.options().fsync != Fsync::Never {
            for s in &self.spools {
                if let Err(e) = s.sync() {
                    error!(error = %e, "cannot sync a webhook spool");
                }
            }
        }
    }

    /// The last sink is gone: write what is held (retrying for a while),
    /// the final checkpoint, and flush. Records that still cannot be
    /// written go to the daemon's own log, each in full: never silently.
    async fn finish(&mut self) {
        let mut tries = 0;
        while self.outage && tries < LAST_TRIES {
            tries += 1;
            tokio::time::sleep(FLUSH_EVERY).await;
            self.retry();
        }
        if self.outage {
            error!(
                held = self.held.len(),
                "stopping while the audit log cannot be written: the records held are logged here instead"
            );
            for (event, _) in self.held.drain(..) {
                let json = serde_json::to_string(&event).unwrap_or_default();
                error!(event = %json, "audit record not written");
            }
            return;
        }
        self.checkpoint();
        self.catch_up();
        self.flush();
    }
}

/// The seq of the last line of the event file, or of its newest rotated
/// file when it has none (it was just rotated).
fn plain_last_seq(path: &Path) -> Option<u64> {
    jsonl::last_seq(path).or_else(|| jsonl::last_seq(&jsonl::rotated(path, 1)))
}
