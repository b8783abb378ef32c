//! After the integration tests: which tests the time limit killed (from
//! nextest's JUnit report), the log of each one's daemon (from the records
//! the test harness writes), and the kernel pins those daemons left
//! behind (a killed test runs no `Drop`, so nothing detached them).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde::Deserialize;

/// Lines of a killed test's daemon log that are printed.
const LOG_LINES: usize = 80;

/// One daemon a test started, as `harness/src/daemon.rs` records it.
#[derive(Debug, Deserialize)]
pub(crate) struct DaemonRecord {
    /// nextest's binary id (`interlock-tests::pg`; the test is `pg_proxy::...`).
    pub(crate) binary: Option<String>,
    pub(crate) test: Option<String>,
    pub(crate) pid: Option<u32>,
    pub(crate) instance: String,
    pub(crate) log: PathBuf,
}

/// A test nextest reported as killed by its time limit.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TimedOut {
    /// The JUnit classname: nextest's binary id.
    pub(crate) binary: String,
    pub(crate) test: String,
    /// Seconds the test ran before it was killed.
    pub(crate) seconds: f64,
}

/// The tests of a nextest JUnit report that failed with "test timeout".
pub(crate) fn timed_out(junit: &str) -> Vec<TimedOut> {
    let mut out = Vec::new();
    let mut rest = junit;
    while let Some(start) = rest.find("<testcase ") {
        let case = &rest[start..];
        // A test case ends at `/>` (passed, nothing inside) or `</testcase>`.
        let head_end = case.find('>').unwrap_or(case.len());
        let end = if case[..head_end].ends_with('/') {
            head_end
        } else {
            case.find("</testcase>").unwrap_or(case.len())
        };
        let body = &case[..end];
        if body.contains("<failure type=\"test timeout\"") {
            let head = &case[..head_end];
            out.push(TimedOut {
                binary: attr(head, "classname").unwrap_or_default(),
                test: attr(head, "name").unwrap_or_default(),
                seconds: attr(head, "time")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0.0),
            });
        }
        rest = &case[end.max(1)..];
    }
    out
}

/// The value of `name="..."` in an XML start tag, unescaped.
fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let from = tag.find(&key)? + key.len();
    let len = tag[from..].find('"')?;
    Some(
        tag[from..from + len]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// Every daemon recorded in `dir` (tolerates a torn last line).
pub(crate) fn records(dir: &Path) -> Vec<DaemonRecord> {
    std::fs::read_to_string(dir.join("daemons.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Prints each timed-out test by name with the end of its daemon's log.
pub(crate) fn print_timeouts(timeouts: &[TimedOut], records: &[DaemonRecord]) {
    for t in timeouts {
        eprintln!();
        eprintln!(
            "==> KILLED by the time limit after {:.0} s: {} {}",
            t.seconds, t.binary, t.test
        );
        let mine: Vec<&DaemonRecord> = records
            .iter()
            .filter(|r| r.test.as_deref() == Some(t.test.as_str()))
            .filter(|r| r.binary.as_deref().is_none_or(|b| b == t.binary))
            .collect();
        if mine.is_empty() {
            eprintln!("    (the test started no daemon)");
        }
        for r in mine {
            eprintln!(
                "--- daemon log of instance {} (pid {}): {}",
                r.instance,
                r.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
                r.log.display()
            );
            match std::fs::read_to_string(&r.log) {
                Ok(text) => {
                    let lines: Vec<&str> = text.lines().collect();
                    for l in &lines[lines.len().saturating_sub(LOG_LINES)..] {
                        eprintln!("    {l}");
                    }
                }
                Err(e) => eprintln!("    (cannot read it: {e})"),
            }
        }
    }
}

/// Whether process `pid` still exists.
pub(crate) fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Detaches the instances of recorded daemons that died with their pins
/// still in place (their test was killed). Only instances this run
/// created are touched. Returns the instances detached.
pub(crate) fn detach_leftovers(records: &[DaemonRecord], interlock: &Path) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let instances: BTreeSet<&str> = records
        .iter()
        .filter(|r| r.pid.is_none_or(|p| !alive(p)))
        .map(|r| r.instance.as_str())
        .collect();
    for instance in instances {
        if !Path::new("/sys/fs/bpf/interlock").join(instance).exists() {
            continue;
        }
        let out = Command::new(interlock)
            .args(["detach", "--instance", instance])
            .output()
            .with_context(|| format!("run {} detach", interlock.display()))?;
        if out.status.success() {
            done.push(instance.to_string());
        } else {
            eprintln!(
                "warning: detaching leftover instance {instance} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JUNIT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="nextest-run" tests="3" failures="2">
    <testsuite name="interlock-tests::harness" tests="3">
        <testcase name="passes" classname="interlock-tests::harness" time="0.5"/>
        <testcase name="hangs &amp; waits" classname="interlock-tests::harness" time="12.004">
            <failure type="test timeout"/>
            <system-out>running 1 test
</system-out>
        </testcase>
        <testcase name="fails" classname="interlock-tests::other" time="1.0">
            <failure message="thread panicked" type="test failure">boom</failure>
        </testcase>
    </testsuite>
</testsuites>"#;

    #[test]
    fn only_timeouts_are_named_with_binary_and_time() {
        let t = timed_out(JUNIT);
        assert_eq!(
            t,
            vec![TimedOut {
                binary: "interlock-tests::harness".into(),
                test: "hangs & waits".into(),
                seconds: 12.004,
            }]
        );
        assert!(timed_out("").is_empty());
        assert!(timed_out("<testcase name=\"x\"").is_empty());
    }

    #[test]
    fn records_skip_torn_lines() {
        let dir = std::env::temp_dir().join(format!("xtask-records-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        std::fs::write(
            dir.join("daemons.jsonl"),
            "{\"binary\":\"b\",\"test\":\"t\",\"pid\":1,\"instance\":\"i\",\"log\":\"/x\"}\n{\"bin",
        )
        .unwrap_or_default();
        let r = records(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].instance, "i");
        assert_eq!(r[0].test.as_deref(), Some("t"));
    }
}
