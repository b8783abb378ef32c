//! The bench's results: every raw run, each metric's summary per variant and the ratio;
//! serialised as bench/results.json (the table and RESULTS.md are in `render`).

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{Map, Value};

use super::machine::{Git, Machine};
use super::scenario::{Measurement, Metric, Scenario, Variant};
use super::stats::{Summary, ratio};

/// Bumped when the layout of results.json changes.
const SCHEMA: u32 = 1;

/// One whole bench run.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) schema: u32,
    /// `quick` or `full`.
    pub(crate) mode: &'static str,
    pub(crate) date: String,
    pub(crate) machine: Machine,
    pub(crate) git: Git,
    /// Runs per variant and scenario.
    pub(crate) repetitions: usize,
    pub(crate) duration_secs: f64,
    pub(crate) scenarios: Vec<ScenarioResult>,
}

/// One scenario: its raw runs in the order they ran, and one summary per metric.
#[derive(Debug, Serialize)]
pub(crate) struct ScenarioResult {
    pub(crate) name: &'static str,
    pub(crate) title: &'static str,
    pub(crate) params: Value,
    pub(crate) runs: Vec<Run>,
    pub(crate) metrics: Vec<MetricResult>,
}

/// One run of a scenario under one variant.
#[derive(Debug, Serialize)]
pub(crate) struct Run {
    pub(crate) repetition: usize,
    pub(crate) variant: Variant,
    pub(crate) values: Map<String, Value>,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) raw: Value,
}

/// A metric's repetitions under both variants and subject median / baseline median.
#[derive(Debug, Serialize)]
pub(crate) struct MetricResult {
    #[serde(flatten)]
    pub(crate) metric: Metric,
    pub(crate) baseline: Summary,
    pub(crate) subject: Summary,
    pub(crate) ratio: Option<f64>,
}

impl Report {
    /// The report with the bench's schema version.
    pub(crate) fn new(
        mode: &'static str,
        machine: Machine,
        git: Git,
        repetitions: usize,
        duration_secs: f64,
        scenarios: Vec<ScenarioResult>,
    ) -> Report {
        Report {
            schema: SCHEMA,
            mode,
            date: super::machine::now_utc(),
            machine,
            git,
            repetitions,
            duration_secs,
            scenarios,
        }
    }
}

impl ScenarioResult {
    /// Summarises `runs` (repetition, variant, measurement) for each of the scenario's metrics.
    /// Fails if a metric has no value under one of the variants.
    pub(crate) fn new(
        scenario: &dyn Scenario,
        runs: Vec<(usize, Variant, Measurement)>,
    ) -> Result<ScenarioResult> {
        let mut metrics = Vec::new();
        for metric in scenario.metrics() {
            let values = |variant| -> Vec<f64> {
                runs.iter()
                    .filter(|(_, v, _)| *v == variant)
                    .flat_map(|(_, _, m)| m.values.iter())
                    .filter(|(key, _)| *key == metric.key)
                    .map(|(_, value)| *value)
                    .collect()
            };
            let summary = |variant| {
                Summary::of(&values(variant)).with_context(|| {
                    format!(
                        "{}: no {} value for {}",
                        scenario.name(),
                        variant.name(),
                        metric.key
                    )
                })
            };
            let (baseline, subject) = (summary(Variant::Baseline)?, summary(Variant::Subject)?);
            metrics.push(MetricResult {
                metric: *metric,
                ratio: ratio(baseline.median, subject.median),
                baseline,
                subject,
            });
        }
        let runs = runs
            .into_iter()
            .map(|(repetition, variant, m)| Run {
                repetition,
                variant,
                values: m
                    .values
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
                    .collect(),
                errors: m.errors,
                first_error: m.first_error,
                raw: m.raw,
            })
            .collect();
        Ok(ScenarioResult {
            name: scenario.name(),
            title: scenario.title(),
            params: scenario.params(),
            runs,
            metrics,
        })
    }

    /// Failed operations summed per variant, and the first error seen.
    pub(crate) fn errors(&self) -> (u64, u64, Option<&str>) {
        let sum = |variant| {
            self.runs
                .iter()
                .filter(|r| r.variant == variant)
                .map(|r| r.errors)
                .sum()
        };
        let first = self.runs.iter().find_map(|r| r.first_error.as_deref());
        (sum(Variant::Baseline), sum(Variant::Subject), first)
    }
}

/// bench/results.json.
pub(crate) fn json(report: &Report) -> Result<String> {
    Ok(serde_json::to_string_pretty(report)? + "\n")
}

/// Synthetic results for the unit tests of this module and `render`.
#[cfg(test)]
pub(crate) mod fixtures {
    use serde_json::json;

    use super::*;
    use crate::bench::scenario::{Sizes, all};

    pub(crate) fn measurement(p50: f64, errors: u64) -> Measurement {
        Measurement {
            values: vec![("p50_us", p50), ("p99_us", p50 * 3.0), ("rate", 1e6 / p50)],
            errors,
            first_error: (errors > 0).then(|| "Connection refused".to_owned()),
            raw: json!({ "count": 100 }),
        }
    }

    pub(crate) fn sample() -> ScenarioResult {
        let scenarios = all(Sizes {
            connects: 100,
            spawns: 10,
            pg_transactions: 10,
            pg_connections: 10,
            pg_rows: 10,
            idle_connections: 10,
            events: 10,
            ssh_mib: 1,
            ssh_execs: 2,
            quick: true,
        });
        let runs = vec![
            (0, Variant::Baseline, measurement(10.0, 0)),
            (0, Variant::Subject, measurement(12.0, 2)),
            (1, Variant::Baseline, measurement(11.0, 0)),
            (1, Variant::Subject, measurement(13.0, 0)),
            (2, Variant::Baseline, measurement(9.0, 0)),
            (2, Variant::Subject, measurement(14.0, 0)),
        ];
        ScenarioResult::new(scenarios[0].as_ref(), runs).unwrap()
    }

    pub(crate) fn report() -> Report {
        let machine = Machine {
            kernel: "6.18.0".into(),
            cpu: "Test CPU".into(),
            cpus: 2,
            memory_mib: Some(1024),
        };
        let git = Git {
            commit: "abc123".into(),
            dirty: true,
        };
        Report::new("quick", machine, git, 3, 42.0, vec![sample()])
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn summarises_each_metric_per_variant() {
        let s = sample();
        let p50 = &s.metrics[0];
        assert_eq!(p50.metric.key, "p50_us");
        assert_eq!(p50.baseline.values, vec![10.0, 11.0, 9.0]);
        assert_eq!((p50.baseline.median, p50.subject.median), (10.0, 13.0));
        assert_eq!(p50.ratio, Some(1.3));
        assert_eq!(s.errors(), (0, 2, Some("Connection refused")));
    }

    #[test]
    fn json_keeps_raw_runs_and_summaries() {
        let v: Value = serde_json::from_str(&json(&report()).unwrap()).unwrap();
        assert_eq!(v["schema"], 1);
        assert_eq!(v["mode"], "quick");
        assert_eq!(v["machine"]["cpus"], 2);
        assert_eq!(v["git"]["dirty"], true);
        let s = &v["scenarios"][0];
        assert_eq!(s["runs"].as_array().unwrap().len(), 6);
        assert_eq!(s["runs"][1]["variant"], "subject");
        assert_eq!(s["runs"][1]["values"]["p50_us"], 12.0);
        assert_eq!(s["runs"][1]["raw"]["count"], 100);
        assert_eq!(s["metrics"][0]["key"], "p50_us");
        assert_eq!(s["metrics"][0]["better"], "lower");
        assert_eq!(s["metrics"][0]["subject"]["median"], 13.0);
        assert_eq!(s["metrics"][0]["ratio"], 1.3);
    }
}
