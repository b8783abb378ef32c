//! `interlock run`: brings the daemon up, runs it until shutdown, drains.
//!
//! Order matters for "nothing bypasses": the kernel side is loaded (adopting
//! pins) and the listeners are bound on the previous ports *before* the
//! config map names this process, so a restart never opens a window in
//! which intercepted connects go direct.

use std::{path::PathBuf, time::Duration};

use agent_common::config::{AgentConfig, FAILURE_CLOSED, FAILURE_OPEN};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    approval::{Approvals, Notifier},
    audit::{AuditOptions, EventKind, EventLog, LogError, ReloadTrigger, Rotation},
    context::AppContext,
    control,
    ebpf::{self, Kernel, KernelError, LoadOptions, monotonic_ns},
    identity::ProcessTable,
    intercept::{Listeners, accept_loop},
    kernel_watch,
    policy::{self, PolicyError},
    sinks::{SinkError, WebhookOptions, Webhooks},
    targets,
};

const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// Fail-open mode treats the daemon as down after this long without a heartbeat.
const STALE_AFTER: Duration = Duration::from_secs(3);
/// How often FLOWS/PEERS are swept of flows that can no longer be accepted.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// A redirected connect completes (and is accepted) long before this; an
/// older flow belongs to a connect that failed on a socket still open.
const FLOW_TTL: Duration = Duration::from_secs(60);
const PROCESS_TABLE_CAPACITY: usize = 65_536;

/// What the daemon does when it is not running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FailureMode {
    /// Intercepted connects are refused while the daemon is down.
    Closed,
    /// Intercepted connects go direct while the daemon's heartbeat is stale.
    Open,
}

/// Settings of one daemon instance.
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    pub policy: PathBuf,
    pub instance: String,
    /// Cgroup scopes (`/` = whole host).
    pub scopes: Vec<String>,
    pub state_dir: PathBuf,
    pub failure_mode: FailureMode,
    /// How long live sessions may run on after shutdown starts.
    pub drain: Duration,
    /// Bytes of the kernel's process-record ring (power of two).
    pub process_ring_bytes: u32,
    /// Audit log: fsync mode, segment size, checkpoint cadence.
    pub audit: AuditOptions,
    /// Rotation of the JSONL file sink (`events.jsonl`).
    pub events_file: Rotation,
    /// Webhook endpoints, secrets, batching and spool bound.
    pub webhooks: WebhookOptions,
    /// Chat webhooks (Slack-compatible) told about every new hold.
    pub approval_webhooks: Vec<reqwest::Url>,
    /// Generic JSON receivers told about every new hold.
    pub approval_json_webhooks: Vec<reqwest::Url>,
    /// Where the approvals page listens (overrides the policy's `web.listen`).
    pub web_listen: Option<std::net::SocketAddr>,
    /// Terminate PostgreSQL clients' TLS with certificates from interlock's CA.
    pub client_tls: bool,
    /// Entries of the kernel's flow table (FLOWS, PEERS) when first created.
    pub flow_entries: u32,
    /// Redirected sockets one cgroup may hold open at once (0: no limit).
    pub flow_quota: u32,
    /// Directory of every instance's pins (`/sys/fs/bpf/interlock`).
    pub pin_root: PathBuf,
    /// How often host names in targets are resolved again.
    pub resolve_every: Duration,
    /// Kernel buffer sizes of session sockets (both legs).
    pub socket_buffers: crate::net::SocketBuffers,
    /// What one job may use of the daemon (sessions, message and statement
    /// sizes, control connections).
    pub limits: crate::limits::Limits,
    /// How long an address a host name resolved to stays intercepted
    /// after lookups stop returning it.
    pub resolve_keep: Duration,
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("cannot create state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the event log thread: {0}")]
    LogThread(std::io::Error),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("cannot bind listeners: {0}")]
    Listen(std::io::Error),
    #[error(transparent)]
    Ssh(#[from] crate::ssh::SshError),
    #[error("PostgreSQL client-leg CA: {0}")]
    PgCa(#[from] crate::postgres::CaError),
    #[error(transparent)]
    MaskKey(#[from] crate::postgres::MaskKeyError),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error(transparent)]
    Web(#[from] crate::web::WebError),
    #[error("cannot bind the control socket {path}: {source}")]
    Control {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Runs the daemon until `shutdown` is cancelled, then drains.
///
/// # Errors
/// Start-up failures (policy, kernel, state directory, listeners). Once
/// running, problems are per-session and reported as events.
pub async fn run(opts: DaemonOptions, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let policy = policy::load(&opts.policy)?;
    prepare_state_dir(&opts.state_dir)?;
    // One daemon per state directory (one writer of its audit log) and per
    // instance (one owner of its pins), until this function returns, after
    // the log is closed. Each is taken before anything in it is touched; the
    // instance's after the checks that need no pins, so a bad scope leaves
    // no pin directory behind.
    let _state_lock = crate::lock::exclusive(
        &opts.state_dir.join(LOCK_FILE),
        &format!("state directory {}", opts.state_dir.display()),
        "two daemons must not write one audit log: stop that one first, or give this one another --state-dir",
    )?;
    // Secrets and spools are checked before anything is attached.
    let (spools, deliveries, endpoints) =
        Webhooks::open(&opts.webhooks, &opts.state_dir)?.into_parts();
    let runtime_file = opts.state_dir.join(RUNTIME_FILE);
    // A stale file from an earlier run must not look like readiness.
    let _ = std::fs::remove_file(&runtime_file);

    let mount = ebpf::cgroup2_mount()?;
    let scopes = if opts.scopes.is_empty() {
        vec!["/".to_string()]
    } else {
        opts.scopes.clone()
    };
    let scopes = scopes
        .iter()
        .map(|s| ebpf::resolve_scope(&mount, s))
        .collect::<Result<Vec<_>, _>>()?;
    let pin_dir = ebpf::pin_dir(&opts.pin_root, &opts.instance);
    let vanished = kernel_watch::pins_vanished(&opts.state_dir, &pin_dir);
    let _instance_lock = ebpf::lock_instance(&opts.pin_root, &opts.instance)?;
    let mut kernel = Kernel::load(&LoadOptions {
        instance: opts.instance.clone(),
        pin_root: opts.pin_root.clone(),
        cgroup_mount: mount.clone(),
        scopes: scopes.clone(),
        process_ring_bytes: opts.process_ring_bytes,
        flow_entries: opts.flow_entries,
    })?;
    kernel_watch::record_pins(&opts.state_dir, &pin_dir);
    let adopted = kernel.adopted();
    let mut findings: Vec<ebpf::Finding> = vanished.into_iter().collect();
    findings.extend(kernel.take_findings());
    let (hold, mut maps, process_events) = kernel.into_parts()?;
    let hold = std::sync::Arc::new(std::sync::Mutex::new(hold));

    let previous = maps.config()?;
    let listeners = Listeners::bind(&previous, opts.socket_buffers)
        .await
        .map_err(DaemonError::Listen)?;
    // Flows recorded before now went to a listener that no longer exists.
    let bound_at = monotonic_ns();
    let (port4, port6) = listeners.ports();
    let mut cfg = AgentConfig {
        daemon_tgid: std::process::id(),
        failure_mode: match opts.failure_mode {
            FailureMode::Closed => FAILURE_CLOSED,
            FailureMode::Open => FAILURE_OPEN,
        },
        heartbeat_ns: monotonic_ns(),
        stale_after_ns: nanos(STALE_AFTER),
        listen_port4: port4,
        listen_port6: port6,
        netns_cookie: ebpf::netns_cookie().unwrap_or_else(|| {
            warn!("cannot read this network namespace's cookie: connects from other namespaces are not refused early");
            0
        }),
        flow_quota: opts.flow_quota,
        _pad: 0,
    };
    maps.set_config(&cfg)?;
    let resolver = targets::Resolver::new(opts.resolve_keep);
    maps.set_targets(&resolver.begin().await.entries(&policy).await)?;
    match maps.sweep_flows(bound_at, nanos(FLOW_TTL)) {
        Ok((0, 0)) => {}
        Ok((flows, peers)) => info!(flows, peers, "removed flows left by an earlier run"),
        Err(e) => warn!(error = %e, "cannot sweep the flow table"),
    }

    let host = hostname();
    // Opening reads the chain's tail and may seal it: blocking file I/O.
    let (log, events) = {
        let (dir, host, audit, rotation) = (
            opts.state_dir.clone(),
            host.clone(),
            opts.audit.clone(),
            opts.events_file,
        );
        tokio::task::spawn_blocking(move || EventLog::open(&dir, &host, audit, rotation))
            .await
            .map_err(|e| DaemonError::LogThread(std::io::Error::other(e)))??
    };
    let mut log = log;
    log.add_spools(spools);
    let log_thread = log.spawn_thread().map_err(DaemonError::LogThread)?;
    let mut processes = ProcessTable::new(PathBuf::from("/proc"), PROCESS_TABLE_CAPACITY);
    if let Err(e) = processes.seed_from_proc() {
        warn!(error = %e, "cannot seed the process table from /proc");
    }
    let socket = opts.state_dir.join(control::CONTROL_SOCKET);
    let control_listener = control::bind(&socket).map_err(|source| DaemonError::Control {
        path: socket.clone(),
        source,
    })?;
    // The approvals page: bound now, so a bad address or certificate stops the start.
    let web = match (policy.web(), opts.web_listen) {
        (None, Some(_)) => return Err(crate::web::WebError::NoSection.into()),
        (Some(w), listen) => match listen.or(w.listen) {
            Some(addr) => Some(crate::web::WebServer::bind(w, addr, &opts.state_dir).await?),
            None => None,
        },
        (None, None) => None,
    };
    let approvals = Approvals::with_page(
        events.clone(),
        Notifier::new(
            opts.approval_webhooks.clone(),
            opts.approval_json_webhooks.clone(),
        ),
        &socket,
        web.as_ref()
            .and(policy.web())
            .map(|w| w.url.as_str().to_string()),
        policy
            .web()
            .map(|w| w.four_eyes.clone())
            .unwrap_or_default(),
    );
    let ssh_ca = crate::ssh::SshCa::load_or_create(&opts.state_dir)?;
    let pg_ca = match opts.client_tls {
        true => Some(crate::postgres::PgCa::load_or_create(&opts.state_dir)?),
        false => None,
    };
    let mask_key = crate::postgres::MaskKey::load_or_create(&opts.state_dir)?;
    let ctx = AppContext::new(
        policy,
        approvals,
        opts.state_dir.join(RECORDINGS_DIR),
        ssh_ca,
        pg_ca,
        mask_key,
        maps,
        processes,
        process_events,
        events,
        resolver,
        shutdown.child_token(),
    )
    .with_socket_buffers(opts.socket_buffers)
    .with_limits(opts.limits.clone());
    ctx.events()
        .record(EventKind::DaemonStarted {
            instance: opts.instance.clone(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            adopted_pins: adopted,
            ppid: std::os::unix::process::parent_id(),
            uid: own_uid(),
            exe: std::env::current_exe()
                .ok()
                .map(|p| p.display().to_string()),
            argv: std::env::args().collect(),
        })
        .await;
    kernel_watch::emit_findings(&ctx, findings).await;
    info!(
        instance = %opts.instance,
        scopes = ?scopes,
        targets = ctx.policy().targets().len(),
        adopted,
        "interlock is running"
    );

    write_runtime(&runtime_file, &opts.instance, &listeners)?;

    let mut background = tokio::task::JoinSet::new();
    for d in deliveries {
        background.spawn(d.run(ctx.events().clone(), ctx.shutdown().clone()));
    }
    background.spawn(follow_lineage(ctx.clone()));
    background.spawn(control::serve(
        ctx.clone(),
        control_listener,
        control::Extras {
            webhooks: endpoints,
            host: host.clone(),
        },
    ));
    background.spawn(watch_policy(ctx.clone(), opts.policy.clone()));
    if let Some(web) = web {
        let ctx = ctx.clone();
        background.spawn(async move {
            if let Err(e) = web.serve(ctx).await {
                warn!(error = %e, "the approvals page stopped");
            }
        });
    }
    for (protocol, listener) in listeners.into_inner() {
        background.spawn(accept_loop(ctx.clone(), protocol, listener));
    }
    {
        let ctx = ctx.clone();
        let state_dir = opts.state_dir.clone();
        let hold = std::sync::Arc::clone(&hold);
        background.spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
            let mut sweep = tokio::time::interval(SWEEP_EVERY);
            let mut integrity = tokio::time::interval(kernel_watch::INTEGRITY_EVERY);
            let mut lost_seen = ctx.with_maps(|m| m.lost_process_records()).unwrap_or(0);
            let mut refusals = kernel_watch::RefusalReports::load(&state_dir, Some(mount));
            loop {
                tokio::select! {
                    _ = ctx.shutdown().cancelled() => break,
                    _ = tick.tick() => {
                        cfg.heartbeat_ns = monotonic_ns();
                        if let Err(e) = ctx.with_maps(|m| m.set_config(&cfg)) {
                            warn!(error = %e, "heartbeat failed");
                        }
                        lost_seen = kernel_watch::report_lost_records(&ctx, lost_seen).await;
                        refusals.report(&ctx).await;
                    }
                    _ = sweep.tick() => {
                        if let Err(e) = ctx.with_maps(|m| m.sweep_flows(0, nanos(FLOW_TTL))) {
                            warn!(error = %e, "cannot sweep the flow table");
                        }
                    }
                    _ = integrity.tick() => kernel_watch::check_integrity(&ctx, &hold).await,
                }
            }
        });
    }
    {
        let ctx = ctx.clone();
        let every = opts.resolve_every;
        background.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = ctx.shutdown().cancelled() => break,
                    _ = tick.tick() => {
                        let mut update = ctx.resolver().begin().await;
                        // Read under the update lock: a reload in between
                        // has either finished (we see its policy) or waits.
                        let policy = ctx.policy();
                        if !targets::has_hosts(&policy) {
                            continue;
                        }
                        let entries = update.entries(&policy).await;
                        if let Err(e) = ctx.with_maps(|m| m.set_targets(&entries)) {
                            warn!(error = %e, "cannot update re-resolved targets");
                        }
                    }
                }
            }
        });
    }

    // The accept loops and the control socket run: systemd may count the
    // service as started (Type=notify).
    crate::service::ready();

    shutdown.cancelled().await;
    crate::service::stopping();
    ctx.shutdown().cancel();
    let live = ctx.tracker().len();
    info!(
        live,
        drain_secs = opts.drain.as_secs_f64(),
        "shutting down: no new sessions, draining"
    );
    ctx.tracker().close();
    if tokio::time::timeout(opts.drain, ctx.tracker().wait())
        .await
        .is_err()
    {
        warn!(
            left = ctx.tracker().len(),
            "drain time over: closing remaining sessions"
        );
        ctx.force_close().cancel();
        ctx.tracker().wait().await;
    }
    while background.join_next().await.is_some() {}
    ctx.events()
        .record(EventKind::DaemonStopped {
            instance: opts.instance.clone(),
            reason: "shutdown".into(),
            pid: std::process::id(),
        })
        .await;
    drop(ctx);
    // Every sink is dropped now, so the log drains, flushes and ends.
    let _ = tokio::task::spawn_blocking(move || log_thread.join()).await;
    info!(
        "stopped; the kernel side stays attached (fail {}); `interlock detach --instance {}` removes it",
        if opts.failure_mode == FailureMode::Closed {
            "closed"
        } else {
            "open"
        },
        opts.instance
    );
    Ok(())
}

/// Session transcripts (SSH .cast files) under the state directory.
pub const RECORDINGS_DIR: &str = "recordings";

/// The state directory's lock file: held (flock) by the daemon using it.
pub const LOCK_FILE: &str = "daemon.lock";

/// How often the policy file is checked for changes.
const POLICY_POLL: Duration = Duration::from_secs(1);

/// Reloads the policy on SIGHUP and when its file's content changes.
async fn watch_policy(ctx: AppContext, path: PathBuf) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "cannot install SIGHUP handler; reloads follow file changes only");
            None
        }
    };
    let mut seen = fingerprint(&path);
    let mut tick = tokio::time::interval(POLICY_POLL);
    loop {
        let trigger = tokio::select! {
            _ = ctx.shutdown().cancelled() => break,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => ReloadTrigger::Sighup,
            _ = tick.tick() => {
                let now = fingerprint(&path);
                if now == seen {
                    continue;
                }
                ReloadTrigger::FileChange
            }
        };
        seen = fingerprint(&path);
        crate::service::reloading();
        reload_policy(&ctx, &path, trigger).await;
        crate::service::reloaded();
    }
}

/// The file's content hash (None: unreadable). Content, not mtime, so an
/// editor's rename-into-place counts and a mere `touch` does not.
fn fingerprint(path: &std::path::Path) -> Option<[u8; 32]> {
    use sha2::Digest as _;
    std::fs::read(path)
        .ok()
        .map(|b| sha2::Sha256::digest(&b).into())
}

/// Loads `path` and puts it in force, or keeps the old policy and says why.
async fn reload_policy(ctx: &AppContext, path: &std::path::Path, trigger: ReloadTrigger) {
    let shown = path.display().to_string();
    let mut new = match policy::load(path) {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "policy reload failed; the previous policy stays in force");
            ctx.events()
                .record(EventKind::PolicyReloadFailed {
                    path: shown,
                    trigger,
                    error: e.to_string(),
                })
                .await;
            return;
        }
    };
    new.keep_ids_of(&ctx.policy());
    if new.web() != ctx.policy().web() {
        warn!(
            "policy reload: the `web:` section changed; the approvals page keeps its settings until the daemon restarts"
        );
    }
    let mut update = ctx.resolver().begin().await;
    let entries = update.entries(&new).await;
    let (targets, rules) = (new.targets().len(), new.rules().len());
    // The policy first: a flow the new kernel entries redirect must find
    // its target. Flows of removed targets are refused, never relayed blind.
    let old = ctx.replace_policy(new);
    if let Err(e) = ctx.with_maps(|m| m.set_targets(&entries)) {
        ctx.replace_policy(std::sync::Arc::unwrap_or_clone(old));
        warn!(error = %e, "policy reload: cannot update the kernel's targets; the previous policy stays in force");
        ctx.events()
            .record(EventKind::PolicyReloadFailed {
                path: shown,
                trigger,
                error: format!("cannot update the kernel's targets: {e}"),
            })
            .await;
        return;
    }
    info!(?trigger, targets, rules, "policy reloaded");
    ctx.events()
        .record(EventKind::PolicyReloaded {
            path: shown,
            trigger,
            targets,
            rules,
        })
        .await;
}

/// Feeds the process table from the kernel's fork/exec/exit records until
/// shutdown. If the ring fails, identities fall back to /proc.
async fn follow_lineage(ctx: AppContext) {
    loop {
        tokio::select! {
            _ = ctx.shutdown().cancelled() => break,
            r = ctx.follow_lineage() => if let Err(e) = r {
                warn!(error = %e, "process event ring failed; identities come from /proc only");
                return;
            },
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Written once the daemon intercepts: its pid and listener addresses, for
/// operators and tests. Removed at the next start, rewritten when ready.
pub const RUNTIME_FILE: &str = "runtime.json";

#[derive(serde::Serialize)]
struct Runtime<'a> {
    pid: u32,
    instance: &'a str,
    listeners: Vec<RuntimeListener>,
}

#[derive(serde::Serialize)]
struct RuntimeListener {
    protocol: crate::policy::Protocol,
    address: std::net::SocketAddr,
}

fn write_runtime(
    path: &std::path::Path,
    instance: &str,
    listeners: &Listeners,
) -> Result<(), DaemonError> {
    let rt = Runtime {
        pid: std::process::id(),
        instance,
        listeners: listeners
            .addresses()
            .into_iter()
            .map(|(protocol, address)| RuntimeListener { protocol, address })
            .collect(),
    };
    let io = |source| DaemonError::StateDir {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("json.tmp");
    crate::state_dir::write_private(
        &tmp,
        &serde_json::to_vec_pretty(&rt).map_err(|e| io(e.into()))?,
    )
    .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Creates the state directory (0711) and its recordings directory
/// (0700), tightening whatever an earlier run left readable by others.
fn prepare_state_dir(dir: &std::path::Path) -> Result<(), DaemonError> {
    let io = |source| DaemonError::StateDir {
        path: dir.to_owned(),
        source,
    };
    for t in crate::state_dir::prepare(dir).map_err(io)? {
        if t.now & !t.was != 0 {
            warn!(
                path = %t.path.display(),
                was = format!("{:o}", t.was),
                now = format!("{:o}", t.now),
                "state directory: made traversable, so that approvers who are not root reach control.sock"
            );
        } else {
            warn!(
                path = %t.path.display(),
                was = format!("{:o}", t.was),
                now = format!("{:o}", t.now),
                "state directory: tightened a file or directory others could read"
            );
        }
    }
    for (a, mode) in crate::state_dir::untraversable_ancestors(dir) {
        warn!(
            path = %a.display(),
            mode = format!("{mode:o}"),
            "others cannot traverse this directory, so approvers who are not root cannot reach control.sock below it (give it o+x)"
        );
    }
    crate::state_dir::private_dir(&dir.join(RECORDINGS_DIR)).map_err(io)
}

/// The uid this process runs as (the owner of its /proc entry).
fn own_uid() -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

/// This host's name (events carry it).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
