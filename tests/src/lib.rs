//! Test harness: privileged prerequisites, scope cgroups, the real daemon
//! as a child process, loopback echo servers, and the test client run
//! inside a cgroup. Every test builds its own instances; nothing is global.

mod cgroup;
mod daemon;
mod echo;
pub mod oidc;
pub mod pg_client;
pub mod pg_gate;
pub mod pg_raw;
pub mod postgres;
mod pty;
pub mod sshagent;
mod sshd;
pub mod sshjob;
pub mod sshproxy;
pub mod webhook;

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Result, bail};
use serde_json::Value;

pub use cgroup::{TestCgroup, client_in, client_outside, testclient};
pub use daemon::{Daemon, DaemonSpec};
pub use echo::EchoServer;
pub use pty::PtyChild;
pub use sshd::{Sshd, TestUser, ssh_keygen};

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

/// Accepts one HTTP POST on `l`, answers 200 "ok" (as Slack does), returns the body.
pub fn read_one_post(l: &std::net::TcpListener) -> Result<String> {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    l.set_nonblocking(false)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (s, _) = l.accept()?;
    s.set_read_timeout(Some(deadline - std::time::Instant::now()))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut len = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse()?;
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    (&s).write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")?;
    Ok(String::from_utf8(body)?)
}

/// A policy with one tcp target over the given `address:port` endpoints.
pub fn tcp_policy(name: &str, endpoints: &[(&str, u16)]) -> String {
    let mut s = format!("version: 1\ntargets:\n  - name: {name}\n    protocol: tcp\n    match:\n");
    for (a, p) in endpoints {
        s.push_str(&format!("      - {{ address: \"{a}\", port: {p} }}\n"));
    }
    s
}

/// A fake CI runner: `/bin/bash` copied to `<dir>/<name>`, so its executable path is what a
/// policy's `identity.runners` glob matches. A job is `runner -c SCRIPT`.
pub fn fake_runner(dir: &Path, name: &str) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::copy("/bin/bash", &path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    // Let an unprivileged lookup of the directory succeed too.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// Shell-quotes `s` for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
