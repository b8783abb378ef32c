//! SFTP inspection: client requests are framed and parsed so each file
//! operation (open for read/write, remove, rename, mkdir, rmdir, setstat,
//! links) can be decided before it is forwarded, with its paths made
//! absolute and normal first ([`path`]); server replies are followed to
//! count bytes per handle and to record each operation when it completes.
//! Replies are forwarded only as whole packets, so a refusal interlock
//! writes never lands inside a server packet.

#[cfg(feature = "fuzzing")]
pub(crate) mod fuzz;
mod path;
mod wire;

use std::{collections::HashMap, time::Instant};

use bytes::Bytes;

pub(super) use path::Unresolved;
use path::{CWD_PROBE_ID, Cwd, Raw};
pub(crate) use wire::TooLarge;
use wire::{Framer, Reader};

use crate::gate::{CommandKind, Record};

/// A file operation the gate decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct FileOp {
    pub(super) kind: CommandKind,
    /// The path, absolute and normal (see [`path`]).
    pub(super) text: String,
}

/// One whole client packet, with the file operations it asks for. A
/// rename, link or symlink asks for two: each path is decided on its own.
pub(super) struct ClientPacket {
    pub(super) bytes: Bytes,
    pub(super) id: u32,
    requests: Vec<(CommandKind, Raw)>,
    init: bool,
}

struct OpenFile {
    op: FileOp,
    started: Instant,
    read: u64,
    written: u64,
}

/// What one server data message turned into.
pub(super) struct FromServer {
    /// Whole packets for the client (the reply to interlock's own probe
    /// is not among them).
    pub(super) packets: Vec<Bytes>,
    /// Operations that completed.
    pub(super) records: Vec<Record>,
    /// The working directory became known (or unknowable): requests
    /// waiting for it can be decided now.
    pub(super) cwd_settled: bool,
}

/// Follows one sftp session in both directions.
#[derive(Default)]
pub(super) struct SftpTracker {
    client: Framer,
    server: Framer,
    cwd: Cwd,
    /// Request id -> operations waiting for the reply (OPEN waits for HANDLE).
    pending: HashMap<u32, (Vec<FileOp>, Instant)>,
    /// Request id -> handle of a READ or CLOSE waiting for its reply.
    reads: HashMap<u32, Bytes>,
    closes: HashMap<u32, Bytes>,
    open: HashMap<Bytes, OpenFile>,
}

fn client(kind: CommandKind, path: String) -> Vec<(CommandKind, Raw)> {
    vec![(kind, Raw::Client(path))]
}

fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl SftpTracker {
    /// Client -> server bytes; returns whole packets with their requests.
    pub(super) fn client_data(&mut self, data: &[u8]) -> Result<Vec<ClientPacket>, TooLarge> {
        let packets = self.client.push(data)?;
        Ok(packets.into_iter().map(|p| self.classify(p)).collect())
    }

    fn classify(&mut self, bytes: Bytes) -> ClientPacket {
        let parsed = Reader::new(&bytes).and_then(|(kind, mut r)| {
            // INIT carries the version where other packets have an id.
            let id = r.u32()?;
            let requests = match kind {
                wire::INIT => return Some((id, Vec::new(), true)),
                wire::OPEN => {
                    let path = r.string()?;
                    let flags = r.u32()?;
                    let kind = if flags & !wire::FXF_READ == 0 {
                        CommandKind::FileRead
                    } else {
                        CommandKind::FileWrite
                    };
                    client(kind, path)
                }
                wire::SETSTAT => client(CommandKind::FileWrite, r.string()?),
                // Attributes through a handle, even one opened for reading.
                // Through a handle opened for writing they are part of that
                // write, already decided for the same kind and path (scp
                // sets them after every upload: no second approval).
                wire::FSETSTAT => {
                    let handle = r.bytes()?;
                    let path = match self.open.get(&handle) {
                        Some(f) if f.op.kind == CommandKind::FileWrite => None,
                        Some(f) => Some(f.op.text.clone()),
                        None => Some("<unknown handle>".to_string()),
                    };
                    path.map(|p| (CommandKind::FileWrite, Raw::Resolved(p)))
                        .into_iter()
                        .collect()
                }
                wire::REMOVE | wire::RMDIR => client(CommandKind::FileRemove, r.string()?),
                wire::MKDIR => client(CommandKind::FileMkdir, r.string()?),
                wire::RENAME => two(CommandKind::FileRename, r.string()?, r.string()?),
                // A link is decided where it is made and where it points.
                wire::SYMLINK => two(CommandKind::FileWrite, r.string()?, r.string()?),
                wire::EXTENDED => extended(&mut r)?,
                wire::READ => {
                    self.reads.insert(id, r.bytes()?);
                    Vec::new()
                }
                wire::WRITE => {
                    let handle = r.bytes()?;
                    let _offset = r.u64()?;
                    let data = r.bytes()?;
                    if let Some(f) = self.open.get_mut(&handle) {
                        f.written += data.len() as u64;
                    }
                    Vec::new()
                }
                wire::CLOSE => {
                    self.closes.insert(id, r.bytes()?);
                    Vec::new()
                }
                _ => Vec::new(),
            };
            Some((id, requests, false))
        });
        let (id, requests, init) = parsed.unwrap_or((0, Vec::new(), false));
        ClientPacket {
            bytes,
            id,
            requests,
            init,
        }
    }

    /// The file operations `packet` asks for, with their paths resolved.
    ///
    /// # Errors
    /// A relative path while the working directory is not known yet
    /// ([`Unresolved::Pending`]: wait for the server) or cannot be known,
    /// or a request using interlock's own request id.
    pub(super) fn ops(&self, packet: &ClientPacket) -> Result<Vec<FileOp>, Unresolved> {
        if packet.id == CWD_PROBE_ID && self.cwd == Cwd::Pending && !packet.init {
            return Err(Unresolved::ReservedId);
        }
        packet
            .requests
            .iter()
            .map(|(kind, raw)| {
                Ok(FileOp {
                    kind: *kind,
                    text: self.cwd.resolve(raw)?,
                })
            })
            .collect()
    }

    /// `packet` was forwarded with its allowed `ops`: wait for the reply.
    /// After the client's INIT, returns interlock's working-directory
    /// probe, to be sent right after it.
    pub(super) fn forwarded(&mut self, packet: &ClientPacket, ops: Vec<FileOp>) -> Option<Bytes> {
        if !ops.is_empty() {
            self.pending.insert(packet.id, (ops, Instant::now()));
        }
        (packet.init && self.cwd == Cwd::NotAsked).then(|| {
            self.cwd = Cwd::Pending;
            path::probe()
        })
    }

    /// Server -> client bytes: whole packets to forward and the records of
    /// operations that completed.
    pub(super) fn server_data(&mut self, data: &[u8]) -> Result<FromServer, TooLarge> {
        let mut out = FromServer {
            packets: Vec::new(),
            records: Vec::new(),
            cwd_settled: false,
        };
        for p in self.server.push(data)? {
            if self.probe_reply(&p) {
                out.cwd_settled = true;
                continue;
            }
            out.records.extend(self.reply(&p));
            out.packets.push(p);
        }
        Ok(out)
    }

    /// Takes the reply to interlock's probe; true if `packet` was it.
    fn probe_reply(&mut self, packet: &Bytes) -> bool {
        if self.cwd != Cwd::Pending {
            return false;
        }
        let Some((kind, mut r)) = Reader::new(packet) else {
            return false;
        };
        if r.u32() != Some(CWD_PROBE_ID) {
            return false;
        }
        let name = match kind {
            wire::NAME => r.u32().filter(|n| *n >= 1).and_then(|_| r.string()),
            _ => None,
        };
        self.cwd = match name.filter(|n| n.starts_with('/')) {
            Some(n) => Cwd::Known(path::normalize("/", &n)),
            None => Cwd::Failed,
        };
        true
    }

    fn reply(&mut self, packet: &Bytes) -> Vec<Record> {
        let Some((kind, mut r)) = Reader::new(packet) else {
            return Vec::new();
        };
        let Some(id) = r.u32() else {
            return Vec::new();
        };
        match kind {
            wire::HANDLE => {
                let opened = r.bytes().zip(self.pending.remove(&id));
                if let Some((handle, (ops, started))) = opened
                    && let Some(op) = ops.into_iter().next()
                {
                    let file = OpenFile {
                        op,
                        started,
                        read: 0,
                        written: 0,
                    };
                    self.open.insert(handle, file);
                }
                Vec::new()
            }
            wire::DATA => {
                let handle = self.reads.remove(&id);
                let n = r.bytes().map_or(0, |b| b.len() as u64);
                if let Some(f) = handle.and_then(|h| self.open.get_mut(&h)) {
                    f.read += n;
                }
                Vec::new()
            }
            wire::STATUS => {
                let Some(code) = r.u32() else {
                    return Vec::new();
                };
                self.reads.remove(&id);
                if let Some(handle) = self.closes.remove(&id) {
                    let Some(f) = self.open.remove(&handle) else {
                        return Vec::new();
                    };
                    let text = match f.op.kind {
                        CommandKind::FileRead => format!("{}: {} bytes read", f.op.text, f.read),
                        _ => format!("{}: {} bytes written", f.op.text, f.written),
                    };
                    return vec![command(f.op.kind, text, code, f.started)];
                }
                let Some((ops, started)) = self.pending.remove(&id) else {
                    return Vec::new();
                };
                ops.into_iter()
                    .map(|op| command(op.kind, op.text, code, started))
                    .collect()
            }
            _ => Vec::new(),
        }
    }
}

/// A request with two paths, each decided as `kind`.
fn two(kind: CommandKind, a: String, b: String) -> Vec<(CommandKind, Raw)> {
    vec![(kind, Raw::Client(a)), (kind, Raw::Client(b))]
}

fn extended(r: &mut Reader) -> Option<Vec<(CommandKind, Raw)>> {
    let name = r.string()?;
    Some(match name.as_str() {
        "posix-rename@openssh.com" => two(CommandKind::FileRename, r.string()?, r.string()?),
        "hardlink@openssh.com" => two(CommandKind::FileWrite, r.string()?, r.string()?),
        "lsetstat@openssh.com" => client(CommandKind::FileWrite, r.string()?),
        _ => Vec::new(),
    })
}

impl SftpTracker {
    /// The operations still in flight when the channel ended (a peer went
    /// away mid-transfer): each open file with the bytes moved so far, and
    /// each forwarded request that never got its reply, without a status.
    pub(super) fn unfinished(&mut self) -> Vec<Record> {
        let mut out: Vec<(Instant, Record)> = Vec::new();
        for (_, f) in self.open.drain() {
            let text = match f.op.kind {
                CommandKind::FileRead => {
                    format!("{}: {} bytes read (unfinished)", f.op.text, f.read)
                }
                _ => format!("{}: {} bytes written (unfinished)", f.op.text, f.written),
            };
            out.push((f.started, unfinished(f.op.kind, text, f.started)));
        }
        for (_, (ops, started)) in self.pending.drain() {
            for op in ops {
                let text = format!("{} (unfinished)", op.text);
                out.push((started, unfinished(op.kind, text, started)));
            }
        }
        self.reads.clear();
        self.closes.clear();
        out.sort_by_key(|(started, _)| *started);
        out.into_iter().map(|(_, r)| r).collect()
    }
}

fn unfinished(kind: CommandKind, text: String, started: Instant) -> Record {
    Record::Command {
        kind,
        text,
        exit_status: None,
        exit_signal: None,
        duration_ms: millis(started),
        recording: None,
    }
}

/// A completed file operation; `exit_status` is the SFTP status code (0 is OK).
fn command(kind: CommandKind, text: String, code: u32, started: Instant) -> Record {
    Record::Command {
        kind,
        text,
        exit_status: Some(code),
        exit_signal: None,
        duration_ms: millis(started),
        recording: None,
    }
}

/// The reply to a refused request.
pub(super) fn permission_denied(id: u32, message: &str) -> Bytes {
    wire::status(id, wire::FX_PERMISSION_DENIED, message)
}

#[cfg(test)]
mod tests;
