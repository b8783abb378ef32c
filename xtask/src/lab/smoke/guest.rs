//! What the smoke suite's steps share inside the guest: commands with a
//! time limit, the daemon's events, the unit's state, BPF programs, and
//! TCP connects that say where they went.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// The installed service's state directory (dist/interlock.service).
pub(crate) const STATE_DIR: &str = "/var/lib/interlock/default";
/// The installed policy.
pub(crate) const POLICY: &str = "/etc/interlock/policy.yaml";
/// Longest any one command may run.
const COMMAND_LIMIT: Duration = Duration::from_secs(180);

/// Runs `sh -c line` under `timeout`, capturing its output.
pub(crate) fn sh(line: &str) -> Result<Output> {
    Command::new("timeout")
        .arg(COMMAND_LIMIT.as_secs().to_string())
        .args(["sh", "-c", line])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{line}`"))
}

/// [`sh`], failing (with its output) unless it exits 0; returns stdout.
pub(crate) fn sh_ok(line: &str) -> Result<String> {
    let out = sh(line)?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Polls `probe` every 200 ms until it gives a value or `limit` passes.
pub(crate) fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let started = Instant::now();
    loop {
        if let Some(v) = probe()? {
            return Ok(v);
        }
        if started.elapsed() > limit {
            bail!("{what}: not seen within {} s", limit.as_secs());
        }
        sleep(Duration::from_millis(200));
    }
}

/// The daemon's JSONL events, oldest first (unparseable lines skipped: a
/// line being written is completed on the next read).
pub(crate) fn events() -> Vec<Value> {
    let text =
        std::fs::read_to_string(Path::new(STATE_DIR).join("events.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The string at a JSON pointer (`/identity/process/exe`), or "".
pub(crate) fn text<'a>(event: &'a Value, pointer: &str) -> &'a str {
    event.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Waits for an event after the first `skip` that `pred` accepts.
pub(crate) fn wait_event(what: &str, skip: usize, pred: impl Fn(&Value) -> bool) -> Result<Value> {
    wait_for(what, Duration::from_secs(60), || {
        Ok(events().into_iter().skip(skip).find(|e| pred(e)))
    })
}

/// One property of the interlock unit (`systemctl show -p`).
pub(crate) fn unit_property(name: &str) -> Result<String> {
    let out = sh_ok(&format!(
        "systemctl show interlock.service -p {name} --value"
    ))?;
    Ok(out)
}

/// Loaded BPF programs: id -> name (`bpftool prog show`).
pub(crate) fn bpf_programs() -> Result<Vec<(u64, String)>> {
    let json = sh_ok("bpftool -j prog show")?;
    let list: Value = serde_json::from_str(&json).context("bpftool -j prog show")?;
    Ok(list
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    let id = p.get("id")?.as_u64()?;
                    let name = p.get("name").and_then(Value::as_str).unwrap_or("");
                    Some((id, name.to_string()))
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The functions of agent-ebpf; the kernel keeps 15 characters of a name.
const OUR_PROGRAMS: &[&str] = &[
    "connect4",
    "connect6",
    "sockops_established",
    "sched_process_fork",
    "sched_process_exec",
    "sched_process_exit",
    "sys_enter_execve",
];

/// Programs loaded since `before` whose names are interlock's.
pub(crate) fn our_programs(before: &BTreeSet<u64>) -> Result<Vec<(u64, String)>> {
    Ok(bpf_programs()?
        .into_iter()
        .filter(|(id, name)| {
            !before.contains(id)
                && !name.is_empty()
                && OUR_PROGRAMS.iter().any(|p| p.starts_with(name.as_str()))
        })
        .collect())
}

/// Where a TCP connect ended up.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Connect {
    /// Refused (nothing listened where the kernel sent it).
    Refused,
    /// Connected; the peer the socket reports (interlock's listener when
    /// redirected: no hook rewrites getpeername).
    To(SocketAddr),
}

pub(crate) fn connect(to: &str) -> Result<Connect> {
    let addr: SocketAddr = to.parse()?;
    match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(s) => Ok(Connect::To(s.peer_addr()?)),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(Connect::Refused),
        Err(e) => bail!("connect to {to}: {e}"),
    }
}
