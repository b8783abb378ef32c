//! The audit and webhook paths, measured in-process by the `eventbench` helper
//! (tests/src/bin/eventbench.rs) with no daemon and no programs: the subject is interlock's
//! `EventLog` (and its webhook delivery), the baseline the plainest code doing the same job.

use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::rig::Rig;
use super::scenario::{Better, DaemonPolicy, Measurement, Metric, Scenario, Variant, metric};
use interlock_harness::Daemon;

const METRICS: &[Metric] = &[
    metric("rate", "events/s", "/s", Better::Higher),
    metric("total_secs", "total", "s", Better::Lower),
];

/// `count` statement events: appended durably (`delivery` false) or delivered to a loopback
/// webhook receiver (`delivery` true).
pub(crate) struct EventPath {
    pub(crate) delivery: bool,
    pub(crate) count: u64,
}

impl Scenario for EventPath {
    fn name(&self) -> &'static str {
        if self.delivery {
            "webhook-delivery"
        } else {
            "audit-append"
        }
    }

    fn title(&self) -> &'static str {
        if self.delivery {
            "events delivered to a loopback webhook receiver (subject: EventLog + spool + \
             signed delivery, batch 10; baseline: the same batches POSTed directly by one client)"
        } else {
            "events made durable (subject: EventLog, default AuditOptions: hash chain, signed \
             checkpoints, events.jsonl, fdatasync every 100 ms; baseline: JSON lines to one file, \
             same fsync cadence)"
        }
    }

    fn params(&self) -> Value {
        json!({ "events": self.count, "in_process": true })
    }

    fn metrics(&self) -> &'static [Metric] {
        METRICS
    }

    fn policy(&self) -> DaemonPolicy {
        DaemonPolicy::NoDaemon
    }

    fn measure(&self, rig: &Rig, _daemon: Option<&Daemon>) -> Result<Measurement> {
        self.measure_side(rig, Variant::Baseline)
    }

    fn measure_side(&self, rig: &Rig, variant: Variant) -> Result<Measurement> {
        let mode = match (self.delivery, variant) {
            (false, Variant::Baseline) => "plain",
            (false, Variant::Subject) => "audit",
            (true, Variant::Baseline) => "post",
            (true, Variant::Subject) => "webhook",
        };
        let dir = rig.fresh_dir(mode)?;
        let out = Command::new(rig.helper("eventbench"))
            .args([mode, &self.count.to_string()])
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .context("cannot start eventbench")?;
        std::fs::remove_dir_all(&dir).ok();
        if !out.status.success() {
            bail!(
                "eventbench {mode} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().last().unwrap_or_default();
        let raw: Value = serde_json::from_str(line)
            .with_context(|| format!("eventbench printed {line:?}, not a result line"))?;
        let (Some(rate), Some(secs)) = (raw["rate_per_sec"].as_f64(), raw["total_secs"].as_f64())
        else {
            bail!("eventbench printed no rate: {line}");
        };
        Ok(Measurement {
            values: vec![("rate", rate), ("total_secs", secs)],
            errors: 0,
            first_error: None,
            raw,
        })
    }
}
