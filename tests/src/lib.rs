//! Test harness: the shared fixtures of `interlock-harness` (servers, the
//! daemon, cgroups, policies; re-exported here so a test imports one crate)
//! and what only the tests need: in-process proxies and gates over the
//! agent's library, real clients, OIDC, webhooks, browsers.

pub mod browser;
pub mod driver_suite;
pub mod oidc;
pub mod pg_client;
pub mod pg_gate;
pub mod pg_raw;
mod pty;
pub mod sshagent;
pub mod sshjob;
pub mod sshproxy;
pub mod webhook;

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

pub use interlock_harness::*;
pub use pty::PtyChild;

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
