//! The fixtures shared by the integration tests (`tests/`) and `cargo xtask bench`: real
//! PostgreSQL and sshd servers on loopback, the real daemon as a child process, scope
//! cgroups, loopback echo servers and policy builders. Nothing here links the agent crate,
//! so xtask can use it before the agent (and its eBPF) is built. Every caller builds its
//! own instances; nothing is global but the spawner thread of [`spawn_tied`].

mod cgroup;
mod daemon;
mod echo;
pub mod policy;
pub mod postgres;
mod sshd;
mod tied;

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use serde_json::Value;

pub use cgroup::{TestCgroup, client_in, client_outside, test_bin, testclient};
pub use daemon::{CliOutput, Daemon, DaemonSpec, RECORDS_ENV};
pub use echo::{ByteEcho, EchoServer};
pub use policy::{Policy, tcp_policy};
pub use postgres::PgServer;
pub use sshd::{Sshd, TestUser, ssh_keygen};
pub use tied::spawn_tied;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A fresh directory `<prefix>-<random>` under the temporary directory,
/// removed when the returned guard drops (the test passing or failing).
pub fn scratch(prefix: &str) -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .tempdir()
}

/// A name unique to this test process and call.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether the privileged tests can run here. Without root, bpffs or cgroup
/// v2 they are skipped with a message, except in CI ([`ci_strict`]), where
/// a missing prerequisite fails the test.
pub fn privileged() -> bool {
    let missing = missing_prerequisite();
    match missing {
        None => true,
        Some(why) => skip_or_fail("a privileged prerequisite", &why),
    }
}

/// Whether this is a CI run, where a missing prerequisite is a failure, not
/// a skip: `CI` set to anything but empty, `0` or `false` (CI systems set
/// `CI=true`; `.ci/run` does too).
pub fn ci_strict() -> bool {
    std::env::var("CI")
        .is_ok_and(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"))
}

/// Skips (false, with a message) or, under [`ci_strict`], fails the test
/// because `what` is missing for `why`.
pub fn skip_or_fail(what: &str, why: &str) -> bool {
    if ci_strict() {
        panic!("CI run and {what} is missing: {why}");
    }
    eprintln!("SKIPPED: {what} is missing: {why} (set up with `cargo xtask setup`, run as root)");
    false
}

fn missing_prerequisite() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".into());
    }
    if cgroup2_mount().is_none() {
        return Some("no cgroup v2 mount".into());
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if !mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("bpf"))
    {
        return Some("bpffs is not mounted at /sys/fs/bpf".into());
    }
    if interlock_bin().is_err() {
        return Some("the interlock binary is not built (INTERLOCK_BIN)".into());
    }
    None
}

/// The cgroup v2 mount point.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
    })
}

/// The daemon binary: `$INTERLOCK_BIN`, else `<workspace>/target/debug/interlock`.
pub fn interlock_bin() -> Result<PathBuf> {
    let p = match std::env::var_os("INTERLOCK_BIN") {
        Some(p) => PathBuf::from(p),
        None => workspace().join("target/debug/interlock"),
    };
    if p.is_file() {
        Ok(p)
    } else {
        bail!("{} does not exist; run `cargo xtask test`", p.display())
    }
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Events of one `type`.
pub fn of_type<'a>(events: &'a [Value], ty: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == ty).collect()
}

/// Runs `cmd` to completion, collecting its output, but for at most
/// `limit`: a command still running then is killed and the test fails
/// saying so (what it printed so far included), instead of hanging.
/// The command runs in a process group of its own and the whole group is
/// killed: its children (an `ssh` and its ProxyCommand, say) hold its
/// output pipes open, so killing the command alone would leave the
/// collection waiting for them.
pub fn output_within(mut cmd: Command, limit: Duration) -> Result<Output> {
    use std::os::unix::process::CommandExt as _;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn()?;
    let pipe = |p: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = pipe(child.stdout.take().map(|p| Box::new(p) as _));
    let err = pipe(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            if let Ok(pgid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill has no memory preconditions; the group is
                // the one the child leads (process_group(0) above).
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => bail!(
            "{:?} still running after {} s: killed (a hang); it printed:\n{}\n{}",
            cmd.get_program(),
            limit.as_secs(),
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}
