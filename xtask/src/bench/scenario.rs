//! The scenarios: each is one workload, measured the same way under the baseline (no daemon,
//! no programs on the cgroup) and the subject (daemon running with the cgroup as its scope),
//! and each yields a fixed list of named metrics. New workloads (pgbench, memory) are new
//! implementations of [`Scenario`] added to [`all`].

use anyhow::{Result, bail};
use serde::Serialize;
use serde_json::{Value, json};

use super::events::EventPath;
use super::memory::IdleConnections;
use super::pg::{PgBench, PgRows};
use super::rig::{LoadgenResult, Rig};
use super::ssh::{Exec, Scp};
use interlock_harness::Daemon;

/// Which side of the comparison a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Variant {
    Baseline,
    Subject,
}

impl Variant {
    /// `baseline` or `subject`, as in the JSON.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Variant::Baseline => "baseline",
            Variant::Subject => "subject",
        }
    }
}

/// Which direction of a metric is the cheaper one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Better {
    Lower,
    Higher,
}

/// One named number a scenario reports per run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Metric {
    pub(crate) key: &'static str,
    pub(crate) label: &'static str,
    pub(crate) unit: &'static str,
    pub(crate) better: Better,
}

/// What one run of a scenario produced.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Measurement {
    /// One value per metric of the scenario, in its order.
    pub(crate) values: Vec<(&'static str, f64)>,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    /// The workload's own record (loadgen's result line).
    pub(crate) raw: Value,
}

/// A workload measured under both variants.
pub(crate) trait Scenario {
    /// Short identifier, used in the table and as the JSON key.
    fn name(&self) -> &'static str;
    /// One line on what is measured.
    fn title(&self) -> &'static str;
    /// The workload's sizes, recorded with the results.
    fn params(&self) -> Value;
    /// The metrics each [`Measurement`] carries.
    fn metrics(&self) -> &'static [Metric];
    /// Which policy the subject's daemon runs with, or whether it runs at all.
    fn policy(&self) -> DaemonPolicy {
        DaemonPolicy::Standard
    }
    /// One run; `daemon` is `Some` for the subject (unless [`Scenario::policy`] is
    /// [`DaemonPolicy::NoDaemon`]). Fails when the set-up is wrong (every
    /// operation failed, or the subject was (not) intercepted against expectations).
    fn measure(&self, rig: &Rig, daemon: Option<&Daemon>) -> Result<Measurement>;
    /// One run of a [`DaemonPolicy::NoDaemon`] scenario, which measures each side itself.
    fn measure_side(&self, rig: &Rig, variant: Variant) -> Result<Measurement> {
        let _ = (rig, variant);
        bail!("{} needs the daemon", self.name())
    }
}

/// What the subject side of a scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DaemonPolicy {
    /// The daemon with the rig's policy (echo target, PostgreSQL target).
    Standard,
    /// The same plus a `mask` rule (email detector) on the PostgreSQL target.
    Masking,
    /// No daemon: the scenario compares two code paths itself (library benchmarks).
    NoDaemon,
}

/// Workload sizes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub(crate) connects: u64,
    pub(crate) spawns: u64,
    /// pgbench transactions per client.
    pub(crate) pg_transactions: u64,
    /// pgbench -C connections.
    pub(crate) pg_connections: u64,
    /// Rows of the large result set.
    pub(crate) pg_rows: u64,
    /// Idle proxied connections held open.
    pub(crate) idle_connections: u64,
    /// Events emitted through the audit log and the webhook path.
    pub(crate) events: u64,
    /// The file scp moves, MiB.
    pub(crate) ssh_mib: u64,
    /// `ssh host true` per kind of connection.
    pub(crate) ssh_execs: u64,
    /// Quick mode (scenarios say so in their parameters when it changes their sizes).
    pub(crate) quick: bool,
}

/// Every scenario, in the order they run.
pub(crate) fn all(sizes: Sizes) -> Vec<Box<dyn Scenario>> {
    vec![
        Box::new(Connect {
            target: false,
            count: sizes.connects,
        }),
        Box::new(Connect {
            target: true,
            count: sizes.connects,
        }),
        Box::new(Spawn {
            count: sizes.spawns,
        }),
        Box::new(PgBench {
            name: "pg-select-1",
            title: "pgbench select-only, 1 client (subject: through the PostgreSQL proxy, recording on)",
            clients: 1,
            threads: 1,
            transactions: sizes.pg_transactions,
            reconnect: false,
            masking: false,
        }),
        Box::new(PgBench {
            name: "pg-select-8",
            title: "pgbench select-only, 8 clients, 2 threads (subject: proxied, recording on)",
            clients: 8,
            threads: 2,
            transactions: sizes.pg_transactions,
            reconnect: false,
            masking: false,
        }),
        Box::new(PgBench {
            name: "pg-select-8-mask",
            title: "pgbench select-only, 8 clients, the subject's policy adds a mask rule (email \
                    detector); the selected column is an integer, so this is the per-statement \
                    cost of a mask rule, not of scanning",
            clients: 8,
            threads: 2,
            transactions: sizes.pg_transactions,
            reconnect: false,
            masking: true,
        }),
        Box::new(PgRows {
            rows: sizes.pg_rows,
            masking: false,
        }),
        Box::new(PgRows {
            rows: sizes.pg_rows,
            masking: true,
        }),
        Box::new(PgBench {
            name: "pg-connect",
            title: "pgbench -C select-only, 1 client: a new connection (startup, SCRAM, one SELECT, close) per transaction",
            clients: 1,
            threads: 1,
            transactions: sizes.pg_connections,
            reconnect: true,
            masking: false,
        }),
        Box::new(IdleConnections {
            count: sizes.idle_connections,
        }),
        Box::new(EventPath {
            delivery: false,
            count: sizes.events,
        }),
        Box::new(EventPath {
            delivery: true,
            count: sizes.events,
        }),
        Box::new(Scp {
            mib: sizes.ssh_mib,
            quick: sizes.quick,
        }),
        Box::new(Exec {
            count: sizes.ssh_execs,
        }),
    ]
}

pub(crate) const fn metric(
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    better: Better,
) -> Metric {
    Metric {
        key,
        label,
        unit,
        better,
    }
}

const CONNECT_METRICS: &[Metric] = &[
    metric("p50_us", "connect+close p50", "µs", Better::Lower),
    metric("p99_us", "connect+close p99", "µs", Better::Lower),
    metric("rate", "connections/s", "/s", Better::Higher),
];

const EXCHANGE_METRICS: &[Metric] = &[
    metric("p50_us", "round trip p50", "µs", Better::Lower),
    metric("p99_us", "round trip p99", "µs", Better::Lower),
    metric("rate", "connections/s", "/s", Better::Higher),
];

const SPAWN_METRICS: &[Metric] = &[
    metric("p50_us", "spawn p50", "µs", Better::Lower),
    metric("p99_us", "spawn p99", "µs", Better::Lower),
    metric("total_secs", "total", "s", Better::Lower),
];

/// Sequential TCP connections from the cgroup to an echo server: to a non-target they only
/// connect and close; to the target they also exchange one byte, through the daemon's relay
/// in the subject run.
struct Connect {
    target: bool,
    count: u64,
}

impl Scenario for Connect {
    fn name(&self) -> &'static str {
        if self.target {
            "connect-target"
        } else {
            "connect-nontarget"
        }
    }

    fn title(&self) -> &'static str {
        if self.target {
            "connect, write 1 byte, read the echo, close: to a target (subject: relayed by the daemon)"
        } else {
            "connect + close to a loopback server that is not a target"
        }
    }

    fn params(&self) -> Value {
        json!({ "connects": self.count, "exchange": self.target })
    }

    fn metrics(&self) -> &'static [Metric] {
        if self.target {
            EXCHANGE_METRICS
        } else {
            CONNECT_METRICS
        }
    }

    fn measure(&self, rig: &Rig, daemon: Option<&Daemon>) -> Result<Measurement> {
        let server = if self.target {
            rig.target_server()
        } else {
            rig.plain_server()
        };
        let mut args = vec![
            "connect".to_owned(),
            server.to_string(),
            self.count.to_string(),
            "--warmup".to_owned(),
            warmup(self.count).to_string(),
        ];
        if self.target {
            args.push("--exchange".to_owned());
        }
        let result = rig.loadgen(&args)?;
        if let Some(daemon) = daemon {
            // Events reach the log within 100 ms.
            std::thread::sleep(std::time::Duration::from_millis(300));
            let sessions = daemon.count_events("session_started");
            if self.target && sessions == 0 {
                bail!("the daemon recorded no session: connects to the target were not relayed");
            }
            if !self.target && sessions > 0 {
                bail!("the daemon recorded {sessions} session(s) for a non-target destination");
            }
        }
        measurement(self.metrics(), result)
    }
}

/// Sequential spawns of /bin/true from the cgroup (each waited for).
struct Spawn {
    count: u64,
}

impl Scenario for Spawn {
    fn name(&self) -> &'static str {
        "process-start"
    }

    fn title(&self) -> &'static str {
        "start /bin/true and wait for it (fork, exec, exit)"
    }

    fn params(&self) -> Value {
        json!({ "spawns": self.count, "program": "/bin/true" })
    }

    fn metrics(&self) -> &'static [Metric] {
        SPAWN_METRICS
    }

    fn measure(&self, rig: &Rig, _daemon: Option<&Daemon>) -> Result<Measurement> {
        let args = [
            "spawn".to_owned(),
            "/bin/true".to_owned(),
            self.count.to_string(),
            "--warmup".to_owned(),
            warmup(self.count).to_string(),
        ];
        measurement(self.metrics(), rig.loadgen(&args)?)
    }
}

/// Untimed operations before the timed ones: 1 %, at least 1, at most 100.
fn warmup(count: u64) -> u64 {
    (count / 100).clamp(1, 100)
}

/// Picks `metrics` out of a loadgen result. Fails when no operation succeeded.
fn measurement(metrics: &[Metric], result: LoadgenResult) -> Result<Measurement> {
    let (Some(p50), Some(p99)) = (result.latency_us.p50, result.latency_us.p99) else {
        bail!(
            "all {} operations failed; the first error: {}",
            result.count,
            result.first_error.as_deref().unwrap_or("unknown")
        );
    };
    let mut values = Vec::new();
    for m in metrics {
        let value = match m.key {
            "p50_us" => p50,
            "p99_us" => p99,
            "rate" => result.rate_per_sec,
            "total_secs" => result.total_secs,
            other => bail!("no loadgen value for metric {other}"),
        };
        values.push((m.key, value));
    }
    Ok(Measurement {
        values,
        errors: result.errors,
        first_error: result.first_error.clone(),
        raw: serde_json::to_value(&result)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(p50: Option<f64>) -> LoadgenResult {
        serde_json::from_value(json!({
            "count": 10, "ok": 9, "errors": 1, "first_error": "Connection refused",
            "total_secs": 0.01, "rate_per_sec": 900.0,
            "latency_us": {"p50": p50, "p90": 20.0, "p99": 30.0, "max": 40.0},
            "op": "connect"
        }))
        .unwrap()
    }

    #[test]
    fn measurement_follows_metric_order() {
        let m = measurement(CONNECT_METRICS, result(Some(10.0))).unwrap();
        assert_eq!(
            m.values,
            vec![("p50_us", 10.0), ("p99_us", 30.0), ("rate", 900.0)]
        );
        assert_eq!(m.errors, 1);
        assert_eq!(m.raw["op"], "connect");
        let m = measurement(SPAWN_METRICS, result(Some(10.0))).unwrap();
        assert_eq!(m.values.last(), Some(&("total_secs", 0.01)));
    }

    #[test]
    fn all_failed_is_an_error() {
        let err = measurement(CONNECT_METRICS, result(None)).unwrap_err();
        assert!(err.to_string().contains("Connection refused"), "{err}");
    }

    #[test]
    fn scenarios_have_distinct_names_and_metrics() {
        let all = all(Sizes {
            connects: 10,
            spawns: 5,
            pg_transactions: 10,
            pg_connections: 10,
            pg_rows: 10,
            idle_connections: 10,
            events: 10,
            ssh_mib: 1,
            ssh_execs: 2,
            quick: true,
        });
        let mut names: Vec<_> = all.iter().map(|s| s.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 14);
        assert!(all.iter().all(|s| !s.metrics().is_empty()));
    }

    #[test]
    fn warmup_is_bounded() {
        assert_eq!(warmup(5), 1);
        assert_eq!(warmup(2000), 20);
        assert_eq!(warmup(1_000_000), 100);
    }
}
