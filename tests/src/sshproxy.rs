//! Drives `interlock::ssh::serve` in-process for the SSH tests: a test
//! gate (allow by default, block by pattern, hold by pattern with the
//! outcome chosen by the test, deny shells), a loopback listener, and the
//! real OpenSSH clients pointed at it.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Output,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use anyhow::Result;
use interlock::{
    gate::{
        BoxFuture, CommandKind, Gate, Held, HoldOutcome, Record, RecordingRef, Request, Verdict,
    },
    ssh::{ClientAuth, Credential, HostIdentity, HostKeyCheck, SshTarget},
};
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
};

use crate::Sshd;

/// A hold the test resolves.
pub struct PendingHold {
    pub text: String,
    pub resolve: oneshot::Sender<HoldOutcome>,
}

/// The test's gate. Substring patterns decide; everything is logged.
#[derive(Default)]
pub struct TestGate {
    pub block: Vec<String>,
    pub hold: Vec<String>,
    pub deny_shell: bool,
    pub block_session: bool,
    pub hold_session: bool,
    pub holds: Mutex<Option<mpsc::UnboundedSender<PendingHold>>>,
    pub requests: Mutex<Vec<Request>>,
    pub records: Mutex<Vec<Record>>,
    pub withdrawn: Arc<Mutex<Vec<String>>>,
}

impl TestGate {
    /// What `pick` takes from each record, in order.
    pub fn records_of<T>(&self, pick: impl Fn(&Record) -> Option<T>) -> Vec<T> {
        self.records
            .lock()
            .unwrap()
            .iter()
            .filter_map(pick)
            .collect()
    }

    /// Every recorded `Record::Command` as (kind, text, exit status).
    pub fn commands(&self) -> Vec<(CommandKind, String, Option<u32>)> {
        self.records_of(|r| match r {
            Record::Command {
                kind,
                text,
                exit_status,
                ..
            } => Some((*kind, text.clone(), *exit_status)),
            _ => None,
        })
    }

    /// Every reconstructed shell line, in order.
    pub fn shell_lines(&self) -> Vec<String> {
        self.records_of(|r| match r {
            Record::ShellLine { text } => Some(text.clone()),
            _ => None,
        })
    }

    /// Every terminal recording the commands' records name.
    pub fn recordings(&self) -> Vec<RecordingRef> {
        self.records_of(|r| match r {
            Record::Command { recording, .. } => recording.clone(),
            _ => None,
        })
    }

    /// (text, signal) of every recorded command a signal ended.
    pub fn exit_signals(&self) -> Vec<(String, String)> {
        self.records_of(|r| match r {
            Record::Command {
                text,
                exit_signal: Some(sig),
                ..
            } => Some((text.clone(), sig.clone())),
            _ => None,
        })
    }

    fn verdict(&self, request: &Request) -> Verdict {
        let text = match request {
            Request::Session if self.block_session => {
                return Verdict::Block {
                    rule: "no-sessions".into(),
                    message: "sessions are closed".into(),
                };
            }
            Request::Session if self.hold_session => "session".to_string(),
            Request::Command {
                kind: CommandKind::Shell,
                ..
            } if self.deny_shell => {
                return Verdict::Block {
                    rule: "no-shells".into(),
                    message: "interactive shells are not allowed".into(),
                };
            }
            Request::Command { text, .. } => text.clone(),
            _ => String::new(),
        };
        if let Some(p) = self.block.iter().find(|p| text.contains(p.as_str())) {
            return Verdict::Block {
                rule: format!("block-{p}"),
                message: format!("'{p}' is forbidden here"),
            };
        }
        if self.hold.iter().any(|p| text.contains(p.as_str()))
            || (self.hold_session && *request == Request::Session)
        {
            let (tx, rx) = oneshot::channel();
            let id = format!("appr-{}", crate::unique("h"));
            let withdrawn = Arc::clone(&self.withdrawn);
            let wid = id.clone();
            let held = Held::new(
                id,
                "hold-rule".into(),
                SystemTime::now() + Duration::from_secs(3600),
                "run `interlock approvals approve <id>`".into(),
                rx,
                Box::new(move || withdrawn.lock().unwrap().push(wid)),
            );
            if let Some(h) = self.holds.lock().unwrap().as_ref() {
                let _ = h.send(PendingHold { text, resolve: tx });
            }
            return Verdict::Hold(held);
        }
        Verdict::Allow {
            rule: None,
            mask: Vec::new(),
        }
    }
}

impl Gate for TestGate {
    fn decide<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Verdict> {
        self.requests.lock().unwrap().push(request.clone());
        let v = self.verdict(request);
        Box::pin(async move { v })
    }

    fn record(&self, record: Record) -> BoxFuture<'_, ()> {
        self.records.lock().unwrap().push(record);
        Box::pin(async {})
    }

    fn possible_masks(&self) -> Vec<interlock::gate::MaskRule> {
        Vec::new()
    }
}

/// A proxy in front of `sshd`, and what a client needs to use it.
pub struct Proxy {
    pub addr: SocketAddr,
    pub known_hosts: PathBuf,
    /// A key the upstream does NOT authorize: only the injected one works.
    pub client_key: PathBuf,
    pub recordings: PathBuf,
}

/// The target for `sshd` with the injected key and a pinned host key.
pub fn target(sshd: &Sshd, identity: HostIdentity) -> Result<SshTarget> {
    Ok(SshTarget {
        upstream: sshd.addr,
        host_names: Vec::new(),
        upstream_user: Some("root".into()),
        upstream_users: Vec::new(),
        env: Vec::new(),
        decide_at_login: false,
        credential: Credential::PrivateKey(std::fs::read(&sshd.client_key)?),
        host_key_check: HostKeyCheck::Pinned(sshd.host_public_key.clone()),
        client_auth: ClientAuth::default(),
        host_identity: identity,
        recording_dir: sshd.dir.join("recordings"),
        session_id: None,
        socket_buffers: Default::default(),
    })
}

/// The usual proxy in front of `sshd`: its [`target`] with a fresh host
/// identity, the identity's plain host key trusted by the client.
pub async fn proxy(sshd: &Sshd, gate: Arc<TestGate>) -> Proxy {
    let target = target(sshd, HostIdentity::generate().unwrap()).unwrap();
    start(sshd, target, gate, None).await.unwrap()
}

/// Listens on 127.0.0.1 and serves every connection with `target`.
/// `known_hosts_line` is what the client trusts (`None`: the identity's
/// plain host key for `[127.0.0.1]:port`).
pub async fn start(
    sshd: &Sshd,
    target: SshTarget,
    gate: Arc<TestGate>,
    known_hosts_line: Option<String>,
) -> Result<Proxy> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let line = known_hosts_line.unwrap_or_else(|| {
        format!(
            "[127.0.0.1]:{} {}",
            addr.port(),
            target.host_identity.public_key_openssh()
        )
    });
    let known_hosts = sshd.dir.join(format!("known_hosts-{}", addr.port()));
    std::fs::write(&known_hosts, format!("{line}\n"))?;
    let client_key = sshd.dir.join(format!("rogue_key-{}", addr.port()));
    crate::ssh_keygen(&client_key)?;
    let recordings = target.recording_dir.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (t, g) = (target.clone(), Arc::clone(&gate));
            tokio::spawn(async move {
                if let Err(e) = interlock::ssh::serve(stream, t, g).await {
                    eprintln!("proxy session ended: {e}");
                }
            });
        }
    });
    Ok(Proxy {
        addr,
        known_hosts,
        client_key,
        recordings,
    })
}

impl Proxy {
    /// The common OpenSSH client options: strict host key checking against
    /// the proxy's known_hosts, batch mode, only the rogue key.
    pub fn options(&self) -> Vec<String> {
        [
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            &format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-i",
            &self.client_key.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// `ssh [extra] root@127.0.0.1 <command>` with `stdin`.
    pub async fn ssh(&self, extra: &[&str], command: &str, stdin: &[u8]) -> Result<Output> {
        self.ssh_env(extra, command, stdin, &[]).await
    }

    /// [`Proxy::ssh`] with extra environment variables for the client.
    pub async fn ssh_env(
        &self,
        extra: &[&str],
        command: &str,
        stdin: &[u8],
        env: &[(&str, &Path)],
    ) -> Result<Output> {
        let args = self.ssh_args(extra, command);
        run("ssh", &args, stdin, env).await
    }

    /// The full `ssh` argument list for `extra` and `command`.
    pub fn ssh_args(&self, extra: &[&str], command: &str) -> Vec<String> {
        let mut args = self.options();
        args.extend(["-p".into(), self.addr.port().to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push("root@127.0.0.1".into());
        if !command.is_empty() {
            args.push(command.into());
        }
        args
    }

    /// `scp [extra] from to` (paths may use `root@127.0.0.1:`).
    pub async fn scp(&self, extra: &[&str], from: &str, to: &str) -> Result<Output> {
        let mut args = self.options();
        args.extend(["-P".into(), self.addr.port().to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend([from.to_string(), to.to_string()]);
        run("scp", &args, b"", &[]).await
    }

    /// `sftp -b batch root@127.0.0.1`.
    pub async fn sftp(&self, batch: &Path) -> Result<Output> {
        let mut args = self.options();
        args.extend(["-P".into(), self.addr.port().to_string()]);
        args.extend(["-b".into(), batch.display().to_string()]);
        args.push("root@127.0.0.1".into());
        run("sftp", &args, b"", &[]).await
    }
}

async fn run(
    program: &str,
    args: &[String],
    stdin: &[u8],
    env: &[(&str, &Path)],
) -> Result<Output> {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    // Written concurrently with reading, so a command echoing its input
    // never fills both pipes.
    let writer = child.stdin.take().map(|mut input| {
        let data = stdin.to_vec();
        tokio::spawn(async move { input.write_all(&data).await })
    });
    let out = child.wait_with_output().await?;
    if let Some(w) = writer {
        w.await??;
    }
    Ok(out)
}

/// stdout and stderr as text, for assertions.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
