//! PostgreSQL scenarios: pgbench select-only (with and without a masking rule), new
//! connections per transaction, and a large result set read by psql, each run inside the
//! bench cgroup against the rig's server (subject: through the daemon's PostgreSQL proxy,
//! which injects the credentials and records every statement).

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::rig::Rig;
use super::scenario::{Better, DaemonPolicy, Measurement, Metric, Scenario, metric};
use interlock_harness::Daemon;
use interlock_harness::postgres::{DATABASE, PASSWORD, ROLE};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

const SELECT_METRICS: &[Metric] = &[
    metric("tps", "transactions/s", "/s", Better::Higher),
    metric("p50_us", "latency p50", "µs", Better::Lower),
    metric("p99_us", "latency p99", "µs", Better::Lower),
];

const CONNECT_METRICS: &[Metric] = &[
    metric("rate", "connections/s", "/s", Better::Higher),
    metric("connect_us", "avg connection time", "µs", Better::Lower),
];

const ROWS_METRICS: &[Metric] = &[
    metric("rows_per_sec", "rows/s", "/s", Better::Higher),
    metric("total_secs", "total", "s", Better::Lower),
];

/// `pgbench -S` (select-only) with `clients` connections made up front; with `reconnect`,
/// `pgbench -C`: a new connection for every transaction.
pub(crate) struct PgBench {
    pub(crate) name: &'static str,
    pub(crate) title: &'static str,
    pub(crate) clients: u32,
    pub(crate) threads: u32,
    /// Per client.
    pub(crate) transactions: u64,
    pub(crate) reconnect: bool,
    pub(crate) masking: bool,
}

impl Scenario for PgBench {
    fn name(&self) -> &'static str {
        self.name
    }

    fn title(&self) -> &'static str {
        self.title
    }

    fn params(&self) -> Value {
        json!({
            "tool": "pgbench -n -S",
            "clients": self.clients,
            "threads": self.threads,
            "transactions_per_client": self.transactions,
            "reconnect": self.reconnect,
            "mask_rule": self.masking,
        })
    }

    fn metrics(&self) -> &'static [Metric] {
        if self.reconnect {
            CONNECT_METRICS
        } else {
            SELECT_METRICS
        }
    }

    fn policy(&self) -> DaemonPolicy {
        if self.masking {
            DaemonPolicy::Masking
        } else {
            DaemonPolicy::Standard
        }
    }

    fn measure(&self, rig: &Rig, daemon: Option<&Daemon>) -> Result<Measurement> {
        let logs = rig.fresh_dir("pgbench")?;
        let mut args = vec![
            "-n".to_owned(),
            "-S".to_owned(),
            "-c".to_owned(),
            self.clients.to_string(),
            "-j".to_owned(),
            self.threads.to_string(),
            "-t".to_owned(),
            self.transactions.to_string(),
        ];
        if self.reconnect {
            args.push("-C".to_owned());
        } else {
            args.push("-l".to_owned());
            args.push(format!("--log-prefix={}", logs.join("txn").display()));
        }
        let mut cmd = rig.in_cgroup(Path::new(PG_BIN).join("pgbench").as_path(), &args);
        client_env(rig, &mut cmd);
        cmd.current_dir(&logs).stdin(Stdio::null());
        let out = cmd.output().context("cannot start pgbench")?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "pgbench failed ({}): {}{}",
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let summary = PgbenchSummary::parse(&stdout)?;
        if let Some(daemon) = daemon {
            expect_statements(daemon)?;
        }
        let mut values = Vec::new();
        let mut raw = json!({
            "tps": summary.tps,
            "processed": summary.processed,
            "failed": summary.failed,
            "connection_ms": summary.connection_ms,
        });
        if self.reconnect {
            values.push(("rate", summary.tps));
            values.push((
                "connect_us",
                summary
                    .connection_ms
                    .context("pgbench -C printed no average connection time")?
                    * 1000.0,
            ));
        } else {
            let mut latencies = read_latencies(&logs)?;
            let (Some(p50), Some(p99)) = (
                percentile(&mut latencies, 0.50),
                percentile(&mut latencies, 0.99),
            ) else {
                bail!("pgbench logged no transaction");
            };
            raw["logged"] = json!(latencies.len());
            values.push(("tps", summary.tps));
            values.push(("p50_us", p50));
            values.push(("p99_us", p99));
        }
        fs::remove_dir_all(&logs).ok();
        Ok(Measurement {
            values,
            errors: summary.failed,
            first_error: (summary.failed > 0).then(|| "pgbench: failed transactions".to_owned()),
            raw,
        })
    }
}

/// `rows` rows of three columns (an int, its md5, 64 bytes of text) read by psql, output
/// discarded; timed around the whole psql process (start, connect, query, exit).
pub(crate) struct PgRows {
    pub(crate) rows: u64,
    /// The subject's policy has the email-detector mask rule, which scans both text columns.
    pub(crate) masking: bool,
}

impl Scenario for PgRows {
    fn name(&self) -> &'static str {
        if self.masking {
            "pg-large-result-mask"
        } else {
            "pg-large-result"
        }
    }

    fn title(&self) -> &'static str {
        if self.masking {
            "psql reads one large result set; the subject's policy masks with the email \
             detector, which scans both text columns of every row (none matches)"
        } else {
            "psql reads one large result set (int, md5 text, 64-byte text per row)"
        }
    }

    fn params(&self) -> Value {
        json!({ "rows": self.rows, "tool": "psql -At -o /dev/null", "mask_rule": self.masking })
    }

    fn metrics(&self) -> &'static [Metric] {
        ROWS_METRICS
    }

    fn policy(&self) -> DaemonPolicy {
        if self.masking {
            DaemonPolicy::Masking
        } else {
            DaemonPolicy::Standard
        }
    }

    fn measure(&self, rig: &Rig, daemon: Option<&Daemon>) -> Result<Measurement> {
        let sql = format!(
            "SELECT i, md5(i::text), repeat('x', 64) FROM generate_series(1, {}) AS s(i)",
            self.rows
        );
        let args = [
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-o",
            "/dev/null",
            "-c",
            &sql,
        ]
        .map(str::to_owned);
        let mut cmd = rig.in_cgroup(Path::new(PG_BIN).join("psql").as_path(), &args);
        client_env(rig, &mut cmd);
        cmd.stdin(Stdio::null());
        let started = Instant::now();
        let out = cmd.output().context("cannot start psql")?;
        let secs = started.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!(
                "psql failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        if let Some(daemon) = daemon {
            expect_statements(daemon)?;
        }
        #[allow(clippy::cast_precision_loss)]
        let rate = self.rows as f64 / secs;
        Ok(Measurement {
            values: vec![("rows_per_sec", rate), ("total_secs", secs)],
            errors: 0,
            first_error: None,
            raw: json!({ "rows": self.rows, "secs": secs }),
        })
    }
}

/// The subject really was proxied: the daemon recorded statements.
fn expect_statements(daemon: &Daemon) -> Result<()> {
    // Events reach the log within 100 ms.
    std::thread::sleep(Duration::from_millis(300));
    if daemon.count_events("statement") == 0 {
        bail!("the daemon recorded no statement: the client was not proxied");
    }
    Ok(())
}

/// What pgbench prints at the end of a run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PgbenchSummary {
    pub(crate) tps: f64,
    pub(crate) processed: u64,
    pub(crate) failed: u64,
    /// `initial connection time` or, with -C, `average connection time`, in ms.
    pub(crate) connection_ms: Option<f64>,
}

impl PgbenchSummary {
    /// Parses pgbench 15's report. Fails without a `tps =` line.
    pub(crate) fn parse(text: &str) -> Result<PgbenchSummary> {
        let mut tps = None;
        let mut processed = 0;
        let mut failed = 0;
        let mut connection_ms = None;
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("tps = ") {
                tps = first_number(rest);
            } else if let Some(rest) =
                line.strip_prefix("number of transactions actually processed: ")
            {
                processed = rest
                    .split('/')
                    .next()
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0);
            } else if let Some(rest) = line.strip_prefix("number of failed transactions: ") {
                failed = rest
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
            } else if let Some(rest) = line
                .strip_prefix("average connection time = ")
                .or_else(|| line.strip_prefix("initial connection time = "))
            {
                connection_ms = first_number(rest);
            }
        }
        Ok(PgbenchSummary {
            tps: tps.with_context(|| format!("no `tps = ` line in pgbench's output:\n{text}"))?,
            processed,
            failed,
            connection_ms,
        })
    }
}

fn first_number(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// Per-transaction latencies (µs) from every pgbench `-l` log file in `dir`.
fn read_latencies(dir: &Path) -> Result<Vec<f64>> {
    let mut all = Vec::new();
    for entry in fs::read_dir(dir)? {
        let text = fs::read_to_string(entry?.path())?;
        all.extend(log_latencies(&text));
    }
    Ok(all)
}

/// The latency column of a pgbench log (`client txn latency_us script epoch epoch_us`);
/// failed or skipped transactions (a word instead of a number) are left out.
pub(crate) fn log_latencies(text: &str) -> impl Iterator<Item = f64> + '_ {
    text.lines()
        .filter_map(|line| line.split_whitespace().nth(2)?.parse::<f64>().ok())
}

/// The `q` quantile (nearest rank) of `values`; sorts them. `None` when empty.
pub(crate) fn percentile(values: &mut [f64], q: f64) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return None;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    values.get(rank - 1).copied()
}

/// The libpq environment of the bench's clients: the rig's server over TCP as the test role
/// with its password, no TLS or GSS negotiation, nothing from a service file.
fn client_env(rig: &Rig, cmd: &mut std::process::Command) {
    let pg = rig.pg();
    cmd.env("PGPASSWORD", PASSWORD)
        .env("PGSSLMODE", "disable")
        .env("PGGSSENCMODE", "disable")
        .env("PGHOST", pg.addr.ip().to_string())
        .env("PGPORT", pg.addr.port().to_string())
        .env("PGUSER", ROLE)
        .env("PGDATABASE", DATABASE)
        .env_remove("PGSERVICE");
}

#[cfg(test)]
mod tests {
    use super::*;

    const SELECT_OUTPUT: &str = "pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 1
query mode: simple
number of clients: 8
number of threads: 2
maximum number of tries: 1
number of transactions per client: 1000
number of transactions actually processed: 8000/8000
number of failed transactions: 0 (0.000%)
latency average = 0.601 ms
initial connection time = 21.043 ms
tps = 13301.523417 (without initial connection time)
";

    const CONNECT_OUTPUT: &str = "number of transactions actually processed: 495/500
number of failed transactions: 5 (1.000%)
latency average = 3.110 ms
average connection time = 2.734 ms
tps = 321.555 (including reconnection times)
";

    #[test]
    fn parses_a_select_only_report() {
        let s = PgbenchSummary::parse(SELECT_OUTPUT).unwrap();
        assert_eq!(
            s,
            PgbenchSummary {
                tps: 13301.523417,
                processed: 8000,
                failed: 0,
                connection_ms: Some(21.043),
            }
        );
    }

    #[test]
    fn parses_a_reconnect_report() {
        let s = PgbenchSummary::parse(CONNECT_OUTPUT).unwrap();
        assert_eq!((s.tps, s.processed, s.failed), (321.555, 495, 5));
        assert_eq!(s.connection_ms, Some(2.734));
    }

    #[test]
    fn a_report_without_tps_is_an_error() {
        let err = PgbenchSummary::parse("pgbench: error: connection failed\n").unwrap_err();
        assert!(err.to_string().contains("no `tps = `"));
    }

    #[test]
    fn reads_latencies_from_a_log() {
        let log = "0 1 512 0 1732258000 123456\n0 2 498 0 1732258000 124000\n\
                   1 1 failed 0 1732258000 125000\nbad\n";
        let got: Vec<f64> = log_latencies(log).collect();
        assert_eq!(got, vec![512.0, 498.0]);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut v, 0.50), Some(50.0));
        assert_eq!(percentile(&mut v, 0.99), Some(99.0));
        assert_eq!(percentile(&mut v, 1.0), Some(100.0));
        assert_eq!(percentile(&mut [7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&mut [], 0.5), None);
    }
}
