//! `AppContext`: the daemon's dependencies, built once in `daemon::run` and
//! cloned cheaply into every task. No statics: each test builds its own.

use std::sync::{
    Arc, Mutex, RwLock,
    atomic::{AtomicU64, Ordering},
};

use agent_common::flow::FlowInfo;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    approval::Approvals,
    audit::EventSink,
    ebpf::ProcessEventStream,
    ebpf::{KernelError, KernelMaps},
    identity::{EnvToken, ProcessIdentity, ProcessTable},
    policy::Policy,
};

/// How often kernel process records are drained when the kernel does not wake us.
const LINEAGE_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// How many ancestors an identity lists.
const ANCESTRY_DEPTH: usize = 16;

/// Shared daemon state.
#[derive(Clone)]
pub struct AppContext {
    inner: Arc<Inner>,
}

struct Inner {
    /// Swapped whole on reload: a request sees one policy, old or new.
    policy: RwLock<Arc<Policy>>,
    approvals: Approvals,
    sessions_total: AtomicU64,
    /// Where session transcripts (SSH .cast files) are written.
    recordings: std::path::PathBuf,
    /// Signs the host certificates the SSH proxy presents.
    ssh_ca: Arc<crate::ssh::SshCa>,
    /// Mints the certificates PostgreSQL clients see; `None`: clients get no TLS.
    pg_ca: Option<Arc<crate::postgres::PgCa>>,
    /// The host's key for the `hash` masking strategy.
    mask_key: Arc<crate::postgres::MaskKey>,
    /// interlock-issued PostgreSQL cancel keys -> the upstream's, shared by all sessions.
    pg_cancels: crate::postgres::CancelRegistry,
    // Both locks guard short synchronous sections (a map syscall, a table
    // lookup) and are never held across an .await or together.
    maps: Mutex<KernelMaps>,
    processes: Arc<Mutex<ProcessTable>>,
    /// Drained only while `processes` is locked, so records apply in order.
    lineage: Arc<ProcessEventStream>,
    events: EventSink,
    /// Serialises updates of the kernel's target map.
    resolver: crate::targets::Resolver,
    shutdown: CancellationToken,
    force_close: CancellationToken,
    tracker: TaskTracker,
    /// Kernel buffer sizes for both legs of every session.
    socket_buffers: crate::net::SocketBuffers,
    /// What one job may use of the daemon.
    limits: crate::limits::Limits,
    /// Sessions open now, against the caps in `limits`.
    sessions: Arc<crate::limits::SessionSlots>,
}

impl AppContext {
    /// Assembles the context.
    #[allow(clippy::too_many_arguments)] // assembled once, in daemon::run
    pub fn new(
        policy: Policy,
        approvals: Approvals,
        recordings: std::path::PathBuf,
        ssh_ca: crate::ssh::SshCa,
        pg_ca: Option<crate::postgres::PgCa>,
        mask_key: crate::postgres::MaskKey,
        maps: KernelMaps,
        processes: ProcessTable,
        lineage: ProcessEventStream,
        events: EventSink,
        resolver: crate::targets::Resolver,
        shutdown: CancellationToken,
    ) -> AppContext {
        AppContext {
            inner: Arc::new(Inner {
                policy: RwLock::new(Arc::new(policy)),
                approvals,
                sessions_total: AtomicU64::new(0),
                recordings,
                ssh_ca: Arc::new(ssh_ca),
                pg_ca: pg_ca.map(Arc::new),
                mask_key: Arc::new(mask_key),
                pg_cancels: crate::postgres::CancelRegistry::default(),
                maps: Mutex::new(maps),
                processes: Arc::new(Mutex::new(processes)),
                lineage: Arc::new(lineage),
                events,
                resolver,
                force_close: CancellationToken::new(),
                shutdown,
                tracker: TaskTracker::new(),
                socket_buffers: crate::net::SocketBuffers::default(),
                limits: crate::limits::Limits::default(),
                sessions: {
                    let l = crate::limits::Limits::default();
                    crate::limits::SessionSlots::new(l.sessions, l.sessions_per_cgroup)
                },
            }),
        }
    }

    /// The policy in force now.
    /// Sets the session sockets' buffer sizes; only while the context is
    /// being assembled (before it is cloned), else unchanged.
    pub fn with_socket_buffers(mut self, buffers: crate::net::SocketBuffers) -> AppContext {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.socket_buffers = buffers;
        }
        self
    }

    /// Sets the resource limits; only while the context is being assembled
    /// (before it is cloned), else unchanged.
    pub fn with_limits(mut self, limits: crate::limits::Limits) -> AppContext {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.sessions =
                crate::limits::SessionSlots::new(limits.sessions, limits.sessions_per_cgroup);
            inner.limits = limits;
        }
        self
    }

    /// The resource limits.
    pub fn limits(&self) -> &crate::limits::Limits {
        &self.inner.limits
    }

    /// A slot for a new session from `cgroup`, held while it runs.
    ///
    /// # Errors
    /// A session cap is reached.
    pub fn session_slot(
        &self,
        cgroup: u64,
    ) -> Result<crate::limits::SessionSlot, crate::limits::SlotRefused> {
        self.inner.sessions.acquire(cgroup)
    }

    /// Kernel buffer sizes for both legs of every session.
    pub fn socket_buffers(&self) -> crate::net::SocketBuffers {
        self.inner.socket_buffers
    }

    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(
            &self
                .inner
                .policy
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Puts `policy` in force for every request from now on; returns the old one.
    pub fn replace_policy(&self, policy: Policy) -> Arc<Policy> {
        let mut p = self
            .inner
            .policy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::replace(&mut *p, Arc::new(policy))
    }

    /// Serialises kernel target-map updates (reloads, re-resolution).
    pub fn resolver(&self) -> &crate::targets::Resolver {
        &self.inner.resolver
    }

    /// Where session transcripts go.
    pub fn recordings(&self) -> &std::path::Path {
        &self.inner.recordings
    }

    /// PostgreSQL cancel keys of live sessions.
    pub fn pg_cancels(&self) -> &crate::postgres::CancelRegistry {
        &self.inner.pg_cancels
    }

    /// The PostgreSQL client-leg CA, unless client TLS is off.
    pub fn pg_ca(&self) -> Option<&Arc<crate::postgres::PgCa>> {
        self.inner.pg_ca.as_ref()
    }

    /// The key for the `hash` masking strategy.
    pub fn mask_key(&self) -> Arc<crate::postgres::MaskKey> {
        Arc::clone(&self.inner.mask_key)
    }

    /// The SSH certificate authority.
    pub fn ssh_ca(&self) -> &crate::ssh::SshCa {
        &self.inner.ssh_ca
    }

    /// Held requests and decisions.
    pub fn approvals(&self) -> &Approvals {
        &self.inner.approvals
    }

    /// Counts a new session; returns how many there have been.
    pub fn count_session(&self) -> u64 {
        self.inner.sessions_total.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Sessions accepted since start.
    pub fn sessions_total(&self) -> u64 {
        self.inner.sessions_total.load(Ordering::Relaxed)
    }

    /// Where events go.
    pub fn events(&self) -> &EventSink {
        &self.inner.events
    }

    /// Cancelled when the daemon stops accepting new sessions.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Cancelled when live sessions must end (drain time is over).
    pub fn force_close(&self) -> &CancellationToken {
        &self.inner.force_close
    }

    /// Tracks every session task.
    pub fn tracker(&self) -> &TaskTracker {
        &self.inner.tracker
    }

    /// Runs `f` with the kernel maps locked.
    pub fn with_maps<T>(&self, f: impl FnOnce(&mut KernelMaps) -> T) -> T {
        let mut maps = self
            .inner
            .maps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut maps)
    }

    /// Takes the kernel's flow record for a client at `peer`.
    ///
    /// # Errors
    /// A map operation failed.
    pub fn take_flow(&self, peer: std::net::SocketAddr) -> Result<Option<FlowInfo>, KernelError> {
        self.with_maps(|m| m.take_flow(peer))
    }

    /// Waits for kernel process records (or at most [`LINEAGE_POLL`]), then
    /// applies them to the table.
    ///
    /// # Errors
    /// Polling the ring failed.
    pub async fn follow_lineage(&self) -> std::io::Result<()> {
        // The kernel wakes us only when its ring is filling up (it submits
        // quietly otherwise), so also drain on a short timer.
        tokio::select! {
            r = self.inner.lineage.readable() => r?,
            _ = tokio::time::sleep(LINEAGE_POLL) => {}
        }
        let (table, lineage) = (
            Arc::clone(&self.inner.processes),
            Arc::clone(&self.inner.lineage),
        );
        // Fork handling may read /proc (thread check): off the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || {
            let mut t = table
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            apply_pending(&mut t, &lineage);
        })
        .await;
        Ok(())
    }

    /// Who `tgid`/`pid` is, and the job token of its job root if the policy
    /// names token variables. uid and gid come from the kernel's record at
    /// connect time, which /proc cannot contradict later; the user name
    /// follows them. The CI context comes from the job root under the
    /// policy's trusted runners.
    pub async fn process_identity(
        &self,
        tgid: u32,
        pid: u32,
        uid: u32,
        gid: u32,
    ) -> (ProcessIdentity, Option<EnvToken>) {
        let policy = self.policy();
        let job = &policy.identity().job;
        // Short procfs reads (no disk): done in place rather than handed to
        // the blocking pool, whose thread handoff cost more than the reads.
        // block_in_place moves this worker's other tasks elsewhere meanwhile.
        let (mut id, token) = tokio::task::block_in_place(|| {
            let mut t = self
                .inner
                .processes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // The client's exec (and fork) records were submitted before its
            // connect returned, so they are in the ring now: apply them first.
            apply_pending(&mut t, &self.inner.lineage);
            let (mut id, token) = t.attribute(tgid, pid, ANCESTRY_DEPTH, job);
            if id.uid != uid {
                id.user = t.user_name(uid);
            }
            (id, token)
        });
        id.uid = uid;
        id.gid = gid;
        (id, token)
    }
}

/// Applies every record waiting in the ring. Call with the table locked.
fn apply_pending(table: &mut ProcessTable, lineage: &ProcessEventStream) {
    for ev in lineage.drain() {
        tracing::trace!(?ev, "process record");
        table.apply(ev);
    }
}
