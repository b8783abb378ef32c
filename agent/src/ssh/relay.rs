//! Relays a started session channel both ways: data, extended data, EOF,
//! window changes, signals, exit status and exit signal. A PTY shell is
//! recorded (asciicast) and its typed lines reconstructed; an sftp
//! subsystem has each file operation decided and recorded.

use std::{sync::Arc, time::Instant};

use bytes::Bytes;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, server};

use super::{
    SshError,
    cast::{CastWriter, LineReader},
    channel::{Pty, Start, UpChannel},
    decision::{self, Decided},
    server::{Id, SessionCtx},
    sftp::{self, SftpTracker},
};
use crate::gate::{CommandKind, Held, Record, Side};

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
enum Tap {
    Plain,
    Terminal(Option<CastWriter>, LineReader),
    Sftp(SftpTracker),
}

fn nonzero(v: u32, default: u32) -> u32 {
    if v == 0 { default } else { v }
}

fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Relays until the upstream closes the channel or the client goes away,
/// then records the command.
pub(super) async fn run(mut r: Relay, start: Start) {
    let started = Instant::now();
    let (kind, text) = start.kind_and_text();
    let mut tap = match (&start, &r.pty) {
        (Start::Subsystem(name), _) if name == "sftp" => Tap::Sftp(SftpTracker::default()),
        (Start::Shell | Start::Exec(_), Some(pty)) => {
            let path = r
                .ctx
                .target
                .recording_dir
                .join(format!("{}-{}.cast", r.ctx.id, r.id));
            // A client without a real terminal sends 0x0; players need a size.
            let (cols, rows) = (nonzero(pty.cols, 80), nonzero(pty.rows, 24));
            let cast = match CastWriter::create(&path, cols, rows, Some(&pty.term)) {
                Ok(w) => Some(w),
                Err(e) => {
                    report(&r.ctx, Side::Server, &e).await;
                    None
                }
            };
            Tap::Terminal(cast, LineReader::new())
        }
        _ => Tap::Plain,
    };
    let mut eof_sent = false;
    let mut outcome = drain(&mut r, &mut tap, &mut eof_sent).await;
    let mut exit_status = None;
    let mut client_open = outcome.is_ok();
    while outcome.is_ok() {
        tokio::select! {
            msg = r.cr.wait(), if client_open => match msg {
                Some(ChannelMsg::Data { data }) => {
                    r.pending.push(data);
                    outcome = drain(&mut r, &mut tap, &mut eof_sent).await;
                }
                Some(ChannelMsg::Eof) => {
                    r.client_eof = true;
                    outcome = drain(&mut r, &mut tap, &mut eof_sent).await;
                }
                Some(ChannelMsg::WindowChange { col_width, row_height, pix_width, pix_height }) => {
                    if let Tap::Terminal(Some(cast), _) = &mut tap {
                        let _ = cast.resize(col_width, row_height);
                    }
                    let _ = r.up.1.window_change(col_width, row_height, pix_width, pix_height).await;
                }
                Some(ChannelMsg::Signal { signal }) => { let _ = r.up.1.signal(signal).await; }
                Some(ChannelMsg::Close) | None => {
                    client_open = false;
                    let _ = r.up.1.close().await;
                }
                Some(_) => {}
            },
            msg = r.up.0.wait() => match msg {
                Some(ChannelMsg::Data { data }) => outcome = server_data(&mut r, &mut tap, data).await,
                Some(ChannelMsg::ExtendedData { data, ext }) => {
                    let _ = r.cw.extended_data_bytes(ext, data).await;
                }
                Some(ChannelMsg::Eof) => { let _ = r.cw.eof().await; }
                Some(ChannelMsg::ExitStatus { exit_status: s }) => {
                    exit_status = Some(s);
                    let _ = r.cw.exit_status(s).await;
                }
                Some(ChannelMsg::ExitSignal { signal_name, core_dumped, error_message, lang_tag }) => {
                    let _ = r.handle
                        .exit_signal_request(r.id, signal_name, core_dumped, error_message, lang_tag)
                        .await;
                }
                Some(ChannelMsg::Failure) => {
                    let line = format!("interlock: upstream refused the {} request\r\n", kind_name(kind));
                    let _ = r.cw.extended_data_bytes(1, Bytes::from(line)).await;
                    let _ = r.cw.exit_status(1).await;
                    break;
                }
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            },
        }
    }
    match &outcome {
        Ok(()) | Err(SshError::ClientClosed) => {}
        Err(e) => report(&r.ctx, Side::Client, e).await,
    }
    let text = match &tap {
        Tap::Terminal(Some(cast), _) if matches!(start, Start::Shell) => {
            format!("shell (recording {})", cast.path().display())
        }
        _ => text,
    };
    // Recorded before the client sees the channel close, so whoever waits
    // for the client to finish also finds the record.
    r.ctx
        .gate
        .record(Record::Command {
            kind,
            text,
            exit_status,
            duration_ms: millis(started),
        })
        .await;
    let _ = r.cw.close().await;
    let _ = r.up.1.close().await;
}

fn kind_name(kind: CommandKind) -> &'static str {
    match kind {
        CommandKind::Shell => "shell",
        CommandKind::Subsystem => "subsystem",
        _ => "exec",
    }
}

async fn report(ctx: &SessionCtx, side: Side, e: &SshError) {
    tracing::warn!(session = %ctx.id, error = %e, "ssh channel");
    let message = e.to_string();
    ctx.gate
        .record(Record::ProtocolError { side, message })
        .await;
}

/// Forwards queued client data in order (a hold inside may queue more),
/// then the client's EOF once.
async fn drain(r: &mut Relay, tap: &mut Tap, eof_sent: &mut bool) -> Result<(), SshError> {
    while !r.pending.is_empty() {
        let data = r.pending.remove(0);
        client_data(r, tap, data).await?;
    }
    if r.client_eof && !*eof_sent {
        *eof_sent = true;
        let _ = r.up.1.eof().await;
    }
    Ok(())
}

/// Client -> upstream data.
async fn client_data(r: &mut Relay, tap: &mut Tap, data: Bytes) -> Result<(), SshError> {
    match tap {
        Tap::Plain => {}
        Tap::Terminal(cast, lines) => {
            if let Some(cast) = cast {
                cast.input(&data)?;
            }
            for line in lines.feed(&data) {
                let record = Record::Command {
                    kind: CommandKind::Shell,
                    text: line,
                    exit_status: None,
                    duration_ms: 0,
                };
                r.ctx.gate.record(record).await;
            }
        }
        Tap::Sftp(tracker) => return sftp_client(r, tracker, &data).await,
    }
    r.up.1.data_bytes(data).await?;
    Ok(())
}

/// Upstream -> client data.
async fn server_data(r: &mut Relay, tap: &mut Tap, data: Bytes) -> Result<(), SshError> {
    match tap {
        Tap::Plain => {}
        Tap::Terminal(cast, _) => {
            if let Some(cast) = cast {
                cast.output(&data)?;
            }
        }
        Tap::Sftp(tracker) => {
            let (packets, records) = tracker
                .server_data(&data)
                .map_err(|e| SshError::Sftp(format!("from server: {e}")))?;
            // Records first: the client acts on the reply only after it.
            for record in records {
                r.ctx.gate.record(record).await;
            }
            for p in packets {
                r.cw.data_bytes(p).await?;
            }
            return Ok(());
        }
    }
    r.cw.data_bytes(data).await?;
    Ok(())
}

/// Decides each sftp file operation; refused ones get PERMISSION_DENIED.
async fn sftp_client(
    r: &mut Relay,
    tracker: &mut SftpTracker,
    data: &[u8],
) -> Result<(), SshError> {
    let packets = tracker
        .client_data(data)
        .map_err(|e| SshError::Sftp(format!("from client: {e}")))?;
    for packet in packets {
        if let Some(op) = &packet.op {
            let request = crate::gate::Request::Command {
                kind: op.kind,
                text: op.text.clone(),
            };
            let verdict = match decision::decide(r.ctx.gate.as_ref(), &request).await {
                Decided::Run => Ok(()),
                Decided::Refuse(line) => Err(line),
                Decided::Hold(held, notice) => {
                    stderr(r, &notice).await;
                    hold(r, held).await?
                }
            };
            if let Err(line) = verdict {
                stderr(r, &line).await;
                r.cw.data_bytes(sftp::permission_denied(packet.id, &line))
                    .await?;
                continue;
            }
        }
        tracker.forwarded(&packet);
        r.up.1.data_bytes(packet.bytes).await?;
    }
    Ok(())
}

async fn stderr(r: &Relay, line: &str) {
    let _ =
        r.cw.extended_data_bytes(1, Bytes::from(format!("{line}\r\n")))
            .await;
}

/// Waits for a hold while queueing what the client sends meanwhile; a
/// client that goes away drops the hold, which withdraws it.
async fn hold(r: &mut Relay, held: Held) -> Result<Result<(), String>, SshError> {
    let outcome = decision::outcome(held);
    tokio::pin!(outcome);
    loop {
        tokio::select! {
            o = &mut outcome => return Ok(o),
            msg = r.cr.wait() => match msg {
                Some(ChannelMsg::Data { data }) => r.pending.push(data),
                Some(ChannelMsg::Eof) => r.client_eof = true,
                Some(ChannelMsg::Close) | None => return Err(SshError::ClientClosed),
                Some(_) => {}
            },
        }
    }
}
