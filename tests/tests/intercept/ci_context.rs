//! Runner-rooted CI context through the real daemon: a job cannot choose its own CI
//! variables. A fake runner (bash copied to `Runner.Worker`) starts a job whose root has
//! `GITHUB_REF=refs/heads/feature`; the job's child sets `GITHUB_REF=refs/heads/main` and
//! connects to a target whose only allow rule keys on main. The decision follows the job
//! root, not the child; a job root that execs itself with a new environment, and a flow
//! without a runner, have no CI context at all.

use anyhow::{Context as _, Result};
use interlock_tests::*;
use serde_json::Value;

fn policy(port: u16) -> String {
    format!(
        "version: 1
identity:
  runners: ['**/Runner.Worker']
targets:
  - name: svc
    protocol: tcp
    default: block
    match: [{{address: 127.0.0.2, port: {port}}}]
rules:
  - name: main-only
    match: {{ci: {{GITHUB_REF: refs/heads/main}}}}
    action: allow
"
    )
}

/// The session of the `n`th (0-based) connection, once it ended.
fn session(d: &Daemon, n: usize) -> Result<Value> {
    let ev = d.wait_events("sessions", |e| of_type(e, "session_ended").len() > n)?;
    of_type(&ev, "session_started")
        .get(n)
        .copied()
        .cloned()
        .context("session_started")
}

#[test]
fn a_forged_ci_variable_changes_no_decision() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let cg = TestCgroup::new("cictx")?;
    let d = Daemon::start(DaemonSpec::with_policy(
        &cg,
        &policy(server.addr.port()),
        &[],
    ))?;
    let dir = runner_dir("interlock-runner")?;
    let runner = fake_runner(dir.path(), "Runner.Worker")?;
    let client = testclient().display().to_string();
    let dst = server.addr.to_string();
    // `; true` keeps each shell from exec'ing its last command, so the runner forks the job
    // root and the job root forks the client, as real runners and jobs do.
    let job = |root_ref: &str, child: &str| -> Result<std::process::Output> {
        let inner = format!("{child} {client} echo {dst} hello; true");
        let script = format!(
            "GITHUB_REF={root_ref} /bin/bash -c {}; true",
            sh_quote(&inner)
        );
        Ok(cg
            .command(&runner, &["-c", &script])
            .env_remove("GITHUB_REF")
            .output()?)
    };

    // 1. The attack: the child claims main, the job root is a feature branch.
    job("refs/heads/feature", "GITHUB_REF=refs/heads/main")?;
    let s = session(&d, 0)?;
    assert_eq!(s["decision"]["action"], "blocked", "{s:#}\n{}", d.log());
    let p = &s["identity"]["process"];
    assert_eq!(p["ci"]["GITHUB_REF"], "refs/heads/feature", "{p:#}");
    assert_eq!(p["ci_source"]["from"], "job_root", "{p:#}");
    assert!(
        p["ci_source"]["runner_exe"]
            .as_str()
            .unwrap_or_default()
            .ends_with("/Runner.Worker"),
        "{p:#}"
    );

    // 2. A job on main is allowed, whatever its children say.
    let out = job("refs/heads/main", "GITHUB_REF=refs/heads/feature")?;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hello"),
        "{out:?}\n{}",
        d.log()
    );
    let s = session(&d, 1)?;
    assert_eq!(s["decision"]["action"], "allowed", "{s:#}");
    assert_eq!(s["decision"]["rule"], "main-only");

    // 3. The job root replaces itself with a new environment: no CI context.
    let script = format!(
        "GITHUB_REF=refs/heads/feature /bin/bash -c {}; true",
        sh_quote(&format!(
            "exec env GITHUB_REF=refs/heads/main {client} echo {dst} hello"
        ))
    );
    cg.command(&runner, &["-c", &script]).output()?;
    let s = session(&d, 2)?;
    assert_eq!(s["decision"]["action"], "blocked", "{s:#}");
    let src = &s["identity"]["process"]["ci_source"];
    assert_eq!(src["from"], "none", "{src:#}");
    assert!(
        src["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("exec'd"),
        "{src:#}"
    );

    // 4. No runner at all: the variable in the client's own environment counts for nothing.
    cg.command(&testclient(), &["echo", &dst, "hello"])
        .env("GITHUB_REF", "refs/heads/main")
        .output()?;
    let s = session(&d, 3)?;
    assert_eq!(s["decision"]["action"], "blocked", "{s:#}");
    let src = &s["identity"]["process"]["ci_source"];
    assert!(
        src["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("no trusted runner"),
        "{src:#}"
    );
    assert!(
        s["identity"]["process"]["ci"]
            .as_object()
            .is_some_and(|m| m.is_empty())
    );
    Ok(())
}

#[test]
fn policy_check_refuses_conditions_that_can_never_hold() -> Result<()> {
    let dir = scratch("interlock-cicheck")?;
    let check = |name: &str, text: &str| -> Result<(bool, String)> {
        let path = dir.path().join(name);
        std::fs::write(&path, text)?;
        let out = std::process::Command::new(interlock_bin()?)
            .args(["policy", "check"])
            .arg(&path)
            .output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let base = "version: 1\nidentity:\n  runners: ['**/gitlab-runner']\ntargets:\n  - {name: t, protocol: tcp, match: [{port: 1}]}\nrules:\n";
    let (ok, err) = check(
        "uncaptured.yaml",
        &format!(
            "{base}  - name: r\n    action: allow\n    match:\n      ci: {{MY_BRANCH: main}}\n"
        ),
    )?;
    assert!(!ok);
    assert!(err.contains("uncaptured.yaml:10:"), "{err}");
    assert!(
        err.contains("MY_BRANCH") && err.contains("CI_COMMIT_REF_NAME"),
        "the message lists what is captured: {err}"
    );
    let (ok, err) = check(
        "norunner.yaml",
        "version: 1\ntargets:\n  - {name: t, protocol: tcp, match: [{port: 1}]}\nrules:\n  - {name: r, action: allow, match: {ci: {CI_COMMIT_REF_NAME: main}}}\n",
    )?;
    assert!(!ok);
    assert!(err.contains("identity.runners"), "{err}");
    let (ok, err) = check(
        "noissuer.yaml",
        &format!("{base}  - {{name: r, action: allow, match: {{oidc: {{issuer: gitlab}}}}}}\n"),
    )?;
    assert!(!ok);
    assert!(err.contains("names no issuer"), "{err}");
    let (ok, err) = check(
        "good.yaml",
        &format!(
            "{base}  - {{name: r, action: allow, match: {{ci: {{CI_COMMIT_REF_NAME: main}}}}}}\n"
        ),
    )?;
    assert!(ok, "{err}");
    Ok(())
}

/// A runner is the file, not the name (issue 15 item 4). An unprivileged job user copies
/// bash to a path the runner glob and an `ancestor_exe` allow rule match (a directory it owns
/// under /tmp) and starts a "job" from it whose root claims `GITHUB_REF=refs/heads/main`:
/// no CI context (the copy is no trusted runner) and the `ancestor_exe` allow rule does not
/// count it, so both targets refuse. The same job under the root-installed runner is allowed.
#[test]
fn a_runner_copied_by_a_job_is_no_runner() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let ci_srv = EchoServer::start("127.0.0.2:0")?;
    let anc_srv = EchoServer::start("127.0.0.2:0")?;
    let policy = format!(
        "version: 1
identity:
  runners: ['**/Runner.Worker']
targets:
  - {{name: ci, protocol: tcp, default: block, match: [{{address: 127.0.0.2, port: {}}}]}}
  - {{name: anc, protocol: tcp, default: block, match: [{{address: 127.0.0.2, port: {}}}]}}
rules:
  - name: main-only
    match: {{target: [ci], ci: {{GITHUB_REF: refs/heads/main}}}}
    action: allow
  - name: under-a-runner
    match: {{target: [anc], ancestor_exe: ['**/Runner.Worker']}}
    action: allow
",
        ci_srv.addr.port(),
        anc_srv.addr.port()
    );
    let cg = TestCgroup::new("cifile")?;
    let d = Daemon::start(DaemonSpec::with_policy(&cg, &policy, &[]))?;
    let client = testclient().display().to_string();
    let job = format!(
        "GITHUB_REF=refs/heads/main /bin/bash -c {}; true",
        sh_quote(&format!(
            "{client} echo {} hello; {client} echo {} hello; true",
            ci_srv.addr, anc_srv.addr
        ))
    );
    let session_on = |target: &str, n: usize| -> Result<Value> {
        let ev = d.wait_events(&format!("session {n} on {target}"), |e| {
            of_type(e, "session_ended")
                .iter()
                .filter(|s| s["target"] == target)
                .count()
                > n
        })?;
        of_type(&ev, "session_started")
            .into_iter()
            .filter(|s| s["identity"]["target"] == target)
            .nth(n)
            .cloned()
            .with_context(|| format!("session_started {n} on {target}"))
    };

    // 1. The attack, as nobody: its own copy of bash under the runner's name.
    let (nobody, nogroup) = (65534u32, 65534u32);
    let attic = scratch("interlock-fake-runner")?;
    std::os::unix::fs::chown(attic.path(), Some(nobody), Some(nogroup))?;
    let fake = attic.path().join("Runner.Worker");
    let attack = format!(
        "cp /bin/bash {f} && chmod 755 {f} && exec {f} -c {}",
        sh_quote(&job),
        f = sh_quote(&fake.display().to_string())
    );
    let out = cg
        .command(
            std::path::Path::new("/usr/bin/setpriv"),
            &[
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "/bin/sh",
                "-c",
                &attack,
            ],
        )
        .output()?;
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("hello"),
        "the fake runner's job got through: {out:?}\n{}",
        d.log()
    );
    let s = session_on("ci", 0)?;
    assert_eq!(s["decision"]["action"], "blocked", "{s:#}\n{}", d.log());
    let p = &s["identity"]["process"];
    assert_eq!(p["uid"], nobody, "{p:#}");
    assert_eq!(p["ci_source"]["from"], "none", "{p:#}");
    let why = p["ci_source"]["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("does not count") && why.contains("Runner.Worker"),
        "{p:#}"
    );
    // The record says which file the fake runner ran and why it is not trusted.
    let fake_runner_entry = p["ancestry"]
        .as_array()
        .and_then(|a| {
            a.iter().find(|x| {
                x["exe"]
                    .as_str()
                    .is_some_and(|e| e.ends_with("/Runner.Worker"))
            })
        })
        .cloned()
        .context("the fake runner is on the ancestry")?;
    assert_eq!(
        fake_runner_entry["exe_trust"]["trust"], "untrusted",
        "{fake_runner_entry:#}"
    );
    assert_eq!(
        fake_runner_entry["exe_file"]["uid"], nobody,
        "{fake_runner_entry:#}"
    );
    let s = session_on("anc", 0)?;
    assert_eq!(s["decision"]["action"], "blocked", "{s:#}");
    assert!(s["decision"]["rule"].is_null(), "{s:#}");

    // 2. The root-installed runner: the same job is a runner's job.
    let dir = runner_dir("interlock-runner")?;
    let runner = fake_runner(dir.path(), "Runner.Worker")?;
    let out = cg.command(&runner, &["-c", &job]).output()?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("hello")
            .count(),
        2,
        "{out:?}\n{}",
        d.log()
    );
    let s = session_on("ci", 1)?;
    assert_eq!(s["decision"]["rule"], "main-only", "{s:#}");
    assert_eq!(s["identity"]["process"]["ci_source"]["from"], "job_root");
    let s = session_on("anc", 1)?;
    assert_eq!(s["decision"]["rule"], "under-a-runner", "{s:#}");
    Ok(())
}
