//! Relays a started session channel both ways: data, extended data, EOF,
//! window changes, signals, exit status and exit signal. A PTY channel is
//! recorded (asciicast) and its typed lines reconstructed; an sftp
//! subsystem has each file operation decided and recorded.
//!
//! Why it cannot deadlock: the two directions run concurrently, so a
//! direction waiting for window space (or for a held sftp operation) never
//! stops this relay from reading the other direction's channel; and the
//! russh in use (`vendor/russh`, see its INTERLOCK-PATCH.md) grants a
//! peer new channel window only for the bytes this relay has *taken out*
//! of the channel, and its session loop never waits for room in a
//! channel's queue for data. So what a peer may send is bounded by the
//! window (at most one window per channel queued here, plus the one
//! message each direction holds while it waits to write), backpressure
//! reaches the peer through SSH flow control, and each session's loop keeps
//! reading its peer, WINDOW_ADJUSTs included, whatever the relay is
//! waiting for. A direction therefore waits only for the window of the
//! other peer, which that peer grants as it consumes; nothing waits for
//! a loop that waits for it.
//!
//! With russh as published (window granted on receipt, then the session
//! loop awaiting room in a bounded queue), both directions saturated and a
//! client that reads slower than it writes stopped both loops for good
//! (issue 13; `relay_flow`
//! `ssh_exec_both_ways_with_a_client_that_reads_slower_than_it_writes`).
//! The forwarding relays (`forward::pipe`, for direct-tcpip and
//! reverse-forwarded channels) rest on the same two properties.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use bytes::Bytes;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig, server};

use super::{
    SshError,
    cast::{CastWriter, LineReader},
    channel::{Pty, Start, UpChannel},
    inbound::{self, Inbound},
    server::{Id, SessionCtx},
    sftp::SftpTracker,
};
use crate::gate::{CommandKind, Record, Side};

/// Everything the relay owns.
pub(super) struct Relay {
    pub(super) ctx: Arc<SessionCtx>,
    pub(super) id: Id,
    pub(super) cr: ChannelReadHalf,
    pub(super) cw: ChannelWriteHalf<server::Msg>,
    pub(super) handle: server::Handle,
    pub(super) up: UpChannel,
    pub(super) pty: Option<Pty>,
    pub(super) pending: Vec<Bytes>,
    pub(super) client_eof: bool,
}

/// What the relay watches on the way through.
pub(super) enum Tap {
    Plain,
    Terminal(Option<CastWriter>, LineReader),
    Sftp(SftpTracker),
}

/// What both directions use.
pub(super) struct Shared<'a> {
    pub(super) ctx: &'a SessionCtx,
    cw: &'a ChannelWriteHalf<server::Msg>,
    /// Held across the awaited write (a tokio lock) so that whole sftp
    /// packets from the two directions never interleave.
    cw_lock: tokio::sync::Mutex<()>,
    /// A std lock: never held across `.await`.
    tap: Mutex<Tap>,
    /// Woken when an sftp session's working directory became known.
    pub(super) cwd_settled: tokio::sync::Notify,
}

impl Shared<'_> {
    pub(super) fn tap(&self) -> MutexGuard<'_, Tap> {
        match self.tap.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Writes `data` to the client as one unit.
    pub(super) async fn to_client(&self, data: Bytes) -> Result<(), SshError> {
        let _turn = self.cw_lock.lock().await;
        self.cw.data_bytes(data).await?;
        Ok(())
    }

    /// Writes one line to the client's stderr.
    pub(super) async fn stderr(&self, line: &str) {
        let _turn = self.cw_lock.lock().await;
        let text = Bytes::from(format!("{line}\r\n"));
        let _ = self.cw.extended_data_bytes(1, text).await;
    }

    pub(super) async fn report(&self, side: Side, e: &SshError) {
        tracing::warn!(session = %self.ctx.id, error = %e, "ssh channel");
        let message = e.to_string();
        self.ctx
            .gate
            .record(Record::ProtocolError { side, message })
            .await;
    }
}

fn nonzero(v: u32, default: u32) -> u32 {
    if v == 0 { default } else { v }
}

fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Picks what to watch for `start`; a recording that cannot be created is
/// reported and the channel runs unrecorded.
async fn tap_for(r: &Relay, start: &Start) -> Tap {
    match (start, &r.pty) {
        (Start::Subsystem(name), _) if name == "sftp" => Tap::Sftp(SftpTracker::default()),
        (Start::Exec(cmd), _) if super::channel::runs_sftp_server(cmd) => {
            Tap::Sftp(SftpTracker::default())
        }
        (Start::Shell | Start::Exec(_), Some(pty)) => {
            let path = r
                .ctx
                .target
                .recording_dir
                .join(format!("{}-{}.cast", r.ctx.id, r.id));
            // A client without a real terminal sends 0x0; players need a size.
            let (cols, rows) = (nonzero(pty.cols, 80), nonzero(pty.rows, 24));
            match CastWriter::create(&path, cols, rows, Some(&pty.term)) {
                Ok(w) => Tap::Terminal(Some(w), LineReader::new()),
                Err(e) => {
                    tracing::warn!(session = %r.ctx.id, error = %e, "ssh recording");
                    let message = e.to_string();
                    let side = Side::Server;
                    r.ctx
                        .gate
                        .record(Record::ProtocolError { side, message })
                        .await;
                    Tap::Terminal(None, LineReader::new())
                }
            }
        }
        _ => Tap::Plain,
    }
}

/// Relays until the upstream closes the channel (after the client went
/// away, the upstream side is closed first), then records the command.
pub(super) async fn run(r: Relay, start: Start) {
    let started = Instant::now();
    let (kind, text) = start.kind_and_text();
    let tap = tap_for(&r, &start).await;
    let Relay {
        ctx,
        id,
        mut cr,
        cw,
        handle,
        up: (mut ur, uw),
        pending,
        client_eof,
        ..
    } = r;
    let shared = Shared {
        ctx: &ctx,
        cw: &cw,
        cw_lock: tokio::sync::Mutex::new(()),
        tap: Mutex::new(tap),
        cwd_settled: tokio::sync::Notify::new(),
    };
    let inbound = Inbound::new(&mut cr, &uw, pending, client_eof);
    let from_client = inbound::run(&shared, inbound);
    let from_upstream = upstream_to_client(&shared, &mut ur, &handle, id, kind);
    tokio::pin!(from_client, from_upstream);
    let exit = tokio::select! {
        status = &mut from_upstream => status,
        outcome = &mut from_client => {
            match &outcome {
                Ok(()) | Err(SshError::ClientClosed) => {}
                Err(e) => shared.report(Side::Client, e).await,
            }
            let _ = uw.close().await;
            from_upstream.await
        }
    };
    // A peer that went away mid-transfer leaves files half written or
    // read: what moved so far is recorded, not dropped.
    let unfinished = match &mut *shared.tap() {
        Tap::Sftp(tracker) => tracker.unfinished(),
        _ => Vec::new(),
    };
    for record in unfinished {
        ctx.gate.record(record).await;
    }
    let tap = std::mem::replace(&mut *shared.tap(), Tap::Plain);
    let recording = match tap {
        Tap::Terminal(Some(cast), _) => match cast.finish() {
            Ok(done) => Some(done),
            Err(e) => {
                shared.report(Side::Server, &e).await;
                None
            }
        },
        _ => None,
    };
    // Recorded before the client sees the channel close, so whoever waits
    // for the client to finish also finds the record.
    let record = Record::Command {
        kind,
        text,
        exit_status: exit.status,
        exit_signal: exit.signal,
        duration_ms: millis(started),
        recording,
    };
    ctx.gate.record(record).await;
    let _ = cw.close().await;
    let _ = uw.close().await;
}

/// How the command upstream ended, as far as the server said.
#[derive(Default)]
struct Exit {
    status: Option<u32>,
    signal: Option<String>,
}

/// The signal's name as SSH spells it (`TERM`, not `SIGTERM`).
fn signal_name(sig: &Sig) -> String {
    match sig {
        Sig::Custom(name) => name.clone(),
        other => format!("{other:?}"),
    }
}

/// Upstream -> client until the upstream closes the channel; returns how
/// the command ended, if the server said.
async fn upstream_to_client(
    shared: &Shared<'_>,
    ur: &mut ChannelReadHalf,
    handle: &server::Handle,
    id: Id,
    kind: CommandKind,
) -> Exit {
    let mut exit = Exit::default();
    // The server's EOF is held until its exit status (or the close): a
    // client may close the channel as soon as it has EOF both ways, and
    // russh answers that close at once, so a status sent after it is lost
    // (OpenSSH's mux clients then exit 255).
    let mut eof_held = false;
    loop {
        match ur.wait().await {
            Some(ChannelMsg::Data { data }) => {
                if let Err(e) = server_data(shared, data).await {
                    // Fail closed: a stream we cannot follow ends the channel.
                    shared.report(Side::Server, &e).await;
                    return exit;
                }
            }
            Some(ChannelMsg::ExtendedData { data, ext }) => {
                let _turn = shared.cw_lock.lock().await;
                let _ = shared.cw.extended_data_bytes(ext, data).await;
            }
            Some(ChannelMsg::Eof) => eof_held = true,
            Some(ChannelMsg::ExitStatus { exit_status: s }) => {
                exit.status = Some(s);
                let _ = shared.cw.exit_status(s).await;
                if std::mem::take(&mut eof_held) {
                    let _ = shared.cw.eof().await;
                }
            }
            Some(ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            }) => {
                exit.signal = Some(self::signal_name(&signal_name));
                let (sig, msg) = (signal_name, error_message);
                let _ = handle
                    .exit_signal_request(id, sig, core_dumped, msg, lang_tag)
                    .await;
                if std::mem::take(&mut eof_held) {
                    let _ = shared.cw.eof().await;
                }
            }
            Some(ChannelMsg::Failure) => {
                let what = match kind {
                    CommandKind::Shell => "shell",
                    CommandKind::Subsystem => "subsystem",
                    _ => "exec",
                };
                shared
                    .stderr(&format!("interlock: upstream refused the {what} request"))
                    .await;
                let _ = shared.cw.exit_status(1).await;
                exit.status = Some(1);
                return exit;
            }
            Some(ChannelMsg::Close) | None => {
                if eof_held {
                    let _ = shared.cw.eof().await;
                }
                return exit;
            }
            Some(_) => {}
        }
    }
}

/// One upstream data message through the tap.
async fn server_data(shared: &Shared<'_>, data: Bytes) -> Result<(), SshError> {
    let (packets, records) = {
        let mut tap = shared.tap();
        match &mut *tap {
            Tap::Plain | Tap::Terminal(None, _) => (vec![data], Vec::new()),
            Tap::Terminal(Some(cast), _) => {
                cast.output(&data)?;
                (vec![data], Vec::new())
            }
            Tap::Sftp(tracker) => {
                let from = tracker
                    .server_data(&data)
                    .map_err(|e| SshError::Sftp(format!("from server: {e}")))?;
                if from.cwd_settled {
                    shared.cwd_settled.notify_waiters();
                }
                (from.packets, from.records)
            }
        }
    };
    // Records first: the client acts on a reply only after it.
    for record in records {
        shared.ctx.gate.record(record).await;
    }
    for p in packets {
        // A client that went away is noticed by the other direction.
        let _ = shared.to_client(p).await;
    }
    Ok(())
}
