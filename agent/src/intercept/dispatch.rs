//! From an attributed connection to its protocol's session: builds each
//! protocol's configuration from the policy target (resolving credentials
//! now, so a rotated secret file applies to the next session), runs the
//! session with the daemon's gate, and records how it ended.

use std::{sync::Arc, time::Instant};

use tokio::net::TcpStream;
use tracing::{info, warn};

use crate::{
    audit::{EventKind, SessionOutcome},
    context::AppContext,
    gate::Gate,
    gatekeeper::DaemonGate,
    policy::{AddressMatch, ClientAuthMethod, ClientPassword, PasswordAuth, Target, TlsMode},
    postgres, ssh,
};

/// Runs a PostgreSQL session for `gate`'s identity.
pub(super) async fn pg_session(
    ctx: AppContext,
    gate: DaemonGate,
    target: Target,
    client: TcpStream,
) {
    let cfg = pg_target(&ctx, &gate, &target);
    let cancels = ctx.pg_cancels().clone();
    run_proxied(ctx, gate, client, "postgres", cfg, |client, cfg, gate| {
        postgres::serve(client, cfg, gate, cancels)
    })
    .await;
}

fn pg_target(
    ctx: &AppContext,
    gate: &DaemonGate,
    target: &Target,
) -> Result<postgres::PgTarget, SetupError> {
    let up = &target.upstream;
    let name = || target.name.clone();
    let mut cfg = postgres::PgTarget::new(gate.identity().original_destination);
    if let Some(p) = &up.password {
        let secret = p.resolve().map_err(|source| SetupError::Secret {
            target: name(),
            source,
        })?;
        let password = String::from_utf8(secret.expose().to_vec())
            .map_err(|_| SetupError::PasswordEncoding(name()))?;
        cfg.credentials = Some(postgres::PgCredentials {
            user: up.user.clone(),
            password: postgres::Secret::new(password),
        });
        cfg.password_methods = postgres::PasswordMethods {
            scram: up.password_auth.contains(&PasswordAuth::Scram),
            md5: up.password_auth.contains(&PasswordAuth::Md5),
            cleartext: up.password_auth.contains(&PasswordAuth::Cleartext),
        };
        // Refused by the session once decided, so the attempt is recorded
        // with its identity and the client is told why.
        cfg.withheld = target
            .credentials_may_go_to(gate.identity().original_destination.ip())
            .err();
    }
    cfg.client_password = match up.client_password {
        ClientPassword::Mirror => postgres::ClientPassword::Mirror,
        ClientPassword::Never => postgres::ClientPassword::Never,
    };
    cfg.database = up.database.clone();
    cfg.mask_key = Some(ctx.mask_key());
    cfg.max_frame = ctx.limits().pg_max_message;
    cfg.classify = ctx.limits().classify.clone();
    cfg.socket_buffers = ctx.socket_buffers();
    if up.client_auth.contains(&ClientAuthMethod::JobToken) {
        cfg.ask_token = Some(postgres::AskToken {
            without_tls: up.token_without_tls,
        });
    }
    cfg.tls = match (up.tls, &up.ca_file) {
        (TlsMode::Disable, _) => postgres::UpstreamTls::Disable,
        (TlsMode::Prefer, _) => postgres::UpstreamTls::Prefer,
        (TlsMode::Require, _) => postgres::UpstreamTls::Require,
        (TlsMode::VerifyFull, Some(ca)) => postgres::UpstreamTls::VerifyFull {
            ca_file: ca.clone(),
        },
        // Refused at policy load; never silently weakened to `require`.
        (TlsMode::VerifyFull, None) => return Err(SetupError::NoCaFile(name())),
    };
    // verify-full checks the name the job asked for: the target's host name.
    if let Some(host) = target.endpoints.iter().find_map(|e| match &e.address {
        AddressMatch::Host(h) => Some(h.clone()),
        _ => None,
    }) {
        cfg.server_name = host;
    }
    // Minted when a client first asks for TLS: a failure then answers 'N'
    // (and is recorded) instead of refusing clients that never ask.
    cfg.client_tls = ctx
        .pg_ca()
        .map(|ca| postgres::ClientTls::new(ca.clone(), dialled_names(gate, target)));
    Ok(cfg)
}

/// The host names `target` matches by.
fn host_names(target: &Target) -> Vec<String> {
    target
        .endpoints
        .iter()
        .filter_map(|e| match &e.address {
            AddressMatch::Host(h) => Some(h.clone()),
            _ => None,
        })
        .collect()
}

/// What clients may have typed to reach `target`, for the names in the
/// certificates interlock presents: the target's host names and the
/// address the client connected to.
fn dialled_names(gate: &DaemonGate, target: &Target) -> Vec<String> {
    let mut names = host_names(target);
    names.push(gate.identity().original_destination.ip().to_string());
    names
}

/// Why a session's configuration could not be built. Names files and
/// variables, never secret values.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("target `{target}`: {source}")]
    Secret {
        target: String,
        source: crate::policy::SecretError,
    },
    #[error("target `{0}`: the upstream password is not valid UTF-8")]
    PasswordEncoding(String),
    #[error("target `{0}`: tls verify-full needs `upstream.ca_file`")]
    NoCaFile(String),
    #[error("{0}")]
    Withheld(String),
    #[error("target `{0}`: no upstream credential configured")]
    NoCredential(String),
    #[error("target `{0}`: no upstream host key check configured")]
    NoHostKeyCheck(String),
    #[error("target `{target}`: upstream.presented_host_key: {source}")]
    PresentedHostKey {
        target: String,
        source: ssh::SshError,
    },
    #[error("target `{target}`: cannot mint a host certificate: {source}")]
    HostCertificate {
        target: String,
        source: ssh::SshError,
    },
}

/// Runs an SSH session for `gate`'s identity.
pub(super) async fn ssh_session(
    ctx: AppContext,
    gate: DaemonGate,
    target: Target,
    client: TcpStream,
) {
    let cfg = ssh_target(&ctx, &gate, &target);
    run_proxied(ctx, gate, client, "ssh", cfg, ssh::serve).await;
}

/// A protocol session's error, as `session_ended` reports it.
trait SessionError: std::fmt::Display {
    /// The outcome this error ends a session with.
    fn outcome(&self) -> SessionOutcome {
        SessionOutcome::Error
    }
}

impl SessionError for postgres::PgError {
    fn outcome(&self) -> SessionOutcome {
        match self {
            postgres::PgError::Connect(_) => SessionOutcome::UpstreamUnreachable,
            _ => SessionOutcome::Error,
        }
    }
}

impl SessionError for ssh::SshError {}

/// How a proxied session's protocol loop ended.
enum Ended<E> {
    Served(Result<(), E>),
    /// The daemon's drain time ran out.
    Drained,
}

/// The part every proxied protocol shares: refuse (and report) a session
/// whose configuration could not be built, run `serve` with the gate until
/// it ends or the drain time runs out, and record how it ended.
async fn run_proxied<C, E, F, Fut>(
    ctx: AppContext,
    gate: DaemonGate,
    client: TcpStream,
    protocol: &'static str,
    cfg: Result<C, SetupError>,
    serve: F,
) where
    E: SessionError,
    F: FnOnce(TcpStream, C, Arc<dyn Gate>) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
{
    let started = Instant::now();
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, protocol, "cannot start the session");
            let listener = client.local_addr().unwrap_or(gate.identity().client);
            ctx.events()
                .record(EventKind::ConnectionRefused {
                    listener,
                    peer: gate.identity().client,
                    reason: e.to_string(),
                })
                .await;
            return;
        }
    };
    let gate = Arc::new(gate);
    let dyn_gate: Arc<dyn Gate> = gate.clone();
    let ended = tokio::select! {
        r = serve(client, cfg, dyn_gate) => Ended::Served(r),
        _ = ctx.force_close().cancelled() => Ended::Drained,
    };
    let (outcome, error) = match (gate.refused(), ended) {
        (Some((o, why)), _) => (o, Some(why)),
        (None, Ended::Served(Ok(()))) => (SessionOutcome::Closed, None),
        (None, Ended::Drained) => (SessionOutcome::Drained, None),
        (None, Ended::Served(Err(e))) => (e.outcome(), Some(e.to_string())),
    };
    info!(?outcome, protocol, "session ended");
    // Byte counts are those of the tcp relay only; proxied sessions report
    // their content as statements and commands instead.
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    gate.ended(outcome, (0, 0), duration_ms, error).await;
}

fn ssh_target(
    ctx: &AppContext,
    gate: &DaemonGate,
    target: &Target,
) -> Result<ssh::SshTarget, SetupError> {
    let up = &target.upstream;
    let name = || target.name.clone();
    // Before any secret is read: `upstream.servers` narrows where it goes.
    target
        .credentials_may_go_to(gate.identity().original_destination.ip())
        .map_err(SetupError::Withheld)?;
    let secret = |r: &crate::policy::SecretRef| {
        r.resolve().map_err(|source| SetupError::Secret {
            target: name(),
            source,
        })
    };
    let credential = match (&up.key, &up.password) {
        (Some(k), _) => ssh::Credential::PrivateKey(secret(k)?.expose().to_vec()),
        (None, Some(p)) => ssh::Credential::Password(
            String::from_utf8(secret(p)?.expose().to_vec())
                .map_err(|_| SetupError::PasswordEncoding(name()))?,
        ),
        (None, None) => return Err(SetupError::NoCredential(name())),
    };
    let host_key_check = match (&up.host_key, &up.known_hosts) {
        (Some(k), _) => ssh::HostKeyCheck::Pinned(k.clone()),
        (None, Some(f)) => ssh::HostKeyCheck::KnownHosts(f.clone()),
        (None, None) => return Err(SetupError::NoHostKeyCheck(name())),
    };
    let host_identity = match &up.presented_host_key {
        // A fixed key per target: clients pin it instead of trusting the CA.
        Some(r) => ssh::HostIdentity::from_openssh(secret(r)?.expose()).map_err(|source| {
            SetupError::PresentedHostKey {
                target: name(),
                source,
            }
        })?,
        None => host_certificate(ctx, gate, target)?,
    };
    Ok(ssh::SshTarget {
        upstream: gate.identity().original_destination,
        host_names: host_names(target),
        upstream_user: up.user.clone(),
        upstream_users: up.users.clone(),
        env: up.env.clone(),
        decide_at_login: ctx.policy().session_rules_name_login(),
        credential,
        host_key_check,
        client_auth: ssh::ClientAuth {
            publickey: up.client_auth.contains(&ClientAuthMethod::Publickey),
            password: up.client_auth.contains(&ClientAuthMethod::Password),
            none: up.client_auth.contains(&ClientAuthMethod::None),
            job_token: up.client_auth.contains(&ClientAuthMethod::JobToken),
        },
        host_identity,
        recording_dir: ctx.recordings().to_path_buf(),
        session_id: Some(gate.session_id().to_string()),
        socket_buffers: ctx.socket_buffers(),
    })
}

/// A host key with a certificate from interlock's SSH CA.
fn host_certificate(
    ctx: &AppContext,
    gate: &DaemonGate,
    target: &Target,
) -> Result<ssh::HostIdentity, SetupError> {
    let principals = dialled_names(gate, target);
    let refs: Vec<&str> = principals.iter().map(String::as_str).collect();
    ctx.ssh_ca()
        .mint_host(&refs)
        .map_err(|source| SetupError::HostCertificate {
            target: target.name.clone(),
            source,
        })
}
