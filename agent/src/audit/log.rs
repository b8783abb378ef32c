//! The event log task: one writer, a bounded channel in front of it, flushed
//! within 100 ms of an event.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::sync::mpsc;
use tracing::error;

use super::{Event, EventKind};

const CHANNEL: usize = 4096;
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// The event log could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot open event log {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("event log is closed")]
    Closed,
}

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
}

/// The writer side; run it with [`EventLog::run`].
pub struct EventLog {
    file: std::io::BufWriter<std::fs::File>,
    rx: mpsc::Receiver<Event>,
    /// Events written since the last flush.
    dirty: bool,
}

impl EventLog {
    /// Opens (appending) `<state_dir>/events.jsonl`.
    ///
    /// # Errors
    /// [`LogError::Open`] if the file cannot be opened.
    pub fn open(state_dir: &Path, host: &str) -> Result<(EventLog, EventSink), LogError> {
        let path = state_dir.join("events.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| LogError::Open { path, source })?;
        let (tx, rx) = mpsc::channel(CHANNEL);
        Ok((
            EventLog {
                file: std::io::BufWriter::new(file),
                rx,
                dirty: false,
            },
            EventSink {
                host: host.into(),
                tx,
            },
        ))
    }

    /// Writes events until every [`EventSink`] is dropped, then flushes.
    /// Its writes and fdatasync block: run it where that blocks nothing
    /// else ([`EventLog::spawn_thread`]).
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        loop {
            tokio::select! {
                ev = self.rx.recv() => match ev {
                    Some(ev) => self.write(&ev),
                    None => break,
                },
                _ = tick.tick() => self.flush(),
            }
        }
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
        let r = serde_json::to_writer(&mut self.file, ev)
            .map_err(std::io::Error::from)
            .and_then(|()| self.file.write_all(b"\n"));
        if let Err(e) = r {
            error!(error = %e, "cannot write event");
        }
        self.dirty = true;
    }

    fn flush(&mut self) {
        if !std::mem::take(&mut self.dirty) {
            return;
        }
        if let Err(e) = self
            .file
            .flush()
            .and_then(|()| self.file.get_ref().sync_data())
        {
            error!(error = %e, "cannot flush event log");
        }
    }
}
