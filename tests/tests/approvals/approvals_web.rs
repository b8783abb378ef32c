//! The approvals page in a real browser. A real OpenID provider (npm `oidc-provider`) signs
//! people in; the real daemon holds psql's DELETE mid-transaction and serves the page over
//! TLS with a certificate from its own CA, which headless Chromium (driven over WebDriver)
//! trusts. An SRE signs in, sees the hold, approves it and the statement completes in that
//! session; another hold is denied from a phone-sized window with JavaScript disabled, opened
//! from the link in the notification; someone outside the approver group sees nothing and is
//! refused by the API; the human who started the job (the job token's `actor`) may see but
//! not decide (four eyes); a form without its CSRF token changes nothing; a bot decides over
//! the JSON API with a bearer token; sign-out and an ended session send the browser back to
//! sign in. Page, provider and PostgreSQL on 127.0.0.71 (127.0.0.72 for the session test).
//!
//! With `INTERLOCK_SCREENSHOTS=DIR` the list and detail pages are saved there as PNGs (the
//! README's screenshots come from this test).

use std::{
    path::{Path, PathBuf},
    process::{Child, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use interlock_tests::{
    browser::{self, Browser, BrowserSpec},
    oidc::{self, Account, JobClient, OidcProvider, ProviderSpec, RS256, WebClient},
    postgres::*,
    webhook::{Mode, Receiver},
    *,
};
use serde_json::{Value, json};

/// The page's name; each browser resolves it to the test's loopback address.
const HOST: &str = "approvals.test";
const PAGE_CLIENT: &str = "interlock-page";
const PAGE_SECRET: &str = "page-client-secret-7f3a";
const API_RESOURCE: &str = "urn:interlock:approvals-api";
const API_AUDIENCE: &str = "interlock-approvals-api";

fn accounts() -> Vec<Account> {
    let person = |id: &str, name: &str, groups: &[&str]| Account {
        id: id.into(),
        claims: json!({
            "email": format!("{id}@corp.example"), "email_verified": true,
            "name": name, "preferred_username": id, "groups": groups,
        }),
    };
    vec![
        person("sam", "Sam Reliability", &["sre"]),
        person("eve", "Eve Developer", &["dev"]),
        // The human who starts the CI job below (its token's `actor`), also an SRE.
        person("dave", "Dave Deployer", &["sre"]),
    ]
}

fn jobs() -> Vec<JobClient> {
    vec![
        JobClient::new(
            "ci-job",
            json!({"actor": "dave", "run_id": "5001", "repository": "org/app"}),
        ),
        JobClient::new(
            "approval-bot",
            json!({"preferred_username": "approval-bot", "groups": ["sre"]}),
        ),
    ]
}

/// Everything one test needs: provider, database, daemon with the page, receivers.
struct Setup {
    ip: &'static str,
    idp: OidcProvider,
    pg: PgServer,
    cg: TestCgroup,
    d: Daemon,
    json_hook: Receiver,
    chat_hook: Receiver,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn start(ip: &'static str, session: &str) -> Result<Setup> {
        let redirect = format!("https://{HOST}/auth/callback");
        let idp = OidcProvider::start_with(
            ip,
            &ProviderSpec {
                jobs: &jobs(),
                web: &[WebClient {
                    id: PAGE_CLIENT.into(),
                    secret: PAGE_SECRET.into(),
                    redirect_uri: redirect,
                }],
                accounts: &accounts(),
                resources: &[(API_RESOURCE, API_AUDIENCE)],
            },
        )?;
        let pg = PgServer::start(ip)?;
        pg.query(&format!(
            "CREATE TABLE accounts (id int, owner text);
             INSERT INTO accounts SELECT g, 'owner-' || g FROM generate_series(1, 10) g;
             ALTER TABLE accounts OWNER TO {ROLE}"
        ))?;
        let dir = scratch("interlock-web")?;
        let secret = dir.path().join("page-client-secret");
        std::fs::write(&secret, format!("{PAGE_SECRET}\n"))?;
        let json_hook = Receiver::start(ip, 0, vec![Mode::Status(200)])?;
        let chat_hook = Receiver::start(ip, 0, vec![Mode::Status(200)])?;
        let cg = TestCgroup::new("web")?;
        let policy = format!(
            "version: 1
identity:
  issuers:
    - name: ci
      issuer: {issuer}
      audience: interlock
targets:
  - name: app-db
    protocol: postgres
    match: [{{address: {ip}, port: {port}}}]
    upstream: {{user: {ROLE}, password: {{file: {pw}}}, tls: disable, client_auth: [job_token]}}
rules:
  - name: writes-need-an-sre
    match: {{statement: [write]}}
    action: require_approval
    approval:
      approvers: {{oidc_groups: [sre], users: [daemon]}}
      timeout: 300s
web:
  listen: {ip}:443
  url: https://{HOST}
  tls: {{names: [{HOST}]}}
  sign_in:
    issuer: {issuer}
    client_id: {PAGE_CLIENT}
    client_secret: {{file: {secret}}}
  session: {session}
  api: {{audience: {API_AUDIENCE}}}
",
            issuer = idp.issuer,
            port = pg.addr.port(),
            pw = pg.password_file()?.display(),
            secret = secret.display(),
        );
        let d = Daemon::start(DaemonSpec::with_policy(
            &cg,
            &policy,
            &[
                "--approval-json-webhook",
                &json_hook.url("/holds"),
                "--approval-webhook",
                &chat_hook.url("/chat"),
            ],
        ))?;
        Ok(Setup {
            ip,
            idp,
            pg,
            cg,
            d,
            json_hook,
            chat_hook,
            _dir: dir,
        })
    }

    /// interlock's CA, which minted the page's certificate.
    fn ca(&self) -> PathBuf {
        self.d.state_dir.join("tls_ca.pem")
    }

    fn page(&self, path: &str) -> String {
        format!("https://{HOST}{path}")
    }

    async fn browser(&self, javascript: bool, window: (u32, u32)) -> Result<Browser> {
        Browser::start(BrowserSpec {
            javascript,
            trust_ca: Some(self.ca()),
            hosts: vec![(HOST.into(), self.ip.into())],
            window,
        })
        .await
    }

    /// A psql session of the CI job (its job token as password, over TLS) that runs
    /// `statements` one after the other in one connection.
    fn psql(&self, statements: &[&str]) -> Result<Child> {
        let token = self.idp.token("ci-job", RS256)?;
        let (host, port) = (
            self.pg.addr.ip().to_string(),
            self.pg.addr.port().to_string(),
        );
        let mut args = vec![
            "-X",
            "-At",
            "-w",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            &host,
            "-p",
            &port,
            "-U",
            ROLE,
            "-d",
            DATABASE,
        ];
        for s in statements {
            args.push("-c");
            args.push(s);
        }
        Ok(self
            .cg
            .command(Path::new("/usr/bin/psql"), &args)
            .env("PGPASSWORD", token)
            .env("PGSSLMODE", "require")
            .env("PGCONNECT_TIMEOUT", "20")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?)
    }

    /// The id of the `n`th hold (0-based), once it is requested.
    fn hold(&self, n: usize) -> Result<String> {
        let ev = self.d.wait_events_long(&format!("hold #{n}"), |e| {
            of_type(e, "approval_requested").len() > n
        })?;
        Ok(of_type(&ev, "approval_requested")[n]["approval"]["id"]
            .as_str()
            .context("approval id")?
            .to_string())
    }

    /// The `approval_decided` event of `id`.
    fn decided(&self, id: &str) -> Result<Value> {
        let ev = self.d.wait_events_long("the decision", |e| {
            of_type(e, "approval_decided")
                .iter()
                .any(|x| x["approval"]["id"] == id)
        })?;
        of_type(&ev, "approval_decided")
            .into_iter()
            .find(|x| x["approval"]["id"] == id)
            .cloned()
            .context("decision")
    }

    /// Whether `id` is still pending (asked over the control socket, as root).
    fn pending(&self, id: &str) -> Result<bool> {
        let out = self.d.cli(&[
            "approvals",
            "show",
            id,
            "--socket",
            &self.d.socket().display().to_string(),
        ])?;
        let v: Value = serde_json::from_str(&out.stdout).with_context(|| format!("{out:?}"))?;
        Ok(v["state"] == "pending")
    }

    /// An HTTPS client that trusts interlock's CA and finds the page on the test's address.
    fn http(&self) -> Result<reqwest::Client> {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(self.ca())?)?;
        Ok(reqwest::Client::builder()
            .add_root_certificate(ca)
            .tls_built_in_root_certs(false)
            .resolve(HOST, format!("{}:443", self.ip).parse()?)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()?)
    }
}

/// Waits (bounded) for a psql child and returns its output.
fn finish(child: Child) -> Result<Output> {
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => Ok(out?),
        Err(_) => {
            // SAFETY: kill with a pid this test started.
            unsafe { libc::kill(id as i32, libc::SIGKILL) };
            bail!("psql did not finish")
        }
    }
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Signs in at the page (from wherever `start` leads) as `login` on the provider's form.
async fn sign_in(b: &Browser, start: &str, login: &str) -> Result<()> {
    b.goto(start).await?;
    b.click("#sign-in").await?;
    b.type_into("input[name=login]", login).await?;
    b.type_into("input[name=password]", "any password").await?;
    b.click("button[type=submit]").await?;
    b.wait_for("#signed-in-as").await?;
    Ok(())
}

/// Whether scripts run in `b` (a page whose script rewrites its own text).
async fn scripts_run(b: &Browser) -> Result<bool> {
    b.goto("data:text/html,<p id=probe>off</p><script>document.getElementById('probe').textContent='on'</script>")
        .await?;
    Ok(b.text("#probe").await? == "on")
}

/// Where screenshots go, if the run asks for them.
fn screenshots() -> Option<PathBuf> {
    std::env::var_os("INTERLOCK_SCREENSHOTS").map(PathBuf::from)
}

/// The page's CSRF token for the signed-in browser (the sign-out form carries it).
async fn csrf(b: &Browser) -> Result<String> {
    b.wait_for("input[name=csrf]")
        .await?
        .attr("value")
        .await?
        .context("csrf value")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvers_decide_held_statements_on_the_page() -> Result<()> {
    if !privileged() || !PgServer::available() || !oidc::available() || !browser::available() {
        return Ok(());
    }
    let s = Setup::start("127.0.0.71", "1h")?;
    let http = s.http()?;

    // 1. A psql session of the CI job, held mid-transaction at its DELETE.
    let first = s.psql(&[
        "BEGIN",
        "SELECT 'before ' || count(*) FROM accounts",
        "DELETE FROM accounts WHERE id <= 3",
        "SELECT 'after ' || count(*) FROM accounts",
        "COMMIT",
    ])?;
    let id = s.hold(0)?;
    assert_eq!(s.pg.query("SELECT count(*) FROM accounts")?, "10");

    // An SRE signs in, sees it, opens it and approves it.
    let sam = s.browser(true, (1100, 900)).await?;
    assert!(scripts_run(&sam).await?);
    sign_in(&sam, &s.page("/"), "sam")
        .await
        .with_context(|| format!("provider log:\n{}\ndaemon log:\n{}", s.idp.log(), s.d.log()))?;
    assert_eq!(sam.text("#signed-in-as").await?, "sam@corp.example");
    let card = sam.text(&format!("#hold-{id}")).await?;
    assert!(
        card.contains("DELETE FROM accounts WHERE id <= 3"),
        "{card}"
    );
    assert!(
        card.contains("app-db") && card.contains("writes-need-an-sre"),
        "{card}"
    );
    if let Some(dir) = screenshots() {
        sam.screenshot(&dir.join("approvals-list.png")).await?;
    }
    sam.click(&format!("#hold-{id} a")).await?;
    assert_eq!(
        sam.text("#request-text").await?,
        "DELETE FROM accounts WHERE id <= 3"
    );
    let job = sam.text("#job-token").await?;
    assert!(job.contains("ci-job") && job.contains("dave"), "{job}");
    if let Some(dir) = screenshots() {
        // Tall enough to show the decision form.
        sam.resize(1100, 1400).await?;
        sam.screenshot(&dir.join("approvals-detail.png")).await?;
        sam.resize(1100, 900).await?;
    }
    sam.type_into("#reason", "ticket OPS-7: cleanup of test accounts")
        .await?;
    sam.click("#approve").await?;
    assert_eq!(sam.text("#outcome").await?.to_lowercase(), "approved");
    // The statement completes in that session, and so does the transaction.
    let out = finish(first)?;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("before 10") && stdout.contains("after 7"),
        "{stdout}"
    );
    assert_eq!(s.pg.query("SELECT count(*) FROM accounts")?, "7");
    let dec = s.decided(&id)?;
    let a = &dec["approval"];
    assert_eq!(a["decision"], "approved", "{dec:#}");
    assert_eq!(a["channel"], "web");
    assert_eq!(a["by"]["issuer"], s.idp.issuer.as_str());
    assert_eq!(a["by"]["subject"], "sam");
    assert_eq!(a["by"]["email"], "sam@corp.example");
    assert_eq!(a["reason"], "ticket OPS-7: cleanup of test accounts");
    assert_eq!(a["requester"]["job"]["claims"]["actor"], "dave");

    // 2. Another hold, denied from a phone with JavaScript off, opened from the link the
    //    notifications carry.
    let second = s.psql(&["DELETE FROM accounts WHERE id = 4"])?;
    let id2 = s.hold(1)?;
    let url = s.page(&format!("/holds/{id2}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let (note, chat) = loop {
        let note = s
            .json_hook
            .got()
            .into_iter()
            .find(|r| r.body.contains(&id2));
        let chat = s
            .chat_hook
            .got()
            .into_iter()
            .find(|r| r.body.contains(&id2));
        if let (Some(n), Some(c)) = (note, chat) {
            break (n, c);
        }
        if Instant::now() > deadline {
            bail!("no notifications of {id2}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let note: Value = serde_json::from_str(&note.body)?;
    assert_eq!(note["type"], "approval_requested");
    assert_eq!(note["url"], url.as_str());
    assert_eq!(note["approval"]["id"], id2.as_str());
    assert_eq!(
        note["approval"]["request"]["text"],
        "DELETE FROM accounts WHERE id = 4"
    );
    let chat: Value = serde_json::from_str(&chat.body)?;
    let chat = chat["text"].as_str().unwrap_or_default();
    assert!(chat.contains(&format!("<{url}|{id2}>")), "{chat}");
    let phone = s.browser(false, (390, 844)).await?;
    assert!(!scripts_run(&phone).await?, "JavaScript is not off");
    sign_in(&phone, &url, "sam").await?;
    assert_eq!(phone.url().await?, url, "back at the hold after signing in");
    if let Some(dir) = screenshots() {
        phone
            .screenshot(&dir.join("approvals-detail-phone.png"))
            .await?;
    }
    phone.type_into("#reason", "not during the freeze").await?;
    phone.click("#deny").await?;
    assert_eq!(phone.text("#outcome").await?.to_lowercase(), "denied");
    let out = finish(second)?;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("denied by sam@corp.example (web)")
            && stderr.contains("not during the freeze"),
        "{stderr}"
    );
    assert_eq!(s.pg.query("SELECT count(*) FROM accounts")?, "7");
    assert_eq!(s.decided(&id2)?["approval"]["decision"], "denied");
    phone.close().await;

    // 3. Outside the approver group: nothing to see, refused by the API.
    let third = s.psql(&["DELETE FROM accounts WHERE id = 5"])?;
    let id3 = s.hold(2)?;
    let eve = s.browser(true, (1100, 900)).await?;
    sign_in(&eve, &s.page("/"), "eve").await?;
    eve.wait_for("#nothing-pending").await?;
    assert!(!eve.has(&format!("#hold-{id3}")).await);
    eve.goto(&s.page(&format!("/holds/{id3}"))).await?;
    assert!(
        eve.text("#error").await?.contains("no request"),
        "{}",
        eve.source().await?
    );
    assert!(!eve.source().await?.contains("DELETE FROM accounts"));
    let eve_cookie = eve
        .cookie("__Host-interlock")
        .await?
        .context("eve's session")?;
    eve.goto(&s.page("/")).await?;
    let eve_csrf = csrf(&eve).await?;
    let list: Value = http
        .get(s.page("/api/v1/holds"))
        .header("cookie", format!("__Host-interlock={eve_cookie}"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(list["pending"], json!([]), "{list:#}");
    let r = http
        .post(s.page(&format!("/api/v1/holds/{id3}/approve")))
        .header("cookie", format!("__Host-interlock={eve_cookie}"))
        .header("x-csrf-token", &eve_csrf)
        .json(&json!({"reason": "let me"}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 403);
    let body: Value = r.json().await?;
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not an approver"),
        "{body}"
    );
    assert!(s.pending(&id3)?);
    eve.close().await;

    // 4. The human who started the job (its token's actor) sees it but may not decide.
    let dave = s.browser(true, (1100, 900)).await?;
    sign_in(&dave, &s.page(&format!("/holds/{id3}")), "dave").await?;
    let refusal = dave.text("#refusal").await?;
    assert!(
        refusal.contains("four eyes") && refusal.contains("actor=dave"),
        "{refusal}"
    );
    assert!(!dave.has("#approve").await);
    let dave_cookie = dave
        .cookie("__Host-interlock")
        .await?
        .context("dave's session")?;
    let dave_csrf = csrf(&dave).await?;
    let r = http
        .post(s.page(&format!("/api/v1/holds/{id3}/approve")))
        .header("cookie", format!("__Host-interlock={dave_cookie}"))
        .header("x-csrf-token", &dave_csrf)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.text().await?.contains("four eyes"));
    assert!(s.pending(&id3)?);
    dave.close().await;

    // 5. Without its CSRF token a decision changes nothing (form and API alike).
    let sam_cookie = sam
        .cookie("__Host-interlock")
        .await?
        .context("sam's session")?;
    let r = http
        .post(s.page(&format!("/holds/{id3}/decide")))
        .header("cookie", format!("__Host-interlock={sam_cookie}"))
        .form(&[("decision", "approve"), ("reason", "forged")])
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.text().await?.contains("CSRF token is missing"));
    let r = http
        .post(s.page(&format!("/api/v1/holds/{id3}/approve")))
        .header("cookie", format!("__Host-interlock={sam_cookie}"))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.text().await?.contains("CSRF token is missing"));
    assert!(s.pending(&id3)?);

    // 6. A bot with a bearer token from the provider decides over the API.
    let bot = s.idp.token("approval-bot", API_RESOURCE)?;
    let list: Value = http
        .get(s.page("/api/v1/holds"))
        .bearer_auth(&bot)
        .send()
        .await?
        .json()
        .await?;
    let held = list["pending"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["id"] == id3.as_str()))
        .with_context(|| format!("{list:#}"))?;
    assert_eq!(held["url"], s.page(&format!("/holds/{id3}")).as_str());
    let r = http
        .post(s.page(&format!("/api/v1/holds/{id3}/approve")))
        .bearer_auth(&bot)
        .json(&json!({"reason": "change window open"}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await?);
    let out = finish(third)?;
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(s.pg.query("SELECT count(*) FROM accounts")?, "6");
    let a = s.decided(&id3)?["approval"].clone();
    assert_eq!(a["channel"], "api");
    assert_eq!(a["by"]["subject"], "approval-bot");
    // A token for another audience is refused.
    let wrong = s.idp.token("approval-bot", RS256)?;
    let r = http
        .get(s.page("/api/v1/holds"))
        .bearer_auth(&wrong)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 401);

    // 7. Decided requests stay listed; sign-out ends the session.
    sam.goto(&s.page("/")).await?;
    let decided = sam.text("#decided").await?;
    assert!(decided.contains(&id) && decided.contains(&id2), "{decided}");
    sam.click("#sign-out").await?;
    assert!(sam.text("#notice").await?.contains("signed out"));
    sam.goto(&s.page("/")).await?;
    sam.wait_for("#sign-in").await?;
    let r = http
        .get(s.page("/api/v1/holds"))
        .header("cookie", format!("__Host-interlock={sam_cookie}"))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 401);
    sam.close().await;

    // Nothing secret reached a file the daemon wrote.
    for secret in [PAGE_SECRET, &bot, &sam_cookie, &eve_cookie, &dave_cookie] {
        assert_eq!(s.d.files_containing(secret), Vec::<PathBuf>::new());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_session_sends_the_browser_back_to_sign_in() -> Result<()> {
    if !privileged() || !PgServer::available() || !oidc::available() || !browser::available() {
        return Ok(());
    }
    let s = Setup::start("127.0.0.72", "15s")?;
    let held = s.psql(&["DELETE FROM accounts WHERE id = 1"])?;
    let id = s.hold(0)?;
    let b = s.browser(false, (1100, 900)).await?;
    sign_in(&b, &s.page(&format!("/holds/{id}")), "sam").await?;
    // The session began before this page loaded and lasts 15 s: wait until it surely ended.
    let loaded = Instant::now();
    b.wait_for("#approve").await?;
    tokio::time::sleep(Duration::from_secs(16).saturating_sub(loaded.elapsed())).await;
    b.click("#approve").await?;
    assert!(
        b.text("#notice").await?.contains("expired"),
        "{}",
        b.source().await?
    );
    b.wait_for("#sign-in").await?;
    assert!(s.pending(&id)?, "an ended session decided");
    let r = s
        .http()?
        .get(s.page("/api/v1/holds"))
        .header(
            "cookie",
            format!(
                "__Host-interlock={}",
                b.cookie("__Host-interlock").await?.unwrap_or_default()
            ),
        )
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 401);
    b.close().await;
    assert!(s.d.cli_as("daemon", None, &["approvals", "deny", &id])?.ok);
    let out = finish(held)?;
    assert!(!out.status.success());
    assert_eq!(s.pg.query("SELECT count(*) FROM accounts")?, "10");
    Ok(())
}
