//! Job tokens from a real OpenID provider (npm `oidc-provider`, started on loopback)
//! through the real daemon: psql presenting its token as the password over TLS, ssh as its
//! password, and a token in the job root's environment. A token-gated rule admits only a
//! valid token whose claims match; every refusal names its reason to the client and in the
//! audit trail, and no token reaches any file the daemon writes.

use std::{
    process::{Command, Output},
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use interlock_tests::{
    oidc::{self, ES256, JobClient, OTHER_AUDIENCE, OidcProvider, RS256},
    postgres::*,
    *,
};
use serde_json::{Value, json};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn clients() -> Vec<JobClient> {
    let main = json!({"ref": "main", "ref_protected": "true", "groups": ["sre", "deploy"],
                      "project_path": "infra/app"});
    let mut short = JobClient::new("job-short", main.clone());
    short.ttl = 1;
    let mut early = main.clone();
    early["nbf"] = json!(now() + 3600);
    vec![
        JobClient::new("job-main", main),
        JobClient::new(
            "job-feature",
            json!({"ref": "feature", "ref_protected": "false", "groups": ["sre"]}),
        ),
        short,
        JobClient::new("job-early", early),
    ]
}

fn identity_section(issuer: &str) -> String {
    format!(
        "identity:
  runners: ['**/Runner.Worker']
  token_env: [INTERLOCK_ID_TOKEN]
  issuers:
    - name: ci
      issuer: {issuer}
      audience: interlock
      algorithms: [RS256, ES256]
      clock_skew: 0s
"
    )
}

const RULE: &str = "rules:
  - name: protected-main
    match:
      oidc: {issuer: ci, sub: 'job-*', claims: {ref: main, ref_protected: 'true'}, groups: [sre]}
    action: allow
";

fn psql(cg: &TestCgroup, pg: &PgServer, token: &str, sslmode: &str) -> Result<Output> {
    let port = pg.addr.port().to_string();
    let ip = pg.addr.ip().to_string();
    Ok(cg
        .command(
            std::path::Path::new("/usr/bin/psql"),
            &[
                "-X",
                "-At",
                "-w",
                "-h",
                &ip,
                "-p",
                &port,
                "-U",
                ROLE,
                "-d",
                DATABASE,
                "-c",
                "SELECT 41 + 1",
            ],
        )
        .env("PGPASSWORD", token)
        .env("PGSSLMODE", sslmode)
        .env("PGCONNECT_TIMEOUT", "20")
        .output()?)
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The `n`th session's start, once `n + 1` sessions ended.
fn started(d: &Daemon, n: usize) -> Result<Value> {
    let ev = d.wait_events("sessions", |e| of_type(e, "session_ended").len() > n)?;
    of_type(&ev, "session_started")
        .get(n)
        .map(|v| (*v).clone())
        .context("no session_started")
}

#[test]
fn psql_presents_its_job_token_and_only_matching_claims_are_admitted() -> Result<()> {
    if !privileged() || !PgServer::available() || !oidc::available() {
        return Ok(());
    }
    let idp = OidcProvider::start("127.0.0.21", &clients(), None, "real")?;
    let pg = PgServer::start("127.0.0.22")?;
    let cg = TestCgroup::new("oidc-pg")?;
    let policy = format!(
        "version: 1
{identity}targets:
  - name: db
    protocol: postgres
    default: block
    job_token: required
    match: [{{address: {ip}, port: {port}}}]
    upstream: {{user: {ROLE}, password: {{file: {pw}}}, tls: disable, client_auth: [job_token]}}
{RULE}",
        identity = identity_section(&idp.issuer),
        ip = pg.addr.ip(),
        port = pg.addr.port(),
        pw = pg.password_file()?.display(),
    );
    let d = Daemon::start(DaemonSpec::with_policy(&cg, &policy, &[]))?;
    let mut tokens = Vec::new();
    let mut n = 0;
    let mut expect = |token: &str, sslmode: &str, ok: bool, needle: &str| -> Result<Value> {
        let out = psql(&cg, &pg, token, sslmode)?;
        let (stdout, stderr) = text(&out);
        if ok {
            assert!(out.status.success(), "{needle}: {stderr}\n{}", d.log());
            assert_eq!(stdout, "42");
        } else {
            assert!(!out.status.success(), "{needle}: admitted");
            assert!(stderr.contains(needle), "{needle}: {stderr}");
        }
        let s = started(&d, n)?;
        n += 1;
        Ok(s)
    };

    // RS256 and ES256 tokens with matching claims.
    let rs = idp.token("job-main", RS256)?;
    let s = expect(&rs, "require", true, "rs256")?;
    let job = &s["identity"]["job_token"];
    assert_eq!(job["sub"], "job-main", "{s:#}");
    assert_eq!(job["issuer"], "ci");
    assert_eq!(job["iss"], idp.issuer.as_str());
    assert_eq!(job["source"]["from"], "postgres_password");
    assert_eq!(job["claims"]["ref"], "main");
    assert_eq!(job["claims"]["project_path"], "infra/app");
    assert!(
        job["claims"].get("client_id").is_none(),
        "not allow-listed: {job:#}"
    );
    assert_eq!(job["groups"], json!(["sre", "deploy"]));
    assert_eq!(s["decision"]["rule"], "protected-main");
    assert_eq!(s["client_leg"], "tls");
    let es = idp.token("job-main", ES256)?;
    expect(&es, "require", true, "es256")?;
    tokens.extend([rs.clone(), es]);

    // A valid token whose claims do not match: the target's default.
    let feature = idp.token("job-feature", RS256)?;
    let s = expect(&feature, "require", false, "target default: block")?;
    assert_eq!(s["identity"]["job_token"]["sub"], "job-feature");
    tokens.push(feature);

    // Key rotation: tokens signed by the new key verify (unknown kid -> keys fetched again).
    let kids = idp.rotate()?;
    let rotated = idp.token("job-main", RS256)?;
    assert_eq!(oidc::kid_of(&rotated)?, kids[0], "signed by the new key");
    expect(&rotated, "require", true, "rotated")?;
    tokens.push(rotated);

    // Expired, not yet valid, wrong audience.
    let short = idp.token("job-short", RS256)?;
    std::thread::sleep(Duration::from_millis(2100));
    let s = expect(&short, "require", false, "the job token has expired")?;
    assert_eq!(s["decision"]["rule"], "job_token");
    assert!(
        s["identity"]["job_token"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("expired")
    );
    let early = idp.token("job-early", RS256)?;
    expect(&early, "require", false, "not valid yet")?;
    let other = idp.token("job-main", OTHER_AUDIENCE)?;
    expect(&other, "require", false, "audience")?;
    tokens.extend([short, early, other]);

    // Another issuer, and a forger claiming our issuer with its own keys (same key ids).
    let stranger = OidcProvider::start("127.0.0.23", &clients(), None, "real")?;
    let foreign_iss = stranger.token("job-main", RS256)?;
    expect(
        &foreign_iss,
        "require",
        false,
        "is not one the policy trusts",
    )?;
    let forger = OidcProvider::start("127.0.0.24", &clients(), Some(&idp.issuer), "real")?;
    let forged = forger.token("job-main", RS256)?;
    assert_eq!(oidc::claims_of(&forged)?["iss"], idp.issuer.as_str());
    expect(&forged, "require", false, "signature does not verify")?;
    tokens.extend([foreign_iss, forged]);

    // Garbage, and a valid token over a plain leg (never asked for in clear).
    expect("not-a-token", "require", false, "not a signed JWT")?;
    let s = expect(&rs, "disable", false, "only over TLS")?;
    assert_eq!(s["client_leg"], "plain");

    // No token is in any file the daemon wrote (events, audit log, daemon log, state).
    for t in &tokens {
        let sig = t.rsplit('.').next().unwrap_or(t);
        assert!(
            d.files_containing(t).is_empty(),
            "{:?}",
            d.files_containing(t)
        );
        assert!(d.files_containing(sig).is_empty(), "a signature leaked");
    }
    // `sessions list --identity` finds sessions by verified subject.
    let list = Command::new(interlock_bin()?)
        .args([
            "sessions",
            "list",
            "--json",
            "--identity",
            "job-feature",
            "--state-dir",
        ])
        .arg(&d.state_dir)
        .output()?;
    let lines: Vec<Value> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["job_token"]["sub"], "job-feature");
    Ok(())
}

#[test]
fn a_token_counts_only_in_the_job_roots_environment() -> Result<()> {
    if !privileged() || !oidc::available() {
        return Ok(());
    }
    let idp = OidcProvider::start("127.0.0.25", &clients(), None, "real")?;
    let server = EchoServer::start("127.0.0.2:0")?;
    let cg = TestCgroup::new("oidc-env")?;
    let policy = format!(
        "version: 1
{identity}targets:
  - name: svc
    protocol: tcp
    default: block
    job_token: required
    match: [{{address: 127.0.0.2, port: {port}}}]
{RULE}",
        identity = identity_section(&idp.issuer),
        port = server.addr.port(),
    );
    let d = Daemon::start(DaemonSpec::with_policy(&cg, &policy, &[]))?;
    let dir = runner_dir("interlock-runner")?;
    let runner = fake_runner(dir.path(), "Runner.Worker")?;
    let token = idp.token("job-main", ES256)?;
    let client = testclient().display().to_string();
    let dst = server.addr.to_string();
    let job = |root: &str, child: &str| -> Result<Output> {
        let inner = format!("{child} {client} echo {dst} hello; true");
        let script = format!("{root} /bin/bash -c {}; true", sh_quote(&inner));
        Ok(cg.command(&runner, &["-c", &script]).output()?)
    };
    // The runner put the token in the job root's environment.
    let out = job(&format!("INTERLOCK_ID_TOKEN={token}"), "")?;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hello"),
        "{out:?}\n{}",
        d.log()
    );
    let s = started(&d, 0)?;
    assert_eq!(s["decision"]["rule"], "protected-main", "{s:#}");
    assert_eq!(
        s["identity"]["job_token"]["source"],
        json!({"from": "job_root_env", "variable": "INTERLOCK_ID_TOKEN"})
    );
    // The same token set by the job's own child: not the job root's, so none.
    job("", &format!("INTERLOCK_ID_TOKEN={token}"))?;
    let s = started(&d, 1)?;
    assert_eq!(s["decision"]["action"], "blocked", "{s:#}");
    assert_eq!(s["decision"]["rule"], "job_token");
    let ev = d.wait_events("ends", |e| of_type(e, "session_ended").len() > 1)?;
    let ended = of_type(&ev, "session_ended");
    assert!(
        ended[1]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("requires a job token"),
        "{:#}",
        ended[1]
    );
    assert!(d.files_containing(&token).is_empty());
    Ok(())
}

#[test]
fn ssh_presents_its_job_token_as_the_password() -> Result<()> {
    if !privileged() || !Sshd::available() || !oidc::available() {
        return Ok(());
    }
    let idp = OidcProvider::start("127.0.0.26", &clients(), None, "real")?;
    let sshd = Sshd::start("127.0.0.27")?;
    let cg = TestCgroup::new("oidc-ssh")?;
    let policy = format!(
        "version: 1
{identity}targets:
  - name: host
    protocol: ssh
    default: block
    job_token: required
    match: [{{address: {ip}, port: {port}}}]
    upstream:
      user: root
      key: {{file: {key}}}
      host_key: \"{host_key}\"
      client_auth: [job_token]
{RULE}",
        identity = identity_section(&idp.issuer),
        ip = sshd.addr.ip(),
        port = sshd.addr.port(),
        key = sshd.client_key.display(),
        host_key = sshd.host_public_key.trim(),
    );
    let d = Daemon::start(DaemonSpec::with_policy(&cg, &policy, &[]))?;
    let job = sshjob::Job::trusting_ca(&d)?;
    let askpass = job.dir.join("askpass");
    std::fs::write(&askpass, "#!/bin/sh\nprintf '%s\\n' \"$JOB_TOKEN\"\n")?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o755))?;
    }
    let ssh = |token: &str| -> Result<Output> {
        let port = sshd.addr.port().to_string();
        let kh = format!("UserKnownHostsFile={}", job.known_hosts.display());
        let dest = format!("root@{}", sshd.addr.ip());
        Ok(cg
            .command(
                std::path::Path::new("/usr/bin/ssh"),
                &[
                    "-p",
                    &port,
                    "-o",
                    "StrictHostKeyChecking=yes",
                    "-o",
                    &kh,
                    "-o",
                    "PreferredAuthentications=password",
                    "-o",
                    "NumberOfPasswordPrompts=1",
                    "-o",
                    "ConnectTimeout=20",
                    "-o",
                    "PubkeyAuthentication=no",
                    &dest,
                    "echo via-interlock",
                ],
            )
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("JOB_TOKEN", token)
            .stdin(std::process::Stdio::null())
            .output()?)
    };
    let good = idp.token("job-main", RS256)?;
    let out = ssh(&good)?;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}\n{}", d.log());
    assert_eq!(stdout, "via-interlock");
    let s = started(&d, 0)?;
    assert_eq!(s["identity"]["job_token"]["source"]["from"], "ssh_password");
    assert_eq!(s["decision"]["rule"], "protected-main");

    let feature = idp.token("job-feature", RS256)?;
    let out = ssh(&feature)?;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success() && stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("target default: block"), "{stderr}");

    let out = ssh("garbage")?;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success() && stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("job token refused"), "{stderr}");
    let ev = d.wait_events("ends", |e| of_type(e, "session_ended").len() > 2)?;
    assert!(
        of_type(&ev, "command")
            .iter()
            .all(|c| c["session_id"] == s["session_id"]),
        "nothing ran for refused sessions"
    );
    for t in [&good, &feature] {
        assert!(d.files_containing(t).is_empty());
    }
    Ok(())
}
