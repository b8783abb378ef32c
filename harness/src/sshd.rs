//! A real OpenSSH sshd on a loopback address (127.0.0.3 and up), with its
//! own host key, config and authorized client key in a temp dir. Killed
//! and cleaned up on drop.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// A running sshd.
pub struct Sshd {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its temp dir (config, keys, log); tests may put files here.
    pub dir: PathBuf,
    /// Its host public key, OpenSSH format.
    pub host_public_key: String,
    /// A private key whose public key is in authorized_keys.
    pub client_key: PathBuf,
    child: Child,
}

/// Writes an ed25519 key pair to `path` and `path.pub`.
pub fn ssh_keygen(path: &Path) -> Result<()> {
    let status = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "interlock-test",
            "-f",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .context("ssh-keygen")?;
    if !status.success() {
        bail!("ssh-keygen failed for {}", path.display());
    }
    Ok(())
}

impl Sshd {
    /// Whether a real sshd can run here (root, `/usr/sbin/sshd`). Tests
    /// that need it return early with a message otherwise, except under
    /// `CI=true`, where a missing prerequisite fails the test.
    pub fn available() -> bool {
        // SAFETY: geteuid has no preconditions.
        let missing = if unsafe { libc::geteuid() } != 0 {
            Some("not running as root")
        } else if !Path::new("/usr/sbin/sshd").exists() {
            Some("/usr/sbin/sshd is not installed (openssh-server)")
        } else {
            None
        };
        match missing {
            None => true,
            Some(why) => crate::skip_or_fail("an sshd prerequisite", why),
        }
    }

    /// Starts sshd on `ip` (a loopback address, 127.0.0.3 or higher) and a free port.
    pub fn start(ip: &str) -> Result<Sshd> {
        Sshd::start_with(ip, "")
    }

    /// [`Sshd::start`] with `extra` sshd_config lines, which take
    /// precedence over the defaults (sshd keeps the first value it reads).
    pub fn start_with(ip: &str, extra: &str) -> Result<Sshd> {
        let dir = std::env::temp_dir().join(crate::unique("interlock-sshd"));
        std::fs::create_dir_all(&dir)?;
        std::fs::create_dir_all("/run/sshd")?;
        let host_key = dir.join("host_key");
        ssh_keygen(&host_key)?;
        let client_key = dir.join("client_key");
        ssh_keygen(&client_key)?;
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))?;
        let port = TcpListener::bind((ip, 0))?.local_addr()?.port();
        let addr: SocketAddr = format!("{ip}:{port}").parse()?;
        let config = format!(
            "{extra}\n\
             ListenAddress {addr}\n\
             HostKey {hk}\n\
             AuthorizedKeysFile {dir}/authorized_keys\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\n\
             UsePAM no\n\
             StrictModes no\n\
             PidFile {dir}/sshd.pid\n\
             AcceptEnv INTERLOCK_*\n\
             GatewayPorts clientspecified\n\
             Subsystem sftp internal-sftp\n",
            hk = host_key.display(),
            dir = dir.display(),
        );
        let config_path = dir.join("sshd_config");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.join("sshd.log"))?;
        let mut cmd = Command::new("/usr/sbin/sshd");
        cmd.args(["-D", "-e", "-f"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = crate::spawn_tied(cmd, libc::SIGTERM).context("start /usr/sbin/sshd")?;
        let host_public_key = std::fs::read_to_string(dir.join("host_key.pub"))?
            .trim()
            .to_string();
        let mut sshd = Sshd {
            addr,
            dir,
            host_public_key,
            client_key,
            child,
        };
        sshd.wait_ready()?;
        Ok(sshd)
    }

    /// Waits until sshd accepts connections (a setup step, not a test threshold).
    fn wait_ready(&mut self) -> Result<()> {
        let start = Instant::now();
        while TcpStream::connect(self.addr).is_err() {
            if let Some(status) = self.child.try_wait()? {
                bail!("sshd exited with {status}: {}", self.log());
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("sshd did not listen on {}: {}", self.addr, self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The listening sshd's pid (its children are the per-connection processes).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What sshd wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("INTERLOCK_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A throwaway local user (no home directory), removed on drop: sshd
/// treats root specially (no privilege-separated child, so no signal
/// requests), and password tests need a password.
pub struct TestUser {
    pub name: String,
}

impl TestUser {
    /// `useradd` a fresh `<prefix>-N` user, with `password` if given.
    pub fn create(prefix: &str, password: Option<&str>) -> TestUser {
        // useradd limits names to 32 characters.
        let name = crate::unique(prefix);
        let status = Command::new("useradd")
            .args(["-M", "-s", "/bin/sh", &name])
            .status()
            .expect("useradd");
        assert!(status.success(), "useradd {name}");
        let user = TestUser { name };
        if password.is_none() {
            // `*`: no password login, but not locked (sshd without PAM
            // refuses a locked account even with a key).
            let status = Command::new("usermod")
                .args(["-p", "*", &user.name])
                .status()
                .expect("usermod");
            assert!(status.success(), "usermod {}", user.name);
        }
        if let Some(password) = password {
            let mut chpasswd = Command::new("chpasswd")
                .stdin(Stdio::piped())
                .spawn()
                .expect("chpasswd");
            {
                use std::io::Write as _;
                let line = format!("{}:{password}\n", user.name);
                chpasswd
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(line.as_bytes())
                    .expect("chpasswd input");
            }
            assert!(chpasswd.wait().expect("chpasswd").success(), "chpasswd");
        }
        user
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}
