//! SFTP inspection: client requests are framed and parsed so each file
//! operation (open for read/write, remove, rename, mkdir, rmdir, setstat)
//! can be decided before it is forwarded; server replies are followed to
//! count bytes per handle and to record each operation when it completes.
//! Replies are forwarded only as whole packets, so a refusal interlock
//! writes never lands inside a server packet.

mod wire;

use std::{collections::HashMap, time::Instant};

use bytes::Bytes;

pub(crate) use wire::TooLarge;
use wire::{Framer, Reader};

use crate::gate::{CommandKind, Record};

/// A file operation the gate decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct FileOp {
    pub(super) kind: CommandKind,
    /// The path, or `old -> new` for a rename.
    pub(super) text: String,
}

/// One whole client packet, with the operation it asks for, if any.
pub(super) struct ClientPacket {
    pub(super) bytes: Bytes,
    pub(super) id: u32,
    pub(super) op: Option<FileOp>,
}

struct OpenFile {
    op: FileOp,
    started: Instant,
    read: u64,
    written: u64,
}

/// Follows one sftp session in both directions.
#[derive(Default)]
pub(super) struct SftpTracker {
    client: Framer,
    server: Framer,
    /// Request id -> operation waiting for its reply (OPEN waits for HANDLE).
    pending: HashMap<u32, (FileOp, Instant)>,
    /// Request id -> handle of a READ or CLOSE waiting for its reply.
    reads: HashMap<u32, Bytes>,
    closes: HashMap<u32, Bytes>,
    open: HashMap<Bytes, OpenFile>,
}

fn op(kind: CommandKind, text: String) -> Option<FileOp> {
    Some(FileOp { kind, text })
}

fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl SftpTracker {
    /// Client -> server bytes; returns whole packets with their operations.
    pub(super) fn client_data(&mut self, data: &[u8]) -> Result<Vec<ClientPacket>, TooLarge> {
        let packets = self.client.push(data)?;
        Ok(packets.into_iter().map(|p| self.classify(p)).collect())
    }

    fn classify(&mut self, bytes: Bytes) -> ClientPacket {
        let parsed = Reader::new(&bytes).and_then(|(kind, mut r)| {
            let id = r.u32()?;
            let op = match kind {
                wire::OPEN => {
                    let path = r.string()?;
                    let flags = r.u32()?;
                    let kind = if flags & !wire::FXF_READ == 0 {
                        CommandKind::FileRead
                    } else {
                        CommandKind::FileWrite
                    };
                    op(kind, path)
                }
                wire::SETSTAT => op(CommandKind::FileWrite, r.string()?),
                // Attributes through a handle, even one opened for reading.
                // Through a handle opened for writing they are part of that
                // write, already decided for the same kind and path (scp
                // sets them after every upload: no second approval).
                wire::FSETSTAT => {
                    let handle = r.bytes()?;
                    match self.open.get(&handle) {
                        Some(f) if f.op.kind == CommandKind::FileWrite => None,
                        Some(f) => op(CommandKind::FileWrite, f.op.text.clone()),
                        None => op(CommandKind::FileWrite, "<unknown handle>".into()),
                    }
                }
                wire::REMOVE | wire::RMDIR => op(CommandKind::FileRemove, r.string()?),
                wire::MKDIR => op(CommandKind::FileMkdir, r.string()?),
                wire::RENAME => {
                    let (from, to) = (r.string()?, r.string()?);
                    op(CommandKind::FileRename, format!("{from} -> {to}"))
                }
                wire::SYMLINK => {
                    let (a, b) = (r.string()?, r.string()?);
                    op(CommandKind::FileWrite, format!("{a} -> {b}"))
                }
                wire::EXTENDED => self.extended(&mut r)?,
                wire::READ => {
                    self.reads.insert(id, r.bytes()?);
                    None
                }
                wire::WRITE => {
                    let handle = r.bytes()?;
                    let _offset = r.u64()?;
                    let data = r.bytes()?;
                    if let Some(f) = self.open.get_mut(&handle) {
                        f.written += data.len() as u64;
                    }
                    None
                }
                wire::CLOSE => {
                    self.closes.insert(id, r.bytes()?);
                    None
                }
                _ => None,
            };
            Some((id, op))
        });
        let (id, op) = parsed.unwrap_or((0, None));
        ClientPacket { bytes, id, op }
    }

    fn extended(&mut self, r: &mut Reader) -> Option<Option<FileOp>> {
        let name = r.string()?;
        Some(match name.as_str() {
            "posix-rename@openssh.com" => {
                let (from, to) = (r.string()?, r.string()?);
                op(CommandKind::FileRename, format!("{from} -> {to}"))
            }
            "hardlink@openssh.com" => {
                let (from, to) = (r.string()?, r.string()?);
                op(CommandKind::FileWrite, format!("{from} -> {to}"))
            }
            "lsetstat@openssh.com" => op(CommandKind::FileWrite, r.string()?),
            _ => None,
        })
    }

    /// An allowed operation was forwarded: wait for its reply.
    pub(super) fn forwarded(&mut self, packet: &ClientPacket) {
        if let Some(op) = &packet.op {
            self.pending.insert(packet.id, (op.clone(), Instant::now()));
        }
    }

    /// Server -> client bytes; returns whole packets to forward and the
    /// records of operations that completed.
    pub(super) fn server_data(
        &mut self,
        data: &[u8],
    ) -> Result<(Vec<Bytes>, Vec<Record>), TooLarge> {
        let packets = self.server.push(data)?;
        let mut records = Vec::new();
        for p in &packets {
            if let Some(record) = self.reply(p) {
                records.push(record);
            }
        }
        Ok((packets, records))
    }

    fn reply(&mut self, packet: &Bytes) -> Option<Record> {
        let (kind, mut r) = Reader::new(packet)?;
        let id = r.u32()?;
        match kind {
            wire::HANDLE => {
                let handle = r.bytes()?;
                let (op, started) = self.pending.remove(&id)?;
                let file = OpenFile {
                    op,
                    started,
                    read: 0,
                    written: 0,
                };
                self.open.insert(handle, file);
                None
            }
            wire::DATA => {
                let handle = self.reads.remove(&id)?;
                let n = r.bytes()?.len() as u64;
                if let Some(f) = self.open.get_mut(&handle) {
                    f.read += n;
                }
                None
            }
            wire::STATUS => {
                let code = r.u32()?;
                self.reads.remove(&id);
                if let Some(handle) = self.closes.remove(&id) {
                    let f = self.open.remove(&handle)?;
                    let text = match f.op.kind {
                        CommandKind::FileRead => format!("{}: {} bytes read", f.op.text, f.read),
                        _ => format!("{}: {} bytes written", f.op.text, f.written),
                    };
                    return Some(command(f.op.kind, text, code, f.started));
                }
                let (op, started) = self.pending.remove(&id)?;
                Some(command(op.kind, op.text, code, started))
            }
            _ => None,
        }
    }
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
        for (_, (op, started)) in self.pending.drain() {
            let text = format!("{} (unfinished)", op.text);
            out.push((started, unfinished(op.kind, text, started)));
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
        duration_ms: millis(started),
    }
}

/// A completed file operation; `exit_status` is the SFTP status code (0 is OK).
fn command(kind: CommandKind, text: String, code: u32, started: Instant) -> Record {
    Record::Command {
        kind,
        text,
        exit_status: Some(code),
        duration_ms: millis(started),
    }
}

/// The reply to a refused request.
pub(super) fn permission_denied(id: u32, message: &str) -> Bytes {
    wire::status(id, wire::FX_PERMISSION_DENIED, message)
}

#[cfg(test)]
mod tests;
