//! Attribution: every session names the exact process, its lineage, user,
//! cgroup and CI context, and nothing else from the environment.

use anyhow::{Context as _, Result};
use interlock_tests::*;

#[test]
fn sessions_carry_exact_identity_and_only_allow_listed_ci_variables() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let cg = TestCgroup::new("identity")?;
    let d = Daemon::start(DaemonSpec::tcp(&cg, &[server.addr.port()], &[]))?;
    let dst = server.addr.to_string();
    let secret = "s3cr3t-never-captured-9f1c";
    let child = cg
        .command(&testclient(), &["echo", &dst, "who-am-i"])
        .env("GITHUB_RUN_ID", "4242")
        .env("CI_JOB_ID", "77")
        .env("SECRET_TOKEN", secret)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let out = child.wait_with_output()?;
    assert!(String::from_utf8_lossy(&out.stdout).contains("who-am-i"));

    let ev = d.wait_events("session", |e| !of_type(e, "session_ended").is_empty())?;
    let id = &of_type(&ev, "session_started")[0]["identity"];
    let p = &id["process"];
    assert_eq!(id["original_destination"], dst.as_str());
    assert_eq!(id["target"], "svc");
    assert_eq!(id["comm"], "testclient");
    assert_eq!(p["tgid"], pid, "{id:#}");
    assert_eq!(p["pid"], pid);
    assert_eq!(
        p["ppid"],
        std::process::id(),
        "sh exec'd the client, so its parent is the test"
    );
    assert_eq!(p["uid"], 0);
    assert_eq!(p["user"], "root");
    assert!(
        p["exe"].as_str().context("exe")?.ends_with("/testclient"),
        "{p:#}"
    );
    assert_eq!(p["argv"][1], "echo");
    assert_eq!(p["argv"][2], dst.as_str());
    assert_eq!(p["cgroup"], cg.scope());
    assert_eq!(p["ancestry"][0]["tgid"], std::process::id());
    // No trusted runner in this policy: the client's own CI variables count for nothing
    // (tests/tests/ci_context.rs has the runner-rooted context).
    let ci = p["ci"].as_object().context("ci")?;
    assert!(ci.is_empty(), "{ci:?}");
    assert_eq!(p["ci_source"]["from"], "none", "{p:#}");
    assert!(
        p["ci_source"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("names no trusted runner"),
        "{p:#}"
    );

    // The secret is nowhere: not in any event, not in the daemon's log.
    let raw = d.events_text();
    assert!(!raw.contains(secret), "secret leaked into the event log");
    assert!(
        !raw.contains("SECRET_TOKEN"),
        "non-allow-listed variable name leaked"
    );
    assert!(
        !d.log().contains(secret),
        "secret leaked into the daemon log"
    );
    Ok(())
}

#[test]
fn lineage_survives_a_parent_that_exited_before_the_connect() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let cg = TestCgroup::new("lineage")?;
    let d = Daemon::start(DaemonSpec::tcp(&cg, &[server.addr.port()], &[]))?;
    // The outer shell starts a subshell and exits at once; the subshell
    // connects later, by which time /proc says its parent is init. Only the
    // kernel's fork/exec records still know the outer shell.
    let script = format!(
        "( sleep 0.5; exec {} echo {} lineage ) & exit 0",
        testclient().display(),
        server.addr
    );
    let outer = cg
        .command(
            std::path::Path::new("/bin/sh"),
            &["-c", &script, "lineage-marker-arg"],
        )
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let outer_pid = outer.id();
    let out = outer.wait_with_output()?;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("lineage"),
        "{out:?}"
    );

    let ev = d.wait_events("session", |e| !of_type(e, "session_ended").is_empty())?;
    let p = &of_type(&ev, "session_started")[0]["identity"]["process"];
    assert!(
        p["exe"].as_str().context("exe")?.ends_with("/testclient"),
        "{p:#}\n{}",
        d.log()
    );
    assert_eq!(
        p["ppid"], outer_pid,
        "the real parent, not the reaper: {p:#}"
    );
    let parent = &p["ancestry"][0];
    assert_eq!(parent["tgid"], outer_pid, "{p:#}");
    let argv: Vec<&str> = parent["argv"]
        .as_array()
        .context("argv")?
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(
        argv.contains(&"lineage-marker-arg"),
        "the exited parent's argv came from the exec record: {argv:?}"
    );
    assert_eq!(p["ancestry"][1]["tgid"], std::process::id(), "{p:#}");
    Ok(())
}

#[test]
fn secrets_on_command_lines_are_redacted_in_identities() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let cg = TestCgroup::new("argvsecret")?;
    let d = Daemon::start(DaemonSpec::tcp(&cg, &[server.addr.port()], &[]))?;
    let dst = server.addr.to_string();
    let secret = "pw-on-argv-5d2e";
    // A parent shell whose own command line carries the secret, and a
    // client with it in a URI, an option and an assignment (testclient
    // ignores arguments after the message).
    let script = format!(
        "PGPASSWORD={secret} true; exec \"$0\" echo {dst} hi postgres://ci:{secret}@db/app --password {secret} DB_TOKEN={secret}"
    );
    let out = cg
        .command(std::path::Path::new("/bin/sh"), &["-c", &script])
        .arg(testclient())
        .output()?;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hi"),
        "{out:?}"
    );
    let ev = d.wait_events("session", |e| !of_type(e, "session_ended").is_empty())?;
    let p = &of_type(&ev, "session_started")[0]["identity"]["process"];
    let argv: Vec<&str> = p["argv"]
        .as_array()
        .context("argv")?
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert_eq!(
        argv.get(4..),
        Some(
            &[
                "postgres://ci:<redacted>@db/app",
                "--password",
                "<redacted>",
                "DB_TOKEN=<redacted>"
            ][..]
        ),
        "{argv:?}"
    );
    assert!(
        !d.events_text().contains(secret),
        "a command-line secret reached an event"
    );
    assert!(
        !d.log().contains(secret),
        "a command-line secret reached the log"
    );
    Ok(())
}
