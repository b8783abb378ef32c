//! The SSH proxy's two legs beyond the basics, in-process against a real
//! sshd (127.0.0.45): the upstream host key looked up in known_hosts under
//! the target's host name and refused when an entry holds another key; a
//! client that logs in with a password when the target allows it; and
//! signal requests relayed to the running command (sent by a russh client,
//! which the OpenSSH client cannot do) as a non-root user (sshd refuses
//! them for root sessions).

use std::sync::Arc;

use interlock::ssh::{ClientAuth, HostIdentity, HostKeyCheck};
use interlock_tests::{
    Sshd, TestUser,
    sshproxy::{self, TestGate, text},
};
use russh::{
    ChannelMsg, Sig,
    keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate},
};

const IP: &str = "127.0.0.45";

fn other_key(dir: &std::path::Path) -> String {
    let path = dir.join(interlock_tests::unique("other"));
    interlock_tests::ssh_keygen(&path).unwrap();
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_hosts_is_looked_up_by_the_targets_host_name() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start(IP).unwrap();
    let gate = Arc::new(TestGate::default());
    let port = sshd.addr.port();
    let mut target = sshproxy::target(&sshd, HostIdentity::generate().unwrap()).unwrap();
    target.host_names = vec!["deploy.example.test".into()];
    let known = sshd.dir.join("known_hosts-by-name");
    // Runs `cmd` through a proxy whose known_hosts holds `lines`.
    let attempt = async |lines: String, cmd: &str| {
        std::fs::write(&known, lines).unwrap();
        let mut t = target.clone();
        t.host_key_check = HostKeyCheck::KnownHosts(known.clone());
        let p = sshproxy::start(&sshd, t, Arc::clone(&gate), None)
            .await
            .unwrap();
        text(&p.ssh(&[], cmd, b"").await.unwrap())
    };
    let key = &sshd.host_public_key;

    // An entry for the host name only, in the [name]:port form.
    let lines = format!("# written for the name\n[deploy.example.test]:{port} {key}\n");
    let (stdout, stderr) = attempt(lines, "echo by-name").await;
    assert_eq!(stdout, "by-name\n", "{stderr}");

    // The name written without the port is another host (port 22).
    let (stdout, stderr) = attempt(format!("deploy.example.test {key}\n"), "echo no").await;
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("is not in")
            && stderr.contains(&format!("looked up as {IP}, deploy.example.test")),
        "{stderr}"
    );

    // An entry with another key: refused, naming the line, even though the
    // address's entry holds the right key.
    let wrong = other_key(&sshd.dir);
    let lines = format!("[{IP}]:{port} {key}\n[deploy.example.test]:{port} {wrong}\n");
    let (stdout, stderr) = attempt(lines, "echo no").await;
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "upstream host key mismatch for {IP}:{port}: expected the key for deploy.example.test on line 2 of {}",
            known.display()
        )),
        "{stderr}"
    );

    // The address's own entry changed: refused the same way.
    let (stdout, stderr) = attempt(format!("[{IP}]:{port} {wrong}\n"), "echo no").await;
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("upstream host key mismatch") && stderr.contains("on line 1 of"),
        "{stderr}"
    );
    let ran: Vec<_> = gate.commands().into_iter().map(|(_, t, _)| t).collect();
    assert_eq!(ran, ["echo by-name"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_logs_in_with_a_password_when_the_target_allows_it() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start(IP).unwrap();
    let gate = Arc::new(TestGate::default());
    let mut target = sshproxy::target(&sshd, HostIdentity::generate().unwrap()).unwrap();
    target.client_auth = ClientAuth {
        publickey: false,
        password: true,
        none: false,
        job_token: false,
    };
    let p = sshproxy::start(&sshd, target, Arc::clone(&gate), None)
        .await
        .unwrap();
    // OpenSSH reads the password from SSH_ASKPASS when it must.
    let askpass = sshd.dir.join("askpass.sh");
    std::fs::write(&askpass, "#!/bin/sh\necho any-password-at-all\n").unwrap();
    std::fs::set_permissions(
        &askpass,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut args: Vec<String> = p
        .ssh_args(&[], "echo password-ok")
        .into_iter()
        .map(|a| {
            if a == "BatchMode=yes" {
                "BatchMode=no".into()
            } else {
                a
            }
        })
        .collect();
    args.splice(
        0..0,
        [
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "NumberOfPasswordPrompts=1",
        ]
        .map(String::from),
    );
    let out = tokio::process::Command::new("ssh")
        .args(&args)
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout, "password-ok\n");
    // The password went nowhere: the upstream saw the injected key.
    assert!(
        sshd.log().contains("Accepted publickey for root"),
        "{}",
        sshd.log()
    );
    assert!(!sshd.log().contains("any-password-at-all"));
}

/// Accepts the proxy's host key (this test is about signals, not trust).
struct AnyHost;

impl russh::client::Handler for AnyHost {
    type Error = russh::Error;

    async fn check_server_key(&mut self, _: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_request_reaches_the_command() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start(IP).unwrap();
    // sshd refuses signal requests for root sessions.
    let user = TestUser::create("il-sig", None);
    let gate = Arc::new(TestGate::default());
    let mut target = sshproxy::target(&sshd, HostIdentity::generate().unwrap()).unwrap();
    target.upstream_user = Some(user.name.clone());
    let p = sshproxy::start(&sshd, target, Arc::clone(&gate), None)
        .await
        .unwrap();
    let config = Arc::new(russh::client::Config::default());
    let mut client = russh::client::connect(config, p.addr, AnyHost)
        .await
        .unwrap();
    let key = PrivateKey::from_openssh(std::fs::read(&p.client_key).unwrap()).unwrap();
    let auth = client
        .authenticate_publickey("root", PrivateKeyWithHashAlg::new(Arc::new(key), None))
        .await
        .unwrap();
    assert!(auth.success());
    let mut ch = client.channel_open_session().await.unwrap();
    let cmd =
        "trap 'kill $!; echo got-term; exit 7' TERM; sleep 600 >/dev/null 2>&1 & echo ready; wait";
    ch.exec(true, cmd).await.unwrap();
    let (mut out, mut status, mut signalled) = (String::new(), None, false);
    while let Some(msg) = ch.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                out.push_str(&String::from_utf8_lossy(&data));
                if out.contains("ready") && !signalled {
                    signalled = true;
                    ch.signal(Sig::TERM).await.unwrap();
                }
            }
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            _ => {}
        }
    }
    assert_eq!(out, "ready\ngot-term\n");
    assert_eq!(status, Some(7));
    assert!(
        gate.commands()
            .iter()
            .any(|(_, t, s)| t == cmd && *s == Some(7)),
        "{:?}",
        gate.commands()
    );
}

/// Runs `ch`'s messages to the end: the replies to its requests in order
/// (`true` for success), what it printed, and its exit status.
async fn replies_and_output(
    ch: &mut russh::Channel<russh::client::Msg>,
) -> (Vec<bool>, String, Option<u32>) {
    let (mut replies, mut out, mut status) = (Vec::new(), String::new(), None);
    while let Some(msg) = ch.wait().await {
        match msg {
            ChannelMsg::Success => replies.push(true),
            ChannelMsg::Failure => replies.push(false),
            ChannelMsg::Data { data } => out.push_str(&String::from_utf8_lossy(&data)),
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            _ => {}
        }
    }
    (replies, out, status)
}

/// An `env` request gets an answer exactly when the client asks for one: a
/// refused variable asked with want_reply gets a failure, an allowed one a
/// success, and a refused one sent without want_reply (as OpenSSH sends
/// `SetEnv`/`SendEnv`) gets none, so the next reply the client reads is its
/// exec's. The refused variables never reach the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_requests_are_answered_only_when_the_client_asks() {
    if !Sshd::available() {
        return;
    }
    let sshd = Sshd::start(IP).unwrap();
    let gate = Arc::new(TestGate::default());
    let mut target = sshproxy::target(&sshd, HostIdentity::generate().unwrap()).unwrap();
    target.env = vec!["INTERLOCK_GREETING".into()];
    let p = sshproxy::start(&sshd, target, Arc::clone(&gate), None)
        .await
        .unwrap();
    let config = Arc::new(russh::client::Config::default());
    let mut client = russh::client::connect(config, p.addr, AnyHost)
        .await
        .unwrap();
    let key = PrivateKey::from_openssh(std::fs::read(&p.client_key).unwrap()).unwrap();
    let auth = client
        .authenticate_publickey("root", PrivateKeyWithHashAlg::new(Arc::new(key), None))
        .await
        .unwrap();
    assert!(auth.success());
    let mut ch = client.channel_open_session().await.unwrap();
    ch.set_env(true, "INTERLOCK_SNEAKY", "asked").await.unwrap();
    ch.set_env(true, "INTERLOCK_GREETING", "hi").await.unwrap();
    ch.set_env(false, "INTERLOCK_QUIET", "unasked")
        .await
        .unwrap();
    ch.exec(
        true,
        "echo \"env=$INTERLOCK_GREETING$INTERLOCK_SNEAKY$INTERLOCK_QUIET\"",
    )
    .await
    .unwrap();
    let (replies, out, status) = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        replies_and_output(&mut ch),
    )
    .await
    .expect("the channel ends");
    assert_eq!(replies, [false, true, true], "env, env, exec; out: {out}");
    assert_eq!(out, "env=hi\n");
    assert_eq!(status, Some(0));
    let env = gate.records_of(|r| match r {
        interlock::gate::Record::Env { name, allowed, .. } => Some((name.clone(), *allowed)),
        _ => None,
    });
    assert_eq!(
        env,
        [
            ("INTERLOCK_SNEAKY".to_string(), false),
            ("INTERLOCK_GREETING".to_string(), true),
            ("INTERLOCK_QUIET".to_string(), false),
        ]
    );
}
