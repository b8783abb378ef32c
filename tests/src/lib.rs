//! Test harness: privileged prerequisites, scope cgroups, the real daemon
//! as a child process, loopback echo servers, and the test client run
//! inside a cgroup. Every test builds its own instances; nothing is global.

pub mod browser;
mod cgroup;
mod daemon;
pub mod driver_suite;
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
mod tied;
pub mod webhook;

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
pub use daemon::{Daemon, DaemonSpec};
pub use echo::{ByteEcho, EchoServer};
pub use pty::PtyChild;
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

/// Shrinks the kernel send and receive buffers of every connection
/// process `pid` will accept on `addr`, to `bytes`: the listening socket
/// is borrowed from the process (pidfd_getfd) and its buffer sizes set,
/// which accepted sockets inherit. So a real server (PostgreSQL, sshd)
/// stops reading as soon as its own output is blocked, as it would on a
/// busy host, and flow control carries every byte.
pub fn shrink_listener_buffers(pid: u32, addr: std::net::SocketAddr, bytes: u32) -> Result<()> {
    use std::os::fd::{FromRawFd as _, OwnedFd};
    // SAFETY: plain syscalls; every returned fd is owned and closed below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if pidfd < 0 {
        bail!("pidfd_open {pid}: {}", std::io::Error::last_os_error());
    }
    // SAFETY: pidfd_open returned a new fd.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as libc::c_int) };
    let mut found = false;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        let Some(target_fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let link = std::fs::read_link(entry.path()).unwrap_or_default();
        if !link.to_string_lossy().starts_with("socket:") {
            continue;
        }
        use std::os::fd::AsRawFd as _;
        // SAFETY: pidfd is valid; the call returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target_fd, 0) };
        if fd < 0 {
            continue;
        }
        // SAFETY: pidfd_getfd returned a new fd.
        let sock = socket2::Socket::from(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) });
        let listening = sock.is_listener().unwrap_or(false);
        let local = sock.local_addr().ok().and_then(|a| a.as_socket());
        if listening && local == Some(addr) {
            sock.set_send_buffer_size(bytes as usize)?;
            sock.set_recv_buffer_size(bytes as usize)?;
            found = true;
        }
    }
    if !found {
        bail!("process {pid} has no socket listening on {addr}");
    }
    Ok(())
}

/// A directory for a test's runner: a fresh `<prefix>-<random>` under `/run/interlock-tests`,
/// root-owned and closed to group and others down from `/`, so a runner copied into it (as
/// root) is trusted the way an installed runner is (the daemon only believes a runner's path
/// when only root could have put that file there). Removed when the guard drops.
pub fn runner_dir(prefix: &str) -> Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt as _;
    let base = Path::new("/run/interlock-tests");
    std::fs::create_dir_all(base)?;
    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755))?;
    let dir = tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .tempdir_in(base)?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// A fake CI runner: `/bin/bash` copied to `<dir>/<name>`, so its executable path is what a
/// policy's `identity.runners` glob matches. A job is `runner -c SCRIPT`. It is only trusted
/// as a runner when `dir` comes from [`runner_dir`] (see there).
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
