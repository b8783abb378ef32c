//! Forwarding through the real daemon: with a policy that has no
//! forwarding rule, `ssh -L`, `-W`, `-R` (to a port and to a socket), `-A`
//! and `-Y` are all refused, each with a `request_blocked` event naming the
//! kind; an allow rule opens exactly the local forward it names. Real sshd
//! on 127.0.0.40, real OpenSSH clients in a scope cgroup.

use std::process::Output;

use anyhow::Result;
use interlock_tests::{sshagent::Agent, sshjob::Job, *};
use serde_json::Value;

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn free_port(ip: &str) -> Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// A remote command that connects back to the client's `-L` listener on
/// 127.0.0.1:`port` (sshd runs on the same host), sends `ping` and prints
/// what came back.
fn through_local_forward(port: u16) -> String {
    format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port} || exit 9; echo ping >&3; read -r line <&3; echo \"got:$line\""
    )
}

fn blocked_kinds(ev: &[Value]) -> Vec<(String, String)> {
    of_type(ev, "request_blocked")
        .iter()
        .map(|b| {
            (
                b["request"]["command_kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                b["rule"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn forwarding_no_rule_allows_is_refused_and_recorded() -> Result<()> {
    if !privileged() || !Sshd::available() {
        return Ok(());
    }
    let sshd = Sshd::start("127.0.0.40")?;
    let echo = EchoServer::start("127.0.0.40:0")?;
    let cg = TestCgroup::new("ssh-fwd-deny")?;
    let d = sshjob::daemon(&cg, &sshd, "")?;
    let job = Job::trusting_ca(&d)?;
    let refused = "no rule allows";

    // -W: a direct-tcpip channel opened at once.
    let out = job
        .ssh(&cg, &sshd, &["-W", &echo.addr.to_string()], "")
        .output()?;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success() && stdout.is_empty(), "{stdout}");
    assert!(
        stderr
            .contains("no rule allows port_forward: forwarding is denied unless a rule allows it"),
        "{stderr}"
    );

    // -L: the listener is the client's; each connection to it is refused.
    let lport = free_port("127.0.0.1")?;
    let spec = format!("127.0.0.1:{lport}:{}", echo.addr);
    let out = job
        .ssh(&cg, &sshd, &["-L", &spec], &through_local_forward(lport))
        .output()?;
    let (stdout, stderr) = text(&out);
    assert_eq!(stdout.trim(), "got:", "nothing came back: {stderr}");
    assert!(stderr.contains(refused), "{stderr}");

    // -R to a port and to a socket path on the server.
    let rport = free_port("127.0.0.40")?;
    let spec = format!("127.0.0.40:{rport}:{}", echo.addr);
    let args = ["-o", "ExitOnForwardFailure=yes", "-R", &spec];
    let out = job.ssh(&cg, &sshd, &args, "echo must-not-run").output()?;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(255), "{stdout}");
    assert!(stderr.contains("remote port forwarding failed"), "{stderr}");
    let sock = sshd.dir.join("forwarded.sock");
    let spec = format!("{}:{}", sock.display(), echo.addr);
    let args = ["-o", "ExitOnForwardFailure=yes", "-R", &spec];
    let out = job.ssh(&cg, &sshd, &args, "echo must-not-run").output()?;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(255), "{stdout}");
    assert!(stderr.contains("forwarding failed"), "{stderr}");
    assert!(!sock.exists(), "sshd never listened on the socket");

    // -A: the job's agent never reaches the server.
    let agent = Agent::start(&job.dir, &job.key)?;
    let out = job
        .ssh(&cg, &sshd, &["-A"], "ssh-add -l")
        .env("SSH_AUTH_SOCK", &agent.sock)
        .output()?;
    let (stdout, stderr) = text(&out);
    assert_ne!(out.status.code(), Some(0), "{stdout}");
    assert!(!stdout.contains("interlock-test"), "{stdout}");
    assert!(stderr.contains("no rule allows agent_forward"), "{stderr}");

    // -Y: no display on the server.
    let out = job
        .ssh(&cg, &sshd, &["-Y"], "echo display=$DISPLAY")
        .env("DISPLAY", ":0")
        .output()?;
    let (stdout, stderr) = text(&out);
    assert_eq!(stdout.trim(), "display=", "{stderr}");
    assert!(stderr.contains("no rule allows x11"), "{stderr}");

    let ev = d.wait_events("six refusals", |e| {
        of_type(e, "request_blocked").len() >= 6 && of_type(e, "session_ended").len() >= 6
    })?;
    let mut kinds = blocked_kinds(&ev);
    kinds.sort();
    let want: Vec<(String, String)> = [
        "agent_forward",
        "port_forward",
        "port_forward",
        "remote_forward",
        "streamlocal_forward",
        "x11",
    ]
    .iter()
    .map(|k| (k.to_string(), "default".to_string()))
    .collect();
    assert_eq!(kinds, want);
    for b in of_type(&ev, "request_blocked") {
        let message = b["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("no rule allows "), "{b}");
    }
    let remote = of_type(&ev, "request_blocked")
        .into_iter()
        .find(|b| b["request"]["command_kind"] == "streamlocal_forward")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        remote["request"]["text"],
        format!("remote unix:{}", sock.display())
    );
    // The refused forwards never reached the echo server.
    assert_eq!(echo.connections(), 0);
    // The commands themselves ran (forwarding was refused, not the session).
    let ran: Vec<&str> = of_type(&ev, "command")
        .iter()
        .filter_map(|c| c["text"].as_str())
        .collect();
    assert!(ran.contains(&"ssh-add -l"), "{ran:?}");
    Ok(())
}

#[test]
fn an_allow_rule_opens_the_local_forward_it_names() -> Result<()> {
    if !privileged() || !Sshd::available() {
        return Ok(());
    }
    let sshd = Sshd::start("127.0.0.41")?;
    let echo = EchoServer::start("127.0.0.41:0")?;
    let other = EchoServer::start("127.0.0.41:0")?;
    let cg = TestCgroup::new("ssh-fwd-allow")?;
    let rules = format!(
        "  - name: tunnel-to-echo\n    match: {{kind: [port_forward], command: '^{}$'}}\n    action: allow\n",
        echo.addr.to_string().replace('.', "\\.")
    );
    let d = sshjob::daemon_with_rules(&cg, &sshd, "", &rules)?;
    let job = Job::trusting_ca(&d)?;

    let lport = free_port("127.0.0.1")?;
    let spec = format!("127.0.0.1:{lport}:{}", echo.addr);
    let out = job
        .ssh(&cg, &sshd, &["-L", &spec], &through_local_forward(lport))
        .output()?;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}\n{}", d.log());
    assert!(
        stdout.starts_with("got:echo ") && stdout.trim_end().ends_with(" ping"),
        "{stdout}"
    );
    assert_eq!(echo.connections(), 1);

    // Anything else stays refused.
    let out = job
        .ssh(&cg, &sshd, &["-W", &other.addr.to_string()], "")
        .output()?;
    let (stdout, stderr) = text(&out);
    assert!(
        stdout.is_empty() && stderr.contains("no rule allows port_forward"),
        "{stderr}"
    );
    assert_eq!(other.connections(), 0);

    let ev = d.wait_events("both ends", |e| of_type(e, "session_ended").len() >= 2)?;
    let tunnel = of_type(&ev, "command")
        .into_iter()
        .find(|c| c["command_kind"] == "port_forward")
        .cloned()
        .expect("the forward is recorded");
    assert_eq!(tunnel["text"], echo.addr.to_string());
    assert_eq!(tunnel["decision"]["action"], "allowed");
    assert_eq!(tunnel["decision"]["rule"], "tunnel-to-echo");
    assert_eq!(
        blocked_kinds(&ev),
        [("port_forward".to_string(), "default".to_string())]
    );
    Ok(())
}
