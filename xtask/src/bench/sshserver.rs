//! The bench's OpenSSH server: `/usr/sbin/sshd` as root on a loopback address with its own
//! host key, config and authorized client key in the scratch directory (the same set-up as
//! `tests/src/sshd.rs`, which xtask cannot depend on), and the OpenSSH client options for both
//! sides of a scenario: direct (the real host key pinned) and through interlock (its SSH CA
//! trusted with one `@cert-authority` line). Killed on drop.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::pgserver::run_quiet;

/// The loopback address sshd listens on (not the echo servers' nor PostgreSQL's).
pub(crate) const ADDRESS: &str = "127.0.0.40";

/// A running sshd.
pub(crate) struct SshServer {
    addr: SocketAddr,
    dir: PathBuf,
    host_public_key: String,
    client_key: PathBuf,
    child: Option<Child>,
}

fn keygen(path: &Path) -> Result<()> {
    let mut cmd = Command::new("ssh-keygen");
    cmd.args([
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-C",
        "interlock-bench",
        "-f",
    ])
    .arg(path);
    run_quiet(&mut cmd).context("ssh-keygen failed")
}

impl SshServer {
    /// Keys and config under `<dir>/ssh`, sshd on [`ADDRESS`] and a free port.
    pub(crate) fn start(dir: &Path) -> Result<SshServer> {
        if !Path::new("/usr/sbin/sshd").exists() {
            bail!("/usr/sbin/sshd is missing: install openssh-server (`cargo xtask setup`)");
        }
        let dir = dir.join("ssh");
        fs::create_dir_all(dir.join("remote"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        fs::create_dir_all("/run/sshd").context("cannot create /run/sshd")?;
        let host_key = dir.join("host_key");
        keygen(&host_key)?;
        let client_key = dir.join("client_key");
        keygen(&client_key)?;
        fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))?;
        let port = TcpListener::bind((ADDRESS, 0))
            .with_context(|| format!("cannot bind {ADDRESS}"))?
            .local_addr()?
            .port();
        let addr: SocketAddr = format!("{ADDRESS}:{port}").parse()?;
        // MaxStartups/MaxSessions high enough for back-to-back connections and a mux master.
        let config = format!(
            "ListenAddress {addr}\n\
             HostKey {hk}\n\
             AuthorizedKeysFile {dir}/authorized_keys\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\n\
             UsePAM no\n\
             StrictModes no\n\
             UseDNS no\n\
             MaxStartups 100:30:200\n\
             MaxSessions 100\n\
             PidFile {dir}/sshd.pid\n\
             Subsystem sftp internal-sftp\n",
            hk = host_key.display(),
            dir = dir.display(),
        );
        let config_path = dir.join("sshd_config");
        fs::write(&config_path, config)?;
        let log = fs::File::create(dir.join("sshd.log"))?;
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start /usr/sbin/sshd")?;
        let host_public_key = fs::read_to_string(dir.join("host_key.pub"))?
            .trim()
            .to_owned();
        let mut server = SshServer {
            addr,
            dir,
            host_public_key,
            client_key,
            child: Some(child),
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(self.addr).is_err() {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("sshd exited ({status}): {}", self.log());
            }
            if Instant::now() > deadline {
                bail!(
                    "sshd did not listen on {} in 30 s: {}",
                    self.addr,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// Where sshd listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// sshd's host public key (OpenSSH format), pinned by the policy and the direct client.
    pub(crate) fn host_public_key(&self) -> &str {
        &self.host_public_key
    }

    /// The key sshd authorizes: the direct client's, and the one the daemon injects.
    pub(crate) fn client_key(&self) -> &Path {
        &self.client_key
    }

    /// A directory the scenarios upload into and download from.
    pub(crate) fn remote_dir(&self) -> PathBuf {
        self.dir.join("remote")
    }

    /// Writes a known_hosts file for the direct side (the real host key) and returns it.
    pub(crate) fn direct_known_hosts(&self) -> Result<PathBuf> {
        let path = self.dir.join("known_hosts-direct");
        let line = format!(
            "[{}]:{} {}\n",
            self.addr.ip(),
            self.addr.port(),
            self.host_public_key
        );
        fs::write(&path, line)?;
        Ok(path)
    }

    /// Writes a known_hosts file holding `line` (interlock's `@cert-authority` line).
    pub(crate) fn known_hosts_with(&self, name: &str, line: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        fs::write(&path, format!("{}\n", line.trim()))?;
        Ok(path)
    }

    /// The OpenSSH client options every scenario uses: strict host key checking against
    /// `known_hosts`, batch mode, only the authorized key, no config file of the caller.
    pub(crate) fn client_options(&self, known_hosts: &Path) -> Vec<String> {
        [
            "-F",
            "/dev/null",
            "-i",
            &self.client_key.display().to_string(),
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            &format!("UserKnownHostsFile={}", known_hosts.display()),
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
