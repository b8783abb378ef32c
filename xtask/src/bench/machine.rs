//! Where and on what a bench ran: kernel, CPU, memory, the git commit and the date. Anything
//! that cannot be read is recorded as "unknown" rather than failing the bench.

use std::fs;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::util::{self, Workspace};

/// The host the numbers come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Machine {
    pub(crate) kernel: String,
    pub(crate) cpu: String,
    pub(crate) cpus: usize,
    pub(crate) memory_mib: Option<u64>,
}

/// The code the numbers are for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Git {
    pub(crate) commit: String,
    /// Whether the work tree had uncommitted changes.
    pub(crate) dirty: bool,
}

impl Machine {
    /// Reads `uname -r`, /proc/cpuinfo, the usable CPU count and /proc/meminfo.
    pub(crate) fn detect() -> Machine {
        let kernel =
            command_line(Command::new("uname").arg("-r")).unwrap_or_else(|| "unknown".to_owned());
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            kernel,
            cpu: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".to_owned()),
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            memory_mib: mem_total_mib(&meminfo),
        }
    }
}

impl Git {
    /// `git rev-parse HEAD` and whether `git status --porcelain` lists anything.
    pub(crate) fn detect(ws: &Workspace) -> Git {
        let git = |args: &[&str]| {
            let mut cmd = Command::new("git");
            cmd.current_dir(ws.root()).args(args);
            command_output(&mut cmd)
        };
        Git {
            commit: git(&["rev-parse", "HEAD"])
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|| "unknown".to_owned()),
            dirty: git(&["status", "--porcelain"]).is_some_and(|s| !s.trim().is_empty()),
        }
    }
}

/// Stdout of a successful command; `None` if it is missing or fails.
fn command_output(cmd: &mut Command) -> Option<String> {
    let out = util::probe(cmd).ok()??;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn command_line(cmd: &mut Command) -> Option<String> {
    command_output(cmd).map(|s| s.trim().to_owned())
}

/// The first `model name` of a /proc/cpuinfo text.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

/// `MemTotal` of a /proc/meminfo text, in MiB.
fn mem_total_mib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// The current time as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn now_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc(secs)
}

/// Seconds since the epoch as an ISO 8601 UTC timestamp (proleptic Gregorian calendar).
fn utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Days to civil date, after H. Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_709_210_096), "2024-02-29T12:34:56Z");
        assert_eq!(utc(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn reads_cpu_model_and_memory() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("processor : 0\n"), None);
        assert_eq!(
            mem_total_mib("MemTotal:       24683520 kB\nMemFree: 1 kB\n"),
            Some(24105)
        );
        assert_eq!(mem_total_mib(""), None);
    }
}
