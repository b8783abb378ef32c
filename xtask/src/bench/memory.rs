//! Memory: the daemon's resident set with many idle proxied PostgreSQL connections. The
//! `pgconns` helper (tests/src/bin/pgconns.rs) opens the connections from inside the cgroup
//! and holds them until told to go; xtask reads the daemon's VmRSS before and while they are
//! held. The baseline side opens the same connections directly; it has no daemon, so its
//! daemon memory is shown as 0 and the ratio as n/a.

use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::rig::Rig;
use super::scenario::{Better, Measurement, Metric, Scenario, metric};
use interlock_harness::Daemon;
use interlock_harness::postgres::{DATABASE, PASSWORD, ROLE};

const METRICS: &[Metric] = &[
    metric("open_rate", "connections opened/s", "/s", Better::Higher),
    metric("rss_mib", "daemon RSS with all open", "MiB", Better::Lower),
    metric(
        "per_conn_kib",
        "daemon RSS per connection",
        "KiB",
        Better::Lower,
    ),
];

/// `count` idle connections held open at once.
pub(crate) struct IdleConnections {
    pub(crate) count: u64,
}

impl Scenario for IdleConnections {
    fn name(&self) -> &'static str {
        "pg-idle-memory"
    }

    fn title(&self) -> &'static str {
        "idle PostgreSQL connections held open: daemon RSS (VmRSS) growth per connection; \
         baseline (no daemon) shows 0"
    }

    fn params(&self) -> Value {
        json!({ "connections": self.count, "concurrency": CONCURRENCY, "client": "tokio-postgres" })
    }

    fn metrics(&self) -> &'static [Metric] {
        METRICS
    }

    fn measure(&self, rig: &Rig, daemon: Option<&Daemon>) -> Result<Measurement> {
        let pid = daemon.and_then(Daemon::pid);
        let before = pid.map(vm_rss_of).transpose()?;
        let pg = rig.pg();
        let args = [
            pg.addr.to_string(),
            ROLE.to_owned(),
            DATABASE.to_owned(),
            self.count.to_string(),
            "--concurrency".to_owned(),
            CONCURRENCY.to_string(),
        ];
        let mut cmd = rig.in_cgroup(&rig.helper("pgconns"), &args);
        cmd.env("PGPASSWORD", PASSWORD)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("cannot start pgconns")?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out).read_line(&mut line)?;
        }
        // The daemon's allocations for the last sessions settle.
        std::thread::sleep(Duration::from_millis(300));
        let during = pid.map(vm_rss_of).transpose()?;
        // Closing stdin tells pgconns to close its connections and exit.
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(b"done\n");
        }
        let out = child.wait_with_output()?;
        let result: Value = serde_json::from_str(line.trim()).with_context(|| {
            format!(
                "pgconns printed {line:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
        let opened = result["opened"].as_u64().unwrap_or(0);
        if opened == 0 {
            bail!(
                "pgconns opened no connection; first error: {}",
                result["first_error"]
            );
        }
        if let Some(daemon) = daemon
            && daemon.count_events("session_started") == 0
        {
            bail!("the daemon recorded no session: the connections were not proxied");
        }
        let (rss_mib, per_conn_kib) = match (before, during) {
            (Some(b), Some(d)) => {
                #[allow(clippy::cast_precision_loss)]
                let per = (d.saturating_sub(b)) as f64 / opened as f64 / 1024.0;
                #[allow(clippy::cast_precision_loss)]
                let total = d as f64 / (1024.0 * 1024.0);
                (total, per)
            }
            _ => (0.0, 0.0),
        };
        let failed = self.count.saturating_sub(opened);
        Ok(Measurement {
            values: vec![
                ("open_rate", result["rate_per_sec"].as_f64().unwrap_or(0.0)),
                ("rss_mib", rss_mib),
                ("per_conn_kib", per_conn_kib),
            ],
            errors: failed,
            first_error: result["first_error"].as_str().map(str::to_owned),
            raw: json!({ "pgconns": result, "rss_before_bytes": before, "rss_during_bytes": during }),
        })
    }
}

/// Connections pgconns opens at a time.
const CONCURRENCY: u32 = 16;

/// VmRSS of process `pid`, in bytes.
fn vm_rss_of(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    vm_rss(&text).with_context(|| format!("no VmRSS line in {path}"))
}

/// The `VmRSS:` line of a /proc/PID/status text, in bytes.
pub(crate) fn vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    match words.next()? {
        "kB" => value.checked_mul(1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss_in_bytes() {
        let status =
            "Name:\tinterlock\nVmPeak:\t  900000 kB\nVmRSS:\t   23456 kB\nRssAnon:\t 10000 kB\n";
        assert_eq!(vm_rss(status), Some(23456 * 1024));
        assert_eq!(vm_rss("Name:\tx\n"), None);
        assert_eq!(vm_rss("VmRSS:\t12 MB\n"), None);
        assert_eq!(vm_rss("VmRSS:\tlots kB\n"), None);
    }
}
