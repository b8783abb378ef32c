//! The client side: a russh server that terminates the client's SSH
//! connection, decides the session with the gate during authentication,
//! connects upstream on the first channel and hands each channel to its
//! own task. The client leg is bounded as sshd bounds it: a grace time to
//! present a credential, keepalives that drop a peer that stopped
//! answering, and a cap on channels open at once.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use russh::{
    Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet,
    server::{self, Auth, ChannelOpenHandle, Msg, Session, VerifiedPublicKey},
};
use tokio::{net::TcpStream, sync::Mutex};

use super::{
    SshError, SshTarget, channel, forward,
    reverse::Grants,
    upstream::{self, Upstream},
};
use crate::gate::{Gate, Held, HoldOutcome, Record, Request, Side, Verdict};

/// How long a finished session waits for its channel tasks to record their last words.
const CHANNELS_FINISH: Duration = Duration::from_secs(10);

/// How long a client may take from connect to presenting a credential
/// interlock accepts (sshd's `LoginGraceTime`); the wait for a held
/// session's approval after that does not count.
const AUTH_GRACE: Duration = Duration::from_secs(120);

/// Keepalives: a client that leaves this many unanswered, one every
/// interval, is disconnected (sshd's `ClientAliveInterval`/`CountMax`).
const KEEPALIVE_EVERY: Duration = Duration::from_secs(30);
const KEEPALIVE_MAX: usize = 4;

/// Channels (sessions and forwardings) one connection may have open at once.
const MAX_CHANNELS: usize = 64;

/// The ciphers offered to jobs' clients: AES-GCM only. In SSH the client's order decides, and
/// OpenSSH's default order starts with ChaCha20-Poly1305, which costs the daemon (it decrypts
/// and re-encrypts every byte) several times what AES-GCM does with AES instructions: on a
/// 256 MB download it was the daemon's largest cost. Every OpenSSH since 6.2 offers AES-GCM.
const CLIENT_LEG_CIPHERS: &[russh::cipher::Name] =
    &[russh::cipher::AES_128_GCM, russh::cipher::AES_256_GCM];

/// What every task of one proxied connection shares.
pub(super) struct SessionCtx {
    pub(super) id: String,
    pub(super) gate: Arc<dyn Gate>,
    pub(super) target: SshTarget,
    /// Reverse channels (agent, X11, remote forwards) the gate allowed.
    pub(super) grants: Arc<Grants>,
    /// Connected on the first channel; a tokio lock because connecting awaits.
    upstream: Mutex<Option<Arc<Upstream>>>,
    /// The session's channel and forwarding tasks: the session ends (and `session_ended` is
    /// recorded) only after they have recorded what they saw, e.g. an upload cut short.
    tasks: tokio_util::task::TaskTracker,
}

impl SessionCtx {
    /// The upstream session, connecting it on first use as `user`.
    pub(super) async fn upstream(&self, user: &str) -> Result<Arc<Upstream>, SshError> {
        // Held across the connect so that two channels opened at once share one session.
        let mut slot = self.upstream.lock().await;
        if let Some(up) = slot.as_ref().filter(|up| !up.is_closed()) {
            return Ok(Arc::clone(up));
        }
        // Checked at authentication too; here so that no path reaches upstream as a user the
        // job chose.
        let user = self
            .target
            .login_user(user)
            .map_err(SshError::LoginRefused)?;
        let grants = Arc::clone(&self.grants);
        let up = Arc::new(upstream::connect(&self.target, &user, grants).await?);
        *slot = Some(Arc::clone(&up));
        Ok(up)
    }
}

/// How the session decision went.
enum SessionState {
    Undecided,
    Allowed,
    Blocked,
    Held(Held),
    /// Refused after the client authenticated with a job token (the
    /// decision needs the token, which comes after the banner): the client
    /// is let in only to be told why on its first channel, then disconnected.
    Refused(String),
}

/// The per-connection russh handler.
struct ClientSide {
    ctx: Arc<SessionCtx>,
    state: SessionState,
    /// The user the client authenticates as; set by its first attempt, which
    /// later attempts must repeat.
    user: String,
    /// Notices the client leaving while a held session waits; dropped once
    /// authentication is over (a duplicate fd keeps the connection open).
    watch: Option<TcpStream>,
    /// What the session decision told the client, when it was made after the banner.
    refusal: Option<String>,
    /// A credential was presented and accepted for a decision (ends the
    /// authentication grace time).
    admitted: Arc<AtomicBool>,
}

/// Proxies one client connection that was redirected to interlock: the
/// client is authenticated per `target.client_auth` (its credential is never
/// forwarded), the session is decided by `gate`, and each channel is relayed
/// to the upstream sshd with the injected credential, with exec, shell,
/// subsystem, sftp file operations and forwarding requests decided first.
///
/// # Errors
/// The SSH handshake with the client failed, or the session ended with a
/// protocol error. A client that simply goes away is `Ok`.
pub async fn serve(
    client: TcpStream,
    target: SshTarget,
    gate: Arc<dyn Gate>,
) -> Result<(), SshError> {
    let _ = client.set_nodelay(true);
    let mut methods = MethodSet::empty();
    if target.client_auth.publickey {
        methods.push(MethodKind::PublicKey);
    }
    if target.client_auth.password || target.client_auth.job_token {
        methods.push(MethodKind::Password);
    }
    if target.client_auth.none {
        methods.push(MethodKind::None);
    }
    let config = server::Config {
        methods,
        auth_rejection_time: Duration::ZERO,
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![target.host_identity.key.clone()],
        certificates: target.host_identity.certificate.iter().cloned().collect(),
        // A held request can wait for hours without traffic: no inactivity
        // timeout, but a peer that stops answering keepalives is dropped.
        inactivity_timeout: None,
        keepalive_interval: Some(KEEPALIVE_EVERY),
        keepalive_max: KEEPALIVE_MAX,
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(CLIENT_LEG_CIPHERS),
            ..russh::Preferred::DEFAULT
        },
        ..Default::default()
    };
    let ctx = Arc::new(SessionCtx {
        id: target
            .session_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        gate,
        target,
        grants: Arc::default(),
        upstream: Mutex::new(None),
        tasks: tokio_util::task::TaskTracker::new(),
    });
    let admitted = Arc::new(AtomicBool::new(false));
    let handler = ClientSide {
        ctx: Arc::clone(&ctx),
        state: SessionState::Undecided,
        user: String::new(),
        watch: watcher(&client),
        refusal: None,
        admitted: Arc::clone(&admitted),
    };
    let running = server::run_stream(Arc::new(config), client, handler).await?;
    let handle = running.handle();
    let grace = tokio::spawn(async move {
        tokio::time::sleep(AUTH_GRACE).await;
        if !admitted.load(Ordering::Relaxed) {
            let why = format!(
                "interlock: no accepted credential within {} s",
                AUTH_GRACE.as_secs()
            );
            tracing::warn!("{why}; disconnecting");
            let _ = handle
                .disconnect(russh::Disconnect::ByApplication, why, "en".into())
                .await;
        }
    });
    let result = running.await;
    grace.abort();
    if let Some(up) = ctx.upstream.lock().await.take() {
        let _ = up
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
    // With both sides gone every channel task ends promptly; the bound only guards against
    // one that does not, which must not keep the session open.
    ctx.tasks.close();
    if tokio::time::timeout(CHANNELS_FINISH, ctx.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(session = %ctx.id, "ssh channel tasks still running at the session's end");
    }
    match result {
        Err(e) if e.is_disconnect() => Ok(()),
        other => other,
    }
}

impl ClientSide {
    /// Accepts an authentication attempt if the session is allowed, waiting
    /// for a held session's outcome.
    async fn admit(&mut self, user: &str) -> Auth {
        self.admitted.store(true, Ordering::Relaxed);
        if self.user.is_empty() {
            self.user = user.to_string();
            self.login(user).await;
        } else if self.user != user {
            // The login was checked and recorded as the first user named.
            return Auth::reject();
        }
        if let Err(why) = self.ctx.target.login_user(user) {
            // Let in only to be told why on its first channel; nothing reaches upstream.
            self.watch = None;
            self.state = SessionState::Refused(format!("interlock: {why}"));
            return Auth::Accept;
        }
        if matches!(self.state, SessionState::Undecided) {
            let (state, banner) = decide_session(self.ctx.gate.as_ref()).await;
            self.state = state;
            self.refusal = banner;
        }
        match std::mem::replace(&mut self.state, SessionState::Blocked) {
            SessionState::Allowed => {
                self.watch = None;
                self.state = SessionState::Allowed;
                Auth::Accept
            }
            SessionState::Held(held) => {
                let outcome = match self.watch.take() {
                    // Dropping the hold when the client leaves withdraws it.
                    Some(watch) => tokio::select! {
                        o = held.outcome() => Some(o),
                        () = client_gone(&watch) => None,
                    },
                    None => Some(held.outcome().await),
                };
                match outcome {
                    Some(HoldOutcome::Approved { .. }) => {
                        self.state = SessionState::Allowed;
                        Auth::Accept
                    }
                    _ => Auth::reject(),
                }
            }
            SessionState::Blocked if self.decides_at_login() => {
                let why = self
                    .refusal
                    .take()
                    .unwrap_or_else(|| "interlock: session refused\r\n".into());
                self.state = SessionState::Refused(why);
                Auth::Accept
            }
            SessionState::Refused(why) => {
                self.state = SessionState::Refused(why);
                Auth::Accept
            }
            SessionState::Undecided | SessionState::Blocked => Auth::reject(),
        }
    }

    /// Tells the gate whom the client logs in as. A login the target does not allow is
    /// recorded with who tried: by the session decision (rule `upstream.users`) when the
    /// session is decided now, else as a refused request of the session decided before.
    async fn login(&mut self, user: &str) {
        let login = self.ctx.target.login_user(user);
        self.ctx.gate.present_login(crate::policy::SshLogin {
            requested: user.to_string(),
            upstream: login.as_ref().ok().cloned(),
        });
        let Err(why) = login else { return };
        if matches!(self.state, SessionState::Undecided) {
            // The gate refuses it; dropping a hold a gate might give withdraws it.
            drop(decide_session(self.ctx.gate.as_ref()).await);
        } else {
            self.ctx
                .gate
                .record(Record::LoginRefused {
                    user: user.to_string(),
                    message: why,
                })
                .await;
        }
    }

    /// Whether the session is decided when the client authenticates (the decision needs
    /// the job token or the login), not before the banner.
    fn decides_at_login(&self) -> bool {
        self.ctx.target.client_auth.job_token || self.ctx.target.decide_at_login
    }

    /// The refusal for a channel over [`MAX_CHANNELS`] (each open channel
    /// is a task of the session).
    fn too_many_channels(&self) -> Option<ChannelOpenFailure> {
        if self.ctx.tasks.len() < MAX_CHANNELS {
            return None;
        }
        tracing::warn!(session = %self.ctx.id, limit = MAX_CHANNELS, "ssh channel refused: too many open");
        Some(ChannelOpenFailure::Other {
            code: 4, // SSH_OPEN_RESOURCE_SHORTAGE
            reason: format!(
                "interlock: limit of {MAX_CHANNELS} open channels per connection reached"
            ),
        })
    }

    /// The refusal to tell the client, when the session was refused after authentication.
    fn refused(&self) -> Option<String> {
        match &self.state {
            SessionState::Refused(why) => Some(why.trim_end().to_string()),
            _ => None,
        }
    }
}

/// A second handle on the client socket, only to notice the client
/// leaving while authentication waits for a held session.
fn watcher(client: &TcpStream) -> Option<TcpStream> {
    use std::os::fd::AsFd as _;
    let fd = client.as_fd().try_clone_to_owned().ok()?;
    TcpStream::from_std(std::net::TcpStream::from(fd)).ok()
}

/// Resolves when the client closed the connection. If the client sent
/// data instead (it is russh's to read), this never resolves.
async fn client_gone(watch: &TcpStream) {
    let mut byte = [0u8; 1];
    match watch.peek(&mut byte).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

/// Asks the gate about the session; returns the state and the banner text.
async fn decide_session(gate: &dyn Gate) -> (SessionState, Option<String>) {
    match gate.decide(&Request::Session).await {
        Verdict::Allow { .. } => (SessionState::Allowed, None),
        Verdict::Block { rule, message } => (
            SessionState::Blocked,
            Some(format!("interlock: blocked by rule {rule}: {message}\r\n")),
        ),
        Verdict::Unavailable { message } => (SessionState::Blocked, Some(format!("{message}\r\n"))),
        Verdict::Hold(held) => {
            let banner = format!(
                "interlock: session held for approval {} (rule {}); {}\r\n",
                held.approval_id, held.rule, held.how_to_approve
            );
            (SessionState::Held(held), Some(banner))
        }
    }
}

impl server::Handler for ClientSide {
    type Error = SshError;

    async fn authentication_banner(&mut self) -> Result<Option<String>, Self::Error> {
        if self.decides_at_login() {
            // The decision needs the token, which the password brings, or the login.
            return Ok(None);
        }
        let (state, banner) = decide_session(self.ctx.gate.as_ref()).await;
        self.state = state;
        Ok(banner)
    }

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        if self.ctx.target.client_auth.none {
            Ok(self.admit(user).await)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if self.ctx.target.client_auth.job_token {
            if matches!(self.state, SessionState::Undecided) {
                self.ctx.gate.present_token(crate::oidc::Presented::Token(
                    crate::oidc::TokenSource::SshPassword,
                    crate::oidc::BearerToken::new(password.to_string()),
                ));
            }
            Ok(self.admit(user).await)
        } else if self.ctx.target.client_auth.password {
            Ok(self.admit(user).await)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        _key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.ctx.target.client_auth.publickey {
            Ok(self.admit(user).await)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(why) = self.refused() {
            reply
                .reject(ChannelOpenFailure::Other {
                    code: 1,
                    reason: why.clone(),
                })
                .await;
            let _ = session.disconnect(russh::Disconnect::ByApplication, &why, "en");
            return Ok(());
        }
        if let Some(why) = self.too_many_channels() {
            reply.reject(why).await;
            return Ok(());
        }
        let upstream = match self.ctx.upstream(&self.user).await {
            Ok(up) => up,
            Err(e) => {
                refuse(&self.ctx, reply, &e).await;
                return Ok(());
            }
        };
        reply.accept().await;
        let task =
            channel::ChannelTask::new(Arc::clone(&self.ctx), channel, session.handle(), upstream);
        self.ctx.tasks.spawn(task.run());
        Ok(())
    }

    /// Answers an `env` request by the target's `upstream.env`; the channel's task records
    /// it and relays an allowed one. The answer is given here because only here does russh
    /// still know whether the client wants one: OpenSSH sends `env` without want_reply, and
    /// an unwanted failure would be read as the answer to the exec that follows.
    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.ctx.target.env_allowed(variable_name) {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let spec = forward::Direct::Tcpip {
            host: host_to_connect.to_string(),
            port: port_to_connect,
            originator: originator_address.to_string(),
            originator_port,
        };
        self.open_direct(channel, reply, spec).await;
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        channel: Channel<Msg>,
        socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let spec = forward::Direct::Streamlocal {
            path: socket_path.to_string(),
        };
        self.open_direct(channel, reply, spec).await;
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        if self.refused().is_some() {
            return Ok(false);
        }
        let Ok(upstream) = self.ctx.upstream(&self.user).await else {
            return Ok(false);
        };
        let handle = session.handle();
        Ok(forward::remote(&self.ctx, &upstream, handle, address, port).await)
    }

    async fn streamlocal_forward(
        &mut self,
        socket_path: &str,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        if self.refused().is_some() {
            return Ok(false);
        }
        let Ok(upstream) = self.ctx.upstream(&self.user).await else {
            return Ok(false);
        };
        let handle = session.handle();
        Ok(forward::remote_streamlocal(&self.ctx, &upstream, handle, socket_path).await)
    }

    async fn cancel_streamlocal_forward(
        &mut self,
        socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.ctx.grants.cancel_streamlocal(socket_path);
        if self.refused().is_some() {
            return Ok(false);
        }
        let Ok(upstream) = self.ctx.upstream(&self.user).await else {
            return Ok(false);
        };
        Ok(upstream
            .cancel_streamlocal_forward(socket_path)
            .await
            .is_ok())
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.ctx.grants.cancel_forward(address, port);
        if self.refused().is_some() {
            return Ok(false);
        }
        let Ok(upstream) = self.ctx.upstream(&self.user).await else {
            return Ok(false);
        };
        Ok(upstream.cancel_tcpip_forward(address, port).await.is_ok())
    }
}

impl ClientSide {
    /// Connects upstream if needed and hands a forwarding channel to its task.
    async fn open_direct(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        spec: forward::Direct,
    ) {
        if let Some(why) = self.refused() {
            reply
                .reject(ChannelOpenFailure::Other {
                    code: 1,
                    reason: why,
                })
                .await;
            return;
        }
        if let Some(why) = self.too_many_channels() {
            reply.reject(why).await;
            return;
        }
        let upstream = match self.ctx.upstream(&self.user).await {
            Ok(up) => up,
            Err(e) => {
                refuse(&self.ctx, reply, &e).await;
                return;
            }
        };
        let ctx = Arc::clone(&self.ctx);
        let tasks = ctx.tasks.clone();
        tasks.spawn(forward::direct(ctx, upstream, channel, reply, spec));
    }
}

/// Refuses a channel because the upstream session could not be set up.
async fn refuse(ctx: &SessionCtx, reply: ChannelOpenHandle, e: &SshError) {
    tracing::warn!(session = %ctx.id, error = %e, "ssh upstream failed");
    ctx.gate
        .record(Record::ProtocolError {
            side: Side::Server,
            message: e.to_string(),
        })
        .await;
    reply
        .reject(ChannelOpenFailure::Other {
            code: 2,
            reason: e.client_reply(),
        })
        .await;
}

/// Channel ids are only meaningful inside this module.
pub(super) type Id = ChannelId;
