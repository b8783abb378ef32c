//! One session channel: collects the client's setup requests (pty-req,
//! env), decides the exec / shell / subsystem request with the gate before
//! anything runs upstream, tells the client about blocks and holds, then
//! hands over to the relay. Setup requests that carry the job's input are
//! each decided before they reach the server: `env` by the target's
//! `upstream.env`, agent and X11 forwarding by the gate; a pty-req's
//! terminal name, size and modes are relayed (they configure the terminal
//! the decided command gets, and run nothing).

use std::sync::Arc;

use bytes::Bytes;
use russh::{
    Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, client,
    server::{self, Msg},
};

use super::{
    SshError,
    decision::{self, Decided},
    relay::{self, Relay},
    server::SessionCtx,
    upstream::Upstream,
};
use crate::gate::{CommandKind, Record, Request};

/// The terminal the client asked for.
#[derive(Clone, Debug)]
pub(super) struct Pty {
    pub(super) term: String,
    pub(super) cols: u32,
    pub(super) rows: u32,
}

/// What the client asked the channel to run.
#[derive(Clone, Debug)]
pub(super) enum Start {
    Exec(String),
    Shell,
    Subsystem(String),
}

impl Start {
    pub(super) fn kind_and_text(&self) -> (CommandKind, String) {
        match self {
            Start::Exec(cmd) => (CommandKind::Exec, cmd.clone()),
            Start::Shell => (CommandKind::Shell, "shell".to_string()),
            Start::Subsystem(name) => (CommandKind::Subsystem, name.clone()),
        }
    }
}

/// Whether an exec command runs the sftp server binary itself
/// (`ssh host /usr/lib/openssh/sftp-server`): it speaks sftp like the
/// subsystem, so it is decided as the subsystem too and its file
/// operations are inspected. Anything that is not sftp then ends the
/// channel (the stream cannot be followed).
pub(super) fn runs_sftp_server(command: &str) -> bool {
    command.contains("sftp-server")
}

/// The upstream channel's halves.
pub(super) type UpChannel = (ChannelReadHalf, ChannelWriteHalf<client::Msg>);

/// A session channel being set up.
pub(super) struct ChannelTask {
    ctx: Arc<SessionCtx>,
    cr: ChannelReadHalf,
    cw: ChannelWriteHalf<Msg>,
    handle: server::Handle,
    upstream: Arc<Upstream>,
    up: Option<UpChannel>,
    pty: Option<Pty>,
    /// Client data and EOF that arrived before the command started.
    pending: Vec<Bytes>,
    client_eof: bool,
}

/// Setup ended without anything to run (client closed, or an error).
struct Gone;

impl ChannelTask {
    pub(super) fn new(
        ctx: Arc<SessionCtx>,
        channel: Channel<Msg>,
        handle: server::Handle,
        upstream: Arc<Upstream>,
    ) -> ChannelTask {
        let (cr, cw) = channel.split();
        ChannelTask {
            ctx,
            cr,
            cw,
            handle,
            upstream,
            up: None,
            pty: None,
            pending: Vec::new(),
            client_eof: false,
        }
    }

    /// Runs the channel to its end.
    pub(super) async fn run(mut self) {
        let Ok(start) = self.setup().await else {
            self.shut_upstream().await;
            return;
        };
        let (kind, text) = start.kind_and_text();
        let mut requests = vec![Request::Command { kind, text }];
        // What the command does: a shell reading its input, files it writes.
        if let Start::Exec(cmd) = &start {
            match super::meaning::exec_requests(cmd) {
                Ok(extra) => requests.extend(extra),
                Err(line) => {
                    self.refuse(&line).await;
                    return;
                }
            }
        }
        if matches!(&start, Start::Exec(cmd) if runs_sftp_server(cmd)) {
            requests.push(Request::Command {
                kind: CommandKind::Subsystem,
                text: "sftp".into(),
            });
        }
        for request in requests {
            let refusal = match decision::decide(self.ctx.gate.as_ref(), &request).await {
                Decided::Run => None,
                Decided::Refuse(line) => Some(line),
                Decided::Hold(held, notice) => {
                    self.stderr(&notice).await;
                    match self.wait_hold(held).await {
                        Ok(Ok(())) => None,
                        Ok(Err(line)) => Some(line),
                        Err(Gone) => {
                            self.shut_upstream().await;
                            return;
                        }
                    }
                }
            };
            if let Some(line) = refusal {
                self.refuse(&line).await;
                return;
            }
        }
        match self.begin(&start).await {
            Ok(up) => {
                let relay = Relay {
                    ctx: self.ctx,
                    id: self.cw.id(),
                    cr: self.cr,
                    cw: self.cw,
                    handle: self.handle,
                    up,
                    pty: self.pty,
                    pending: self.pending,
                    client_eof: self.client_eof,
                };
                relay::run(relay, start).await;
            }
            Err(e) => self.refuse(&e.client_reply()).await,
        }
    }

    /// Reads requests until exec, shell or subsystem.
    async fn setup(&mut self) -> Result<Start, Gone> {
        loop {
            let Some(msg) = self.cr.wait().await else {
                return Err(Gone);
            };
            match msg {
                ChannelMsg::RequestPty {
                    want_reply,
                    term,
                    col_width,
                    row_height,
                    pix_width,
                    pix_height,
                    terminal_modes,
                } => {
                    let ok = match self.up().await {
                        Ok((_, w)) => w
                            .request_pty(
                                false,
                                &term,
                                col_width,
                                row_height,
                                pix_width,
                                pix_height,
                                &terminal_modes,
                            )
                            .await
                            .is_ok(),
                        Err(_) => false,
                    };
                    self.pty = Some(Pty {
                        term,
                        cols: col_width,
                        rows: row_height,
                    });
                    self.reply(want_reply, ok).await;
                }
                // Answered by the session's handler (`env_request`), not here: russh
                // hands every `env` on as `want_reply: true`, and a reply sent through
                // the handle goes to whichever request of the channel is last, which
                // after OpenSSH's `env` (sent without want_reply) is its exec.
                ChannelMsg::SetEnv {
                    variable_name,
                    variable_value,
                    ..
                } => self.env(variable_name, variable_value).await,
                ChannelMsg::WindowChange {
                    col_width,
                    row_height,
                    pix_width,
                    pix_height,
                } => {
                    self.resize(col_width, row_height, pix_width, pix_height)
                        .await
                }
                ChannelMsg::Exec {
                    want_reply,
                    command,
                } => {
                    self.reply(want_reply, true).await;
                    return Ok(Start::Exec(String::from_utf8_lossy(&command).into_owned()));
                }
                ChannelMsg::RequestShell { want_reply } => {
                    self.reply(want_reply, true).await;
                    return Ok(Start::Shell);
                }
                ChannelMsg::RequestSubsystem { want_reply, name } => {
                    self.reply(want_reply, true).await;
                    return Ok(Start::Subsystem(name));
                }
                // OpenSSH sends this without want_reply; russh has answered
                // failure if a reply was wanted. The gate decides the relay.
                ChannelMsg::AgentForward { .. } => self.agent().await,
                ChannelMsg::RequestX11 {
                    want_reply,
                    single_connection,
                    x11_authentication_protocol: proto,
                    x11_authentication_cookie: cookie,
                    x11_screen_number: screen,
                } => {
                    let ok = self.x11(single_connection, proto, cookie, screen).await;
                    self.reply(want_reply, ok).await;
                }
                ChannelMsg::Data { data } => self.pending.push(data),
                ChannelMsg::Eof => self.client_eof = true,
                ChannelMsg::Close => return Err(Gone),
                _ => {}
            }
        }
    }

    /// An `env` request, relayed only if the target's `upstream.env` lists
    /// the name: with sshd's `AcceptEnv`, `LD_PRELOAD`, `BASH_ENV` or
    /// `GIT_SSH_COMMAND` would choose what runs on the server past every
    /// command rule. Recorded either way (a refused one by name only); the
    /// channel goes on. The client's reply, if it asked for one, was given
    /// by the handler from the same `upstream.env` check.
    async fn env(&mut self, name: String, value: String) {
        let allowed = self.ctx.target.env_allowed(&name);
        let record = Record::Env {
            name: name.clone(),
            value: allowed.then(|| value.clone()),
            allowed,
        };
        self.ctx.gate.record(record).await;
        if !allowed {
            return;
        }
        if let Ok((_, w)) = self.up().await {
            // Relayed without want_reply: the client has had its answer.
            let _ = w.set_env(false, name, value).await;
        }
    }

    /// Agent forwarding, if the gate allows it.
    async fn agent(&mut self) {
        if !self.ask(CommandKind::AgentForward, "agent".into()).await {
            return;
        }
        let handle = self.handle.clone();
        let Ok((_, w)) = self.up().await else { return };
        if w.agent_forward(false).await.is_ok() {
            self.ctx.grants.allow_agent(handle);
        }
    }

    /// X11 forwarding, if the gate allows it; returns whether it is on.
    async fn x11(&mut self, single: bool, proto: String, cookie: String, screen: u32) -> bool {
        if !self.ask(CommandKind::X11, format!("screen {screen}")).await {
            return false;
        }
        let handle = self.handle.clone();
        let Ok((_, w)) = self.up().await else {
            return false;
        };
        let ok = w
            .request_x11(false, single, proto, cookie, screen)
            .await
            .is_ok();
        if ok {
            self.ctx.grants.allow_x11(handle);
        }
        ok
    }

    /// Decides a forwarding request; a refusal or hold notice goes to the
    /// client's stderr.
    async fn ask(&self, kind: CommandKind, text: String) -> bool {
        let request = Request::Command { kind, text };
        let decided = match decision::decide(self.ctx.gate.as_ref(), &request).await {
            Decided::Run => Ok(()),
            Decided::Refuse(line) => Err(line),
            Decided::Hold(held, notice) => {
                self.stderr(&notice).await;
                decision::outcome(held).await
            }
        };
        match decided {
            Ok(()) => true,
            Err(line) => {
                self.stderr(&line).await;
                false
            }
        }
    }

    /// Waits for a hold while following the client: a client that goes
    /// away drops the hold, which withdraws it.
    async fn wait_hold(&mut self, held: crate::gate::Held) -> Result<Result<(), String>, Gone> {
        let outcome = decision::outcome(held);
        tokio::pin!(outcome);
        loop {
            tokio::select! {
                r = &mut outcome => return Ok(r),
                msg = self.cr.wait() => match msg {
                    None | Some(ChannelMsg::Close) => return Err(Gone),
                    Some(ChannelMsg::Data { data }) => self.pending.push(data),
                    Some(ChannelMsg::Eof) => self.client_eof = true,
                    Some(ChannelMsg::WindowChange { col_width, row_height, pix_width, pix_height }) => {
                        self.resize(col_width, row_height, pix_width, pix_height).await;
                    }
                    Some(_) => {}
                },
            }
        }
    }

    /// Follows a window change before the command started.
    async fn resize(&mut self, cols: u32, rows: u32, pix_w: u32, pix_h: u32) {
        if let Some(p) = self.pty.as_mut() {
            p.cols = cols;
            p.rows = rows;
        }
        if let Some((_, w)) = self.up.as_ref() {
            let _ = w.window_change(cols, rows, pix_w, pix_h).await;
        }
    }

    /// The upstream channel, opened on first use.
    async fn up(&mut self) -> Result<&mut UpChannel, SshError> {
        if self.up.is_none() {
            let ch = self.upstream.channel_open_session().await?;
            self.up = Some(ch.split());
        }
        self.up.as_mut().ok_or(SshError::UpstreamClosed)
    }

    /// Starts `start` upstream.
    async fn begin(&mut self, start: &Start) -> Result<UpChannel, SshError> {
        let (_, w) = self.up().await?;
        match start {
            Start::Exec(cmd) => w.exec(true, cmd.as_bytes()).await?,
            Start::Shell => w.request_shell(true).await?,
            Start::Subsystem(name) => w.request_subsystem(true, name.as_str()).await?,
        }
        self.up.take().ok_or(SshError::UpstreamClosed)
    }

    async fn reply(&self, want_reply: bool, ok: bool) {
        if !want_reply {
            return;
        }
        let id = self.cw.id();
        let _ = if ok {
            self.handle.channel_success(id).await
        } else {
            self.handle.channel_failure(id).await
        };
    }

    async fn stderr(&self, line: &str) {
        let _ = self
            .cw
            .extended_data_bytes(1, Bytes::from(format!("{line}\r\n")))
            .await;
    }

    /// Tells the client why, exits 1 and closes the channel.
    async fn refuse(mut self, line: &str) {
        self.stderr(line).await;
        let _ = self.cw.exit_status(1).await;
        let _ = self.cw.eof().await;
        let _ = self.cw.close().await;
        self.shut_upstream().await;
    }

    async fn shut_upstream(&mut self) {
        if let Some((_, w)) = self.up.take() {
            let _ = w.close().await;
        }
    }
}
