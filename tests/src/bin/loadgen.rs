//! Load generator for `cargo xtask bench`, run inside the bench cgroup. It does one kind of
//! operation many times in a row, times each one, and prints one JSON line: how many were
//! attempted, how many failed (with the first error), the total time, the rate of successful
//! operations and their latency percentiles in microseconds. A failed operation is counted,
//! never fatal; only bad arguments make it exit non-zero.
//!
//!   loadgen connect ADDR N [--exchange] [--warmup K]
//!       N times: TCP connect to ADDR, then close. With `--exchange`, write one byte and
//!       read the one-byte echo before closing.
//!   loadgen spawn PROGRAM M [--warmup K]
//!       M times: start PROGRAM (no arguments, stdio to /dev/null) and wait for it.
//!
//! `--warmup K` runs K untimed operations first (their errors are ignored).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

/// How long an exchange may wait for the echo before it counts as an error.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// One timed operation, as parsed from the command line.
#[derive(Debug, PartialEq)]
enum Op {
    Connect { addr: SocketAddr, exchange: bool },
    Spawn { program: String },
}

#[derive(Debug, PartialEq)]
struct Plan {
    op: Op,
    count: u64,
    warmup: u64,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args) {
        Ok(plan) => {
            println!("{}", execute(&plan));
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("loadgen: {why}");
            eprintln!(
                "usage: loadgen connect ADDR N [--exchange] [--warmup K] | loadgen spawn PROGRAM M [--warmup K]"
            );
            ExitCode::from(2)
        }
    }
}

fn parse(args: &[String]) -> Result<Plan, String> {
    let mut positional = Vec::new();
    let mut exchange = false;
    let mut warmup = 0;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--exchange" => exchange = true,
            "--warmup" => {
                let k = iter.next().ok_or("--warmup needs a number")?;
                warmup = k.parse().map_err(|_| format!("bad --warmup {k:?}"))?;
            }
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            word => positional.push(word),
        }
    }
    let [command, what, count] = positional[..] else {
        return Err(format!("expected 3 arguments, got {}", positional.len()));
    };
    let count = count.parse().map_err(|_| format!("bad count {count:?}"))?;
    let op = match command {
        "connect" => Op::Connect {
            addr: what.parse().map_err(|_| format!("bad address {what:?}"))?,
            exchange,
        },
        "spawn" if exchange => return Err("--exchange only applies to connect".into()),
        "spawn" => Op::Spawn {
            program: what.to_owned(),
        },
        other => return Err(format!("unknown command {other:?}")),
    };
    Ok(Plan { op, count, warmup })
}

/// Runs the plan and renders its result line.
fn execute(plan: &Plan) -> Value {
    for _ in 0..plan.warmup {
        let _ = once(&plan.op);
    }
    let mut latencies_ns = Vec::new();
    let mut errors = 0u64;
    let mut first_error = None;
    let started = Instant::now();
    for _ in 0..plan.count {
        let t = Instant::now();
        match once(&plan.op) {
            Ok(()) => latencies_ns.push(duration_ns(t.elapsed())),
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let total = started.elapsed();
    let mut line = summary(plan.count, errors, total, latencies_ns);
    line["first_error"] = json!(first_error);
    match &plan.op {
        Op::Connect { addr, exchange } => {
            line["op"] = json!("connect");
            line["addr"] = json!(addr.to_string());
            line["exchange"] = json!(exchange);
        }
        Op::Spawn { program } => {
            line["op"] = json!("spawn");
            line["program"] = json!(program);
        }
    }
    line
}

/// One operation; the error is a short description.
fn once(op: &Op) -> Result<(), String> {
    match op {
        Op::Connect { addr, exchange } => connect(*addr, *exchange).map_err(|e| e.to_string()),
        Op::Spawn { program } => {
            let status = Command::new(program)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(|e| format!("spawn {program}: {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("{program}: {status}"))
            }
        }
    }
}

fn connect(addr: SocketAddr, exchange: bool) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(addr)?;
    if exchange {
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.write_all(b"x")?;
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte)?;
    }
    Ok(())
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Counts, total time, rate of successful operations and latency percentiles (µs; `null`
/// when nothing succeeded).
fn summary(count: u64, errors: u64, total: Duration, mut latencies_ns: Vec<u64>) -> Value {
    latencies_ns.sort_unstable();
    let ok = latencies_ns.len() as u64;
    let secs = total.as_secs_f64();
    let rate = if secs > 0.0 { ok as f64 / secs } else { 0.0 };
    let us = |p: f64| percentile(&latencies_ns, p).map(|ns| ns as f64 / 1000.0);
    json!({
        "count": count,
        "ok": ok,
        "errors": errors,
        "total_secs": secs,
        "rate_per_sec": rate,
        "latency_us": {
            "p50": us(50.0),
            "p90": us(90.0),
            "p99": us(99.0),
            "max": us(100.0),
        },
    })
}

/// Nearest-rank percentile of an ascending slice: the smallest value with at least `p`
/// percent of the values at or below it. `None` for an empty slice.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted.get(rank.clamp(1, n) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[1, 2, 3], 50.0), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4], 50.0), Some(2));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_counts_and_converts_to_microseconds() {
        let s = summary(4, 1, Duration::from_secs(1), vec![3000, 1000, 2000]);
        assert_eq!(s["count"], 4);
        assert_eq!(s["ok"], 3);
        assert_eq!(s["errors"], 1);
        assert_eq!(s["rate_per_sec"], 3.0);
        assert_eq!(s["latency_us"]["p50"], 2.0);
        assert_eq!(s["latency_us"]["max"], 3.0);
    }

    #[test]
    fn summary_without_successes_has_null_latencies() {
        let s = summary(2, 2, Duration::from_millis(5), Vec::new());
        assert_eq!(s["ok"], 0);
        assert!(s["latency_us"]["p99"].is_null());
    }

    #[test]
    fn parses_both_commands() {
        assert_eq!(
            parse(&args(&["connect", "127.0.0.2:80", "10", "--exchange"])),
            Ok(Plan {
                op: Op::Connect {
                    addr: "127.0.0.2:80".parse().unwrap(),
                    exchange: true
                },
                count: 10,
                warmup: 0,
            })
        );
        assert_eq!(
            parse(&args(&["spawn", "/bin/true", "5", "--warmup", "2"])),
            Ok(Plan {
                op: Op::Spawn {
                    program: "/bin/true".into()
                },
                count: 5,
                warmup: 2,
            })
        );
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(parse(&args(&["connect", "nowhere", "10"])).is_err());
        assert!(parse(&args(&["connect", "127.0.0.1:1"])).is_err());
        assert!(parse(&args(&["spawn", "/bin/true", "x"])).is_err());
        assert!(parse(&args(&["spawn", "/bin/true", "1", "--exchange"])).is_err());
        assert!(parse(&args(&["connect", "127.0.0.1:1", "1", "--warmup"])).is_err());
        assert!(parse(&args(&["jump", "x", "1"])).is_err());
    }

    #[test]
    fn failures_are_counted_not_fatal() {
        let plan = Plan {
            op: Op::Spawn {
                program: "/nonexistent/loadgen-test".into(),
            },
            count: 3,
            warmup: 1,
        };
        let line = execute(&plan);
        assert_eq!(line["errors"], 3);
        assert_eq!(line["ok"], 0);
        assert!(line["first_error"].as_str().is_some());
    }
}
