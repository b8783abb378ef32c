//! A real `ssh-agent` holding one key, for agent forwarding tests. Stopped
//! on drop.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};

/// A running agent and its socket.
pub struct Agent {
    pub sock: PathBuf,
    child: Child,
}

impl Agent {
    /// `ssh-agent -D -a <dir>/agent-N` with `key` added.
    pub fn start(dir: &Path, key: &Path) -> Result<Agent> {
        let sock = dir.join(crate::unique("agent"));
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(Stdio::null())
            .spawn()
            .context("start ssh-agent")?;
        let mut agent = Agent { sock, child };
        // Waiting for the socket is set-up, not a test threshold.
        for _ in 0..500 {
            if agent.sock.exists() {
                break;
            }
            if let Some(status) = agent.child.try_wait()? {
                anyhow::bail!("ssh-agent exited with {status}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let added = Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &agent.sock)
            .output()
            .context("ssh-add")?;
        ensure!(added.status.success(), "ssh-add: {added:?}");
        Ok(agent)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
