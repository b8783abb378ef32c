//! The client -> upstream direction of a relayed session channel: data
//! (typed lines reconstructed on a PTY, sftp operations decided one by
//! one), EOF, window changes and signals.

use bytes::Bytes;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, client};

use super::{
    SshError,
    decision::{self, Decided},
    relay::{Shared, Tap},
    sftp::{self, ClientPacket, Unresolved},
};
use crate::gate::{Held, Record, Request};

/// The client side's reader and the upstream side's writer.
pub(super) struct Inbound<'a> {
    cr: &'a mut ChannelReadHalf,
    uw: &'a ChannelWriteHalf<client::Msg>,
    /// Client data not yet forwarded, in order (a hold can queue more).
    pending: Vec<Bytes>,
    client_eof: bool,
    eof_sent: bool,
}

impl<'a> Inbound<'a> {
    pub(super) fn new(
        cr: &'a mut ChannelReadHalf,
        uw: &'a ChannelWriteHalf<client::Msg>,
        pending: Vec<Bytes>,
        client_eof: bool,
    ) -> Inbound<'a> {
        Inbound {
            cr,
            uw,
            pending,
            client_eof,
            eof_sent: false,
        }
    }
}

/// Client -> upstream until the client closes the channel.
pub(super) async fn run(shared: &Shared<'_>, mut i: Inbound<'_>) -> Result<(), SshError> {
    drain(shared, &mut i).await?;
    loop {
        match i.cr.wait().await {
            Some(ChannelMsg::Data { data }) => {
                i.pending.push(data);
                drain(shared, &mut i).await?;
            }
            Some(ChannelMsg::Eof) => {
                i.client_eof = true;
                drain(shared, &mut i).await?;
            }
            Some(ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            }) => {
                if let Tap::Terminal(Some(cast), _) = &mut *shared.tap() {
                    let _ = cast.resize(col_width, row_height);
                }
                let (w, h) = (pix_width, pix_height);
                let _ = i.uw.window_change(col_width, row_height, w, h).await;
            }
            Some(ChannelMsg::Signal { signal }) => {
                let _ = i.uw.signal(signal).await;
            }
            Some(ChannelMsg::Close) | None => return Ok(()),
            Some(_) => {}
        }
    }
}

/// Forwards queued client data in order, then the client's EOF once.
async fn drain(shared: &Shared<'_>, i: &mut Inbound<'_>) -> Result<(), SshError> {
    while !i.pending.is_empty() {
        let data = i.pending.remove(0);
        client_data(shared, i, data).await?;
    }
    if i.client_eof && !i.eof_sent {
        i.eof_sent = true;
        let _ = i.uw.eof().await;
    }
    Ok(())
}

/// What one client data message turned into.
enum Through {
    Forward(Bytes, Vec<String>),
    Sftp(Vec<ClientPacket>),
}

async fn client_data(
    shared: &Shared<'_>,
    i: &mut Inbound<'_>,
    data: Bytes,
) -> Result<(), SshError> {
    let through = {
        let mut tap = shared.tap();
        match &mut *tap {
            Tap::Plain => Through::Forward(data, Vec::new()),
            Tap::Terminal(cast, lines) => {
                if let Some(cast) = cast {
                    cast.input(&data)?;
                }
                let typed = lines.feed(&data);
                Through::Forward(data, typed)
            }
            Tap::Sftp(tracker) => Through::Sftp(
                tracker
                    .client_data(&data)
                    .map_err(|e| SshError::Sftp(format!("from client: {e}")))?,
            ),
        }
    };
    match through {
        Through::Forward(data, typed) => {
            for text in typed {
                shared.ctx.gate.record(Record::ShellLine { text }).await;
            }
            i.uw.data_bytes(data).await?;
        }
        Through::Sftp(packets) => {
            for packet in packets {
                sftp_packet(shared, i, packet).await?;
            }
        }
    }
    Ok(())
}

/// Decides one sftp request, each of its paths on its own; a refused one
/// gets PERMISSION_DENIED (and a line on stderr) instead of reaching the
/// server. A relative path waits until the server said the working
/// directory.
async fn sftp_packet(
    shared: &Shared<'_>,
    i: &mut Inbound<'_>,
    packet: ClientPacket,
) -> Result<(), SshError> {
    let ops = loop {
        // Created before the check, so a wake-up between the two is kept.
        let settled = shared.cwd_settled.notified();
        let resolved = match &*shared.tap() {
            Tap::Sftp(tracker) => tracker.ops(&packet),
            _ => Ok(Vec::new()),
        };
        let line = match resolved {
            Ok(ops) => break ops,
            Err(Unresolved::Pending) => {
                settled.await;
                continue;
            }
            Err(Unresolved::NoCwd) => {
                "interlock: a relative path cannot be decided: the server did not say its working directory"
            }
            Err(Unresolved::ReservedId) => {
                "interlock: request id 4294967295 is reserved by interlock at the start of a session"
            }
        };
        shared.stderr(line).await;
        return shared
            .to_client(sftp::permission_denied(packet.id, line))
            .await;
    };
    for op in &ops {
        let request = Request::Command {
            kind: op.kind,
            text: op.text.clone(),
        };
        let verdict = match decision::decide(shared.ctx.gate.as_ref(), &request).await {
            Decided::Run => Ok(()),
            Decided::Refuse(line) => Err(line),
            Decided::Hold(held, notice) => {
                shared.stderr(&notice).await;
                hold(i, held).await?
            }
        };
        if let Err(line) = verdict {
            shared.stderr(&line).await;
            return shared
                .to_client(sftp::permission_denied(packet.id, &line))
                .await;
        }
    }
    let probe = match &mut *shared.tap() {
        Tap::Sftp(tracker) => tracker.forwarded(&packet, ops),
        _ => None,
    };
    i.uw.data_bytes(packet.bytes).await?;
    if let Some(probe) = probe {
        i.uw.data_bytes(probe).await?;
    }
    Ok(())
}

/// Waits for a hold while queueing what the client sends meanwhile; a
/// client that goes away drops the hold, which withdraws it.
async fn hold(i: &mut Inbound<'_>, held: Held) -> Result<Result<(), String>, SshError> {
    let outcome = decision::outcome(held);
    tokio::pin!(outcome);
    loop {
        tokio::select! {
            o = &mut outcome => return Ok(o),
            msg = i.cr.wait() => match msg {
                Some(ChannelMsg::Data { data }) => i.pending.push(data),
                Some(ChannelMsg::Eof) => i.client_eof = true,
                Some(ChannelMsg::Close) | None => return Err(SshError::ClientClosed),
                Some(_) => {}
            },
        }
    }
}
