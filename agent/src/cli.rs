//! The `interlock` command line.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};

use crate::{
    audit::{AuditOptions, Fsync, Rotation},
    daemon::{DaemonOptions, FailureMode},
    sinks::{WebhookOptions, WebhookSpec},
};

/// interlock: intercept, attribute and control outbound connections of CI jobs.
#[derive(Debug, Parser)]
#[command(name = "interlock", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (as root): load and attach the eBPF programs, proxy intercepted connections.
    Run(Box<RunArgs>),
    /// Remove an instance's pinned programs and maps (intercepted destinations then go direct).
    Detach {
        /// Instance whose pins to remove.
        #[arg(long, default_value = "default")]
        instance: String,
        /// Directory of every instance's pins (as given to `run`).
        #[arg(long, default_value = crate::ebpf::DEFAULT_PIN_ROOT)]
        pin_root: PathBuf,
    },
    /// Policy files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Webhook endpoints.
    Webhook {
        #[command(subcommand)]
        command: WebhookCommand,
    },
    /// Recorded sessions in the audit log (read-only).
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Requests held for approval: list, show, approve, deny (via the daemon's control socket).
    Approvals {
        /// The daemon's control socket.
        #[arg(long, global = true, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        #[command(subcommand)]
        command: ApprovalsCommand,
    },
    /// interlock's certificate authorities, for clients to trust.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// The running daemon: policy, sessions, pending approvals.
    Status {
        /// The daemon's control socket.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// The daemon's JSON answer instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a session's recording as a transcript timed from its start.
    Replay {
        /// Session id or a unique prefix of it.
        id: String,
        /// State directory holding audit/.
        #[arg(long, default_value = "/var/lib/interlock/default")]
        state_dir: PathBuf,
        /// Pace the entries in real time divided by X (2 = twice as fast); default: print at once.
        #[arg(long, value_name = "X")]
        speed: Option<f64>,
        /// Send terminal recordings to this terminal as recorded, escape sequences and all
        /// (the recorded job chose them); default: as plain text.
        #[arg(long)]
        raw: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Print a CA for clients: the PostgreSQL client-leg CA certificate (PEM, for
    /// `sslrootcert` with `sslmode=verify-full`), or with --ssh the `@cert-authority`
    /// known_hosts line.
    Export {
        /// The SSH CA's known_hosts line (clients keep StrictHostKeyChecking=yes).
        #[arg(long)]
        ssh: bool,
        /// known_hosts host patterns the line covers (comma-separated; with --ssh).
        /// The default `*` trusts the CA for every host the client connects to;
        /// name the targets instead (`*.prod.internal,[10.30.0.*]:2222`).
        #[arg(long, default_value = "*", requires = "ssh")]
        hosts: String,
        /// State directory holding the CA (created on first start).
        #[arg(long, default_value = "/var/lib/interlock/default")]
        state_dir: PathBuf,
    },
}

/// The default instance's control socket.
pub const DEFAULT_SOCKET: &str = "/var/lib/interlock/default/control.sock";

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Pending requests, oldest first.
    List {
        /// The daemon's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One request (pending or recently decided), as JSON.
    Show { id: String },
    /// Let a held request through.
    Approve {
        id: String,
        /// Why (recorded in the audit trail).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Refuse a held request.
    Deny {
        id: String,
        /// Why (recorded in the audit trail).
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// One line per session: id, start, duration, target, destination, outcome, bytes, who.
    List {
        /// State directory holding audit/.
        #[arg(long, default_value = "/var/lib/interlock/default")]
        state_dir: PathBuf,
        /// Only sessions started at or after an RFC 3339 UTC time or within a duration (1h, 30m).
        #[arg(long)]
        since: Option<String>,
        /// Only sessions whose exe, argv, user, CI values or cgroup contain TEXT.
        #[arg(long, value_name = "TEXT")]
        identity: Option<String>,
        /// Only sessions to this target.
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Everything the log holds about one session.
    Show {
        /// Session id or a unique prefix of it.
        id: String,
        /// State directory holding audit/.
        #[arg(long, default_value = "/var/lib/interlock/default")]
        state_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the host's audit public key (ed25519, 64 hex digits).
    Pubkey {
        /// State directory holding audit/host.key.
        #[arg(long, default_value = "/var/lib/interlock/default")]
        state_dir: PathBuf,
    },
    /// Check the hash chain and checkpoint signatures; name the first bad record (exit 1).
    Verify {
        /// State directory (or its audit/ directory).
        #[arg(default_value = "/var/lib/interlock/default")]
        dir: PathBuf,
        /// Trusted public key (hex); default: the key file beside the log.
        #[arg(long)]
        pubkey: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Send one signed test event to URL, or (without URL) have the running daemon send one
    /// to each of its endpoints with their secrets; print each receiver's status and body.
    Test {
        /// The endpoint; default: every endpoint of the daemon at --socket.
        #[arg(value_parser = webhook_url)]
        url: Option<reqwest::Url>,
        /// With URL: file of `whsec_` secrets (one a line); without it the request is unsigned.
        #[arg(long, requires = "url")]
        secret_file: Option<PathBuf>,
        /// Without URL: the daemon's control socket.
        #[arg(long, default_value = DEFAULT_SOCKET, conflicts_with = "url")]
        socket: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate policy files; errors name file:line:column.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show which rule decides a described request, and why each rule does or does not apply.
    Explain(Box<ExplainArgs>),
}

/// A described request for `interlock policy explain`.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// Policy file.
    #[arg(long, default_value = "/etc/interlock/policy.yaml")]
    pub policy: PathBuf,
    /// Target name.
    #[arg(long)]
    pub target: String,
    /// Requester's uid.
    #[arg(long, default_value_t = 0)]
    pub uid: u32,
    /// Requester's user name.
    #[arg(long)]
    pub user: Option<String>,
    /// Requester's executable path.
    #[arg(long)]
    pub exe: Option<String>,
    /// Requester's command line (one string, split on spaces).
    #[arg(long)]
    pub argv: Option<String>,
    /// An ancestor's executable path (repeatable).
    #[arg(long = "ancestor-exe")]
    pub ancestor_exes: Vec<String>,
    /// Requester's cgroup-v2 path.
    #[arg(long)]
    pub cgroup: Option<String>,
    /// A CI variable of the job root's environment, NAME=VALUE (repeatable).
    #[arg(long = "ci", value_parser = key_value)]
    pub ci: Vec<(String, String)>,
    /// The requester has no CI context (no trusted runner), for this reason:
    /// `ci:` conditions are unknown.
    #[arg(long, conflicts_with = "ci")]
    pub no_ci_context: Option<String>,
    /// Explain as a flow whose identity fact this is could not be established
    /// (repeatable; e.g. `cgroup` for a process that exited before the daemon
    /// looked it up).
    #[arg(long, value_enum)]
    pub unknown: Vec<crate::policy::Fact>,
    /// A JSON file with a job token's claims (its payload): explain as if the
    /// session presented a verified token carrying them. The issuer is the
    /// one whose URL its `iss` names.
    #[arg(long, value_name = "FILE")]
    pub oidc_claims: Option<PathBuf>,
    /// SSH: the user the client asks for (`ssh NAME@host`); interlock logs
    /// in upstream as the target's `upstream.user`, or as this user when
    /// `upstream.users` lists it (otherwise the login is refused).
    #[arg(long, value_name = "NAME")]
    pub ssh_user: Option<String>,
    /// A SQL statement (classified as the PostgreSQL proxy would).
    #[arg(long, conflicts_with = "command")]
    pub sql: Option<String>,
    /// Statement classes, instead of or besides classifying --sql (repeatable).
    #[arg(long = "class", value_enum)]
    pub classes: Vec<crate::policy::StatementClass>,
    /// An SSH command (or sftp path).
    #[arg(long)]
    pub command: Option<String>,
    /// The SSH request kind for --command.
    #[arg(long, value_enum, default_value = "exec")]
    pub kind: crate::policy::CommandKind,
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE"))
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Policy file.
    #[arg(long, default_value = "/etc/interlock/policy.yaml")]
    pub policy: PathBuf,
    /// Instance name: separates pins, listeners and state of daemons side by side.
    #[arg(long, default_value = "default")]
    pub instance: String,
    /// Cgroup to intercept (repeatable); `/` is the whole host. Default: `/`.
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// State directory (event log). Default: /var/lib/interlock/<instance>.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// While the daemon is down: refuse intercepted connects (closed) or let them go direct (open).
    #[arg(long, value_enum, default_value = "closed")]
    pub failure_mode: FailureMode,
    /// Seconds live sessions may continue after SIGTERM.
    #[arg(long, default_value_t = 10.0)]
    pub drain_secs: f64,
    /// Size of the kernel's process-record ring in KiB (a power of two, at
    /// least 4; applies when the instance's maps are first created).
    #[arg(long, default_value_t = 4096, value_parser = ring_kib)]
    pub process_ring_kib: u32,
    /// Entries of the kernel's flow table: connects to targets waiting to
    /// be accepted (and, apart, redirected sockets open at once). When it
    /// is full further connects are refused (fail closed; direct in
    /// fail-open mode) and reported. Applies when the instance's maps are
    /// first created.
    #[arg(long, default_value_t = agent_common::flow::FLOWS_MAX, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub flow_table_entries: u32,
    /// Redirected sockets one cgroup may hold open at once (connected or
    /// connecting to targets); further connects from it are refused and
    /// reported with the cgroup, in both failure modes. 0: no limit.
    /// Default: an eighth of --flow-table-entries.
    #[arg(long)]
    pub flow_quota: Option<u32>,
    /// Directory of every instance's pins; it and everything in it must
    /// belong to root and be writable by no one else.
    #[arg(long, default_value = crate::ebpf::DEFAULT_PIN_ROOT)]
    pub pin_root: PathBuf,
    /// How often host names in targets are resolved again, in seconds (a
    /// failed lookup keeps the addresses a name last resolved to).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub resolve_every_secs: u64,
    /// How long, in seconds, an address a target's host name resolved to
    /// stays intercepted after lookups stop returning it (round-robin and
    /// failover names return a subset each time).
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(0..=7 * 86_400))]
    pub resolve_keep_secs: u64,
    /// When audit records reach the disk: within 100 ms (interval), after each (always), or when the OS decides (never).
    #[arg(long, value_enum, default_value = "interval")]
    pub audit_fsync: Fsync,
    /// Size at which an audit segment file is rotated, in KiB.
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u64).range(1..))]
    pub audit_segment_kib: u64,
    /// Size at which events.jsonl (the JSONL sink) is rotated, in KiB.
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u64).range(1..))]
    pub events_file_kib: u64,
    /// Rotated events.jsonl files kept (events.jsonl.1 is the newest).
    #[arg(long, default_value_t = 5)]
    pub events_file_keep: u32,
    /// Webhook endpoint for every event (repeatable); `URL,secret=PATH` gives it its own
    /// secret file, else --webhook-secret-file signs for it.
    #[arg(long = "webhook", value_name = "URL[,secret=PATH]", value_parser = webhook_spec)]
    pub webhooks: Vec<WebhookSpec>,
    /// File of `whsec_<base64>` secrets, one a line; each signs every request (key rotation).
    /// Used by every --webhook without a secret file of its own.
    #[arg(long, value_name = "PATH")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Events per webhook request (more than 1: a JSON array body).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub webhook_batch: u16,
    /// Bound of each webhook endpoint's spool of undelivered events, in MiB (the oldest are dropped beyond it).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_spool_mib: u64,
    /// The same bound in KiB, for small hosts and tests; overrides --webhook-spool-mib.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_spool_kib: Option<u64>,
    /// Chat webhook (Slack-compatible incoming webhook) told about each new hold (repeatable).
    #[arg(long = "approval-webhook", value_name = "URL", value_parser = webhook_url)]
    pub approval_webhooks: Vec<reqwest::Url>,
    /// Receiver of a generic JSON notification of each new hold, with its page URL (repeatable).
    #[arg(long = "approval-json-webhook", value_name = "URL", value_parser = webhook_url)]
    pub approval_json_webhooks: Vec<reqwest::Url>,
    /// Serve the approvals page (the policy's `web:` section) on this address, instead of
    /// `web.listen`. Without either, the page is off.
    #[arg(long, value_name = "ADDR:PORT")]
    pub web_listen: Option<std::net::SocketAddr>,
    /// Answer PostgreSQL clients' SSLRequest with 'N' (and refuse direct TLS) instead of
    /// terminating TLS with a certificate from interlock's CA (`interlock ca export`).
    #[arg(long)]
    pub no_client_tls: bool,
    /// Kernel send and receive buffer of each socket of an intercepted
    /// session (client and upstream legs), in bytes; default: the kernel's.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1024..))]
    pub socket_buffer_bytes: Option<u32>,
    /// Intercepted sessions (all protocols) open at once; further connects are
    /// refused (PostgreSQL: FATAL 53300) and recorded.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sessions: u32,
    /// Intercepted sessions one cgroup (one job) may have open at once.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sessions_per_cgroup: u32,
    /// Largest PostgreSQL message after startup, in MiB (startup packets:
    /// 10 000 bytes, as PostgreSQL); a longer one ends that session.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1023))]
    pub pg_max_message_mib: u32,
    /// Longest SQL text classified, in KiB; a longer statement is
    /// `unparseable` (decided fail closed).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub pg_classify_max_kib: u32,
    /// Longest time classifying one statement may take, in seconds; past it
    /// the statement is `unparseable`.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub pg_classify_secs: u64,
    /// Threads classifying long statements at once (all sessions).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub pg_classify_workers: u32,
    /// Control-socket connections open at once; more are closed at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub control_connections: u32,
    /// Seconds a control-socket connection may wait for (or take to send) a request.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub control_idle_secs: u64,
}

fn webhook_spec(s: &str) -> Result<WebhookSpec, String> {
    WebhookSpec::parse(s).map_err(|e| e.to_string())
}

fn webhook_url(s: &str) -> Result<reqwest::Url, String> {
    crate::sinks::parse_url(s).map_err(|e| e.to_string())
}

fn ring_kib(s: &str) -> Result<u32, String> {
    let v: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of KiB"))?;
    if v >= 4 && v.is_power_of_two() && v <= 1 << 20 {
        Ok(v)
    } else {
        Err(format!(
            "{v} KiB is not a power of two between 4 and 1048576"
        ))
    }
}

impl RunArgs {
    /// The daemon options these arguments describe.
    pub fn options(&self) -> DaemonOptions {
        DaemonOptions {
            policy: self.policy.clone(),
            instance: self.instance.clone(),
            scopes: self.scopes.clone(),
            state_dir: self
                .state_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("/var/lib/interlock").join(&self.instance)),
            failure_mode: self.failure_mode,
            drain: Duration::try_from_secs_f64(self.drain_secs).unwrap_or(Duration::from_secs(10)),
            process_ring_bytes: self.process_ring_kib.saturating_mul(1024),
            flow_entries: self.flow_table_entries,
            flow_quota: self
                .flow_quota
                .unwrap_or((self.flow_table_entries / 8).max(1)),
            pin_root: self.pin_root.clone(),
            resolve_every: Duration::from_secs(self.resolve_every_secs),
            resolve_keep: Duration::from_secs(self.resolve_keep_secs),
            audit: AuditOptions {
                fsync: self.audit_fsync,
                segment_bytes: self.audit_segment_kib.saturating_mul(1024),
                ..AuditOptions::default()
            },
            events_file: Rotation {
                max_bytes: self.events_file_kib.saturating_mul(1024),
                keep: self.events_file_keep,
            },
            webhooks: WebhookOptions {
                endpoints: self.webhooks.clone(),
                secret_file: self.webhook_secret_file.clone(),
                batch: usize::from(self.webhook_batch),
                spool_bytes: match self.webhook_spool_kib {
                    Some(kib) => kib.saturating_mul(1 << 10),
                    None => self.webhook_spool_mib.saturating_mul(1 << 20),
                },
            },
            approval_webhooks: self.approval_webhooks.clone(),
            approval_json_webhooks: self.approval_json_webhooks.clone(),
            web_listen: self.web_listen,
            client_tls: !self.no_client_tls,
            socket_buffers: crate::net::SocketBuffers::new(self.socket_buffer_bytes),
            limits: crate::limits::Limits {
                sessions: self.max_sessions,
                sessions_per_cgroup: self.max_sessions_per_cgroup,
                pg_max_message: usize::try_from(self.pg_max_message_mib)
                    .unwrap_or(64)
                    .saturating_mul(1024 * 1024),
                classify: crate::postgres::ClassifyBudget::new(
                    usize::try_from(self.pg_classify_max_kib)
                        .unwrap_or(1024)
                        .saturating_mul(1024),
                    Duration::from_secs(self.pg_classify_secs),
                    usize::try_from(self.pg_classify_workers).unwrap_or(4),
                ),
                control_connections: self.control_connections,
                control_idle: Duration::from_secs(self.control_idle_secs),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_defaults() {
        let cli = Cli::try_parse_from(["interlock", "run", "--policy", "p.yaml", "--scope", "/ci"])
            .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        let o = args.options();
        assert_eq!(o.state_dir, PathBuf::from("/var/lib/interlock/default"));
        assert_eq!(o.scopes, vec!["/ci".to_string()]);
        assert_eq!(o.failure_mode, FailureMode::Closed);
        assert_eq!(o.audit.fsync, Fsync::Interval);
        assert_eq!(o.audit.segment_bytes, 64 << 20);
    }

    #[test]
    fn audit_options_parse() {
        let cli = Cli::try_parse_from([
            "interlock",
            "run",
            "--audit-fsync",
            "always",
            "--audit-segment-kib",
            "16",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.options().audit.fsync, Fsync::Always);
        assert_eq!(args.options().audit.segment_bytes, 16 << 10);
        assert!(Cli::try_parse_from(["interlock", "run", "--audit-fsync", "sometimes"]).is_err());
        let cli = Cli::try_parse_from(["interlock", "audit", "verify"]).unwrap();
        let Command::Audit {
            command: AuditCommand::Verify { dir, pubkey },
        } = cli.command
        else {
            panic!("not audit verify")
        };
        assert_eq!(dir, PathBuf::from("/var/lib/interlock/default"));
        assert_eq!(pubkey, None);
    }

    #[test]
    fn ring_size_must_be_a_power_of_two() {
        assert!(Cli::try_parse_from(["interlock", "run", "--process-ring-kib", "64"]).is_ok());
        for bad in ["3", "100", "x"] {
            let err =
                Cli::try_parse_from(["interlock", "run", "--process-ring-kib", bad]).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn webhook_options_parse() {
        let cli = Cli::try_parse_from([
            "interlock",
            "run",
            "--webhook",
            "https://a.example/h",
            "--webhook",
            "http://127.0.0.1:9/x",
            "--webhook-secret-file",
            "/s",
            "--webhook-batch",
            "10",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        let w = args.options().webhooks;
        assert_eq!(w.endpoints.len(), 2);
        assert_eq!((w.batch, w.spool_bytes), (10, 256 << 20));
        let err = Cli::try_parse_from(["interlock", "run", "--webhook", "ftp://x/"]).unwrap_err();
        assert!(err.to_string().contains("ftp://x/"), "{err}");
        let cli = Cli::try_parse_from([
            "interlock",
            "run",
            "--webhook",
            "https://a/,secret=/a.secret",
            "--webhook-spool-kib",
            "8",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        let w = args.options().webhooks;
        assert_eq!(
            w.endpoints[0].secret_file.as_deref(),
            Some(std::path::Path::new("/a.secret"))
        );
        assert_eq!(w.spool_bytes, 8 << 10);
        assert!(Cli::try_parse_from(["interlock", "webhook", "test"]).is_ok());
        assert!(
            Cli::try_parse_from(["interlock", "webhook", "test", "--secret-file", "/s"]).is_err(),
            "--secret-file only with a URL"
        );
    }

    #[test]
    fn bad_failure_mode_is_named() {
        let err = Cli::try_parse_from(["interlock", "run", "--failure-mode", "maybe"]).unwrap_err();
        assert!(err.to_string().contains("maybe"), "{err}");
    }
}
