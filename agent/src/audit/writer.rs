//! The chain writer: appends records to segment files, rotates them,
//! writes signed checkpoints and continues the chain after a restart.

use std::{
    fs::File,
    io::Write as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use serde::Serialize;
use tracing::warn;

use super::{
    Event, EventKind, LogError,
    key::{HostKey, KEY_FILE},
    record::{self, Checkpoint, CheckpointBody, CheckpointFile},
    recover, segment,
};

/// The audit directory inside the state directory.
pub const AUDIT_DIR: &str = "audit";

/// When records are forced to disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Fsync {
    /// flush + fdatasync within 100 ms of a record.
    #[default]
    Interval,
    /// fdatasync after every record.
    Always,
    /// Leave it to the OS (checkpoints are still synced before they are published).
    Never,
}

/// Settings of the audit log.
#[derive(Clone, Debug)]
pub struct AuditOptions {
    pub fsync: Fsync,
    /// A segment is rotated before a record would take it past this size.
    pub segment_bytes: u64,
    /// A checkpoint after this many records ...
    pub checkpoint_every: u64,
    /// ... or this long after the last one, whichever comes first (only if
    /// there are new records).
    pub checkpoint_interval: Duration,
}

impl Default for AuditOptions {
    fn default() -> AuditOptions {
        AuditOptions {
            fsync: Fsync::Interval,
            segment_bytes: 64 << 20,
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(10),
        }
    }
}

/// The open chain.
pub(crate) struct Chain {
    dir: PathBuf,
    key: HostKey,
    host: std::sync::Arc<str>,
    opts: AuditOptions,
    file: File,
    segment: u32,
    size: u64,
    next_seq: u64,
    /// Seq of the last event record (checkpoints are no events).
    last_event_seq: u64,
    prev: String,
    since_checkpoint: u64,
    dirty: bool,
    /// Tests set it to make every write fail as on a full disk.
    #[cfg(test)]
    pub(crate) full: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Chain {
    /// Opens `<state_dir>/audit`, creating the host key on first start,
    /// continues the chain on disk, and seals a tail a crash left unsealed
    /// (a checkpoint, then an `audit_tail_sealed` event).
    ///
    /// # Errors
    /// The directory, key or segment cannot be opened or written.
    pub(crate) fn open(
        state_dir: &Path,
        host: &str,
        opts: AuditOptions,
    ) -> Result<Chain, LogError> {
        let dir = state_dir.join(AUDIT_DIR);
        crate::state_dir::private_dir(&dir).map_err(|source| LogError::Open {
            path: dir.clone(),
            source,
        })?;
        let key = HostKey::load_or_create(&dir.join(KEY_FILE))?;
        let tail = recover::recover(&dir)?;
        let latest = CheckpointFile::read(&dir).unwrap_or_else(|e| {
            warn!(error = %e, "audit log: unreadable checkpoint file");
            None
        });
        let (segment, size) = tail.segment.unwrap_or((1, 0));
        let path = dir.join(segment::name(segment));
        let file = open_append(&path)?;
        let sealed = tail
            .last_checkpoint_seq
            .max(latest.as_ref().map(|c| c.seq).unwrap_or(0))
            .min(tail.last_seq);
        let mut chain = Chain {
            dir,
            key,
            host: host.into(),
            opts,
            file,
            segment,
            size,
            next_seq: tail.last_seq + 1,
            // Unknown if the tail segment holds only checkpoints: assume the last record.
            last_event_seq: match tail.last_event_seq {
                0 => tail.last_seq,
                s => s,
            },
            prev: tail.last_hash.clone(),
            since_checkpoint: tail.last_seq - sealed,
            dirty: false,
            #[cfg(test)]
            full: Default::default(),
        };
        let mut events = Vec::new();
        if let Some(c) = latest.filter(|c| c.seq > tail.last_seq) {
            warn!(
                checkpoint_seq = c.seq,
                last_seq = tail.last_seq,
                "audit log ends before its latest checkpoint: records were removed"
            );
            events.push(EventKind::AuditTruncationDetected {
                checkpoint_seq: c.seq,
                last_seq: tail.last_seq,
            });
        }
        if tail.last_seq > sealed {
            warn!(
                from_seq = sealed + 1,
                to_seq = tail.last_seq,
                "audit log: sealing records written after the last checkpoint (the daemon did not stop cleanly)"
            );
            chain.checkpoint()?;
            events.push(EventKind::AuditTailSealed {
                from_seq: sealed + 1,
                to_seq: tail.last_seq,
            });
        }
        if let Some((segment, bytes)) = tail.dropped_partial {
            events.push(EventKind::AuditPartialRecordDropped { segment, bytes });
        }
        for kind in events {
            chain.append_event(&Event::now(&chain.host.clone(), kind))?;
        }
        Ok(chain)
    }

    /// Appends one event; returns its seq.
    ///
    /// # Errors
    /// The record could not be written (the file is rolled back to the
    /// previous record, so the chain stays intact).
    pub(crate) fn append_event(&mut self, ev: &Event) -> Result<u64, LogError> {
        let seq = self.append(ev)?;
        self.last_event_seq = seq;
        Ok(seq)
    }

    /// Seq of the last event record (0: none yet).
    pub(crate) fn last_event_seq(&self) -> u64 {
        self.last_event_seq
    }

    /// Seq of the last record (0: none yet).
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// The audit directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of records since the last checkpoint.
    pub(crate) fn since_checkpoint(&self) -> u64 {
        self.since_checkpoint
    }

    /// Settings in force.
    pub(crate) fn options(&self) -> &AuditOptions {
        &self.opts
    }

    fn append<B: Serialize>(&mut self, body: &B) -> Result<u64, LogError> {
        let path = self.dir.join(segment::name(self.segment));
        let (line, hash) = record::encode(self.next_seq, &self.prev, body)
            .map_err(|e| LogError::io(&path)(std::io::Error::other(e)))?;
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.opts.segment_bytes {
            self.rotate()?;
        }
        #[cfg(test)]
        if self.full.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(LogError::io(path)(std::io::Error::from_raw_os_error(
                libc::ENOSPC,
            )));
        }
        if let Err(e) = self.file.write_all(&line) {
            // Never leave half a record behind a record that follows.
            let _ = self.file.set_len(self.size);
            return Err(LogError::io(self.dir.join(segment::name(self.segment)))(e));
        }
        let seq = self.next_seq;
        self.size += len;
        self.next_seq += 1;
        self.prev = hash;
        self.since_checkpoint += 1;
        self.dirty = true;
        if self.opts.fsync == Fsync::Always {
            self.sync()?;
        }
        Ok(seq)
    }

    /// Moves on to the next segment; on failure the current one stays in
    /// use (the record is retried there or after the next rotation).
    fn rotate(&mut self) -> Result<(), LogError> {
        self.sync()?;
        let path = self.dir.join(segment::name(self.segment + 1));
        self.file = open_append(&path)?;
        self.segment += 1;
        self.size = 0;
        sync_dir(&self.dir);
        Ok(())
    }

    /// fdatasync of the current segment if anything was written since the last.
    ///
    /// # Errors
    /// The sync failed; it is tried again by the next call.
    pub(crate) fn sync(&mut self) -> Result<(), LogError> {
        if self.dirty {
            self.file
                .sync_data()
                .map_err(LogError::io(self.dir.join(segment::name(self.segment))))?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Writes a signed checkpoint covering every record so far, if there
    /// are records since the last one; syncs it whatever the fsync mode, then
    /// publishes it in `checkpoint.json`.
    ///
    /// # Errors
    /// Writing or syncing failed.
    pub(crate) fn checkpoint(&mut self) -> Result<(), LogError> {
        if self.since_checkpoint == 0 {
            return Ok(());
        }
        let covers_seq = self.next_seq - 1;
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let signature = self
            .key
            .sign(&record::checkpoint_message(covers_seq, &self.prev, &time));
        let checkpoint = Checkpoint {
            covers_seq,
            covers_hash: self.prev.clone(),
            key: self.key.public_hex(),
            signature,
        };
        let host = self.host.clone();
        let seq = self.append(&CheckpointBody {
            id: uuid::Uuid::now_v7().to_string(),
            time: &time,
            host: &host,
            kind: record::CHECKPOINT,
            checkpoint: &checkpoint,
        })?;
        self.since_checkpoint = 0;
        self.dirty = true;
        self.sync()?;
        let latest = CheckpointFile {
            segment: segment::name(self.segment),
            seq,
            hash: self.prev.clone(),
            time,
            checkpoint,
        };
        let tmp = self.dir.join(format!("{}.tmp", record::CHECKPOINT_FILE));
        let path = self.dir.join(record::CHECKPOINT_FILE);
        let bytes = serde_json::to_vec_pretty(&latest)
            .map_err(|e| LogError::io(&path)(std::io::Error::other(e)))?;
        write_synced(&tmp, &bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(LogError::io(&path))?;
        sync_dir(&self.dir);
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File, LogError> {
    crate::state_dir::private_file()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| LogError::Open {
            path: path.to_path_buf(),
            source,
        })
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = crate::state_dir::private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Makes a new or renamed file's directory entry durable (best effort).
fn sync_dir(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        warn!(dir = %dir.display(), error = %e, "cannot sync the audit directory");
    }
}
