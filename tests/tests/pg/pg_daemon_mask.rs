//! Masking, parameters and secrets through the whole pipeline: the real
//! daemon with a policy file, psql and pgbench in a scope cgroup. An
//! approved statement is masked like an allowed one; each strategy; Bind
//! parameters in `statement` events; password literals nowhere in events,
//! audit segments, logs, approval listings or chat notifications; a query
//! string run by query_to_xml decided by what it runs. Servers on 127.0.0.32.

use std::{
    os::unix::fs::PermissionsExt as _,
    process::{Output, Stdio},
};

use anyhow::Result;
use hmac::{Hmac, Mac as _};
use interlock_tests::{postgres::*, *};
use serde_json::Value;
use sha2::Sha256;

const EMAIL: &str = "bob@example.com";

fn target(pg: &PgServer, secret: &std::path::Path) -> String {
    Policy::new().postgres("app-db", pg, secret).yaml()
}

fn start(name: &str, rules: &str, extra: &[&str]) -> Result<(PgServer, TestCgroup, Daemon)> {
    let pg = PgServer::start("127.0.0.32")?;
    pg.query(&format!(
        "create table users (id int, email text);
         insert into users values (1, '{EMAIL}'), (2, '{EMAIL}'), (3, 'eve@example.com');
         create table cards (id int, number text, note text);
         insert into cards values (1, '4111111111111111', 'key AKIAIOSFODNN7EXAMPLE');
         alter table users owner to {ROLE}; alter table cards owner to {ROLE}"
    ))?;
    let cg = TestCgroup::new(name)?;
    let secret = pg.password_file()?;
    let policy = format!("{}rules:\n{rules}", target(&pg, &secret));
    let d = Daemon::start(DaemonSpec::with_policy(&cg, &policy, extra))?;
    Ok((pg, cg, d))
}

/// psql reading `sql` from its stdin (not its command line, which
/// session_started reports with the process identity), started.
fn psql_stdin(cg: &TestCgroup, pg: &PgServer, sql: &str) -> Result<std::process::Child> {
    use std::io::Write as _;
    let (ip, port) = (pg.addr.ip().to_string(), pg.addr.port().to_string());
    let mut child = cg
        .command(
            std::path::Path::new("/usr/bin/psql"),
            &["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", &ip, "-p", &port],
        )
        .args(["-U", ROLE, "-d", DATABASE])
        .env("PGPASSWORD", "not-the-password")
        .env("PGSSLMODE", "disable")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(sql.as_bytes())?;
        i.write_all(b"\n")?;
    }
    Ok(child)
}

fn out(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The id of the `n`th approval requested (1-based), once there are `n`.
fn held(d: &Daemon, n: usize) -> Result<String> {
    let ev = d.wait_events_long("hold", |e| of_type(e, "approval_requested").len() >= n)?;
    Ok(of_type(&ev, "approval_requested")[n - 1]["approval"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

#[test]
fn approved_statements_are_masked_and_every_strategy_applies() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let rules = "  - name: card-reads-need-a-human
    match: {statement: [read], sql: '(?i)from cards'}
    action: require_approval
    approval: {approvers: {users: [daemon]}, timeout: 60s}
  - name: hash-emails
    match: {target: [app-db]}
    action: mask
    mask: {columns: [public.users.email], strategy: hash}
  - name: last4
    action: mask
    mask: {columns: [public.cards.number], strategy: partial, keep_last: 4}
  - name: no-keys
    action: mask
    mask: {detectors: [aws_key]}
";
    let (pg, cg, d) = start("pg-mask-e2e", rules, &[])?;

    // Held, approved, then masked exactly as if it had been allowed.
    let child = psql_in(&cg, &pg, "SELECT number, note FROM cards")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let id = held(&d, 1)?;
    let r = d.cli_as("daemon", None, &["approvals", "approve", &id])?;
    assert!(r.ok, "{r:?}");
    let (stdout, stderr) = out(&child.wait_with_output()?);
    assert_eq!(stdout, "************1111|key ****", "{stderr}");

    // hash: HMAC-SHA256 under the host's key file, equal values equal, in
    // every session.
    let key_file = d.state_dir.join("mask.key");
    let mode = std::fs::metadata(&key_file)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mut key = [0u8; 32];
    let hex = std::fs::read_to_string(&key_file)?;
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex.trim()[2 * i..2 * i + 2], 16)?;
    }
    let expect = |v: &str| {
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(v.as_bytes());
        let out = mac.finalize().into_bytes();
        let hex: String = out[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("h:{hex}")
    };
    let first = psql_in(&cg, &pg, "SELECT email FROM users ORDER BY id").output()?;
    let (stdout, stderr) = out(&first);
    assert!(first.status.success(), "{stderr}");
    let (bob, eve) = (expect(EMAIL), expect("eve@example.com"));
    assert_eq!(stdout, format!("{bob}\n{bob}\n{eve}"));
    let again = psql_in(&cg, &pg, "SELECT u.email AS e FROM users u WHERE id = 3").output()?;
    assert_eq!(out(&again).0, eve);

    let ev = d.wait_events("statements", |e| of_type(e, "session_ended").len() == 3)?;
    let stmts = of_type(&ev, "statement");
    let cards = stmts
        .iter()
        .find(|s| s["text"] == "SELECT number, note FROM cards")
        .expect("recorded");
    assert_eq!(cards["decision"]["action"], "approved");
    let masked = of_type(&ev, "masked");
    let has = |rule: &str, what: &str| {
        masked
            .iter()
            .any(|m| m["rule"] == rule && m["counts"].to_string().contains(what))
    };
    assert!(has("last4", "public.cards.number"), "{masked:?}");
    assert!(has("no-keys", "detector:aws_key"), "{masked:?}");
    assert!(has("hash-emails", "public.users.email"), "{masked:?}");
    let text = d.events_text();
    for raw in [EMAIL, "4111111111111111", "AKIAIOSFODNN7EXAMPLE"] {
        assert!(!text.contains(raw), "{raw} in events");
        let leaked = d.files_containing(raw);
        assert!(leaked.is_empty(), "masked value {raw} is in {leaked:?}");
    }
    Ok(())
}

#[test]
fn password_literals_reach_the_server_but_no_record() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let chat = std::net::TcpListener::bind("127.0.0.32:0")?;
    let url = format!("http://{}/hooks/T000/B000", chat.local_addr()?);
    let rules = "  - name: roles-need-a-human
    match: {statement: [role_change], sql: '(?i)^create role'}
    action: require_approval
    approval: {approvers: {users: [daemon]}, timeout: 60s}
  - name: patterns-see-redacted-text
    match: {sql: 'Hunter2'}
    action: block
";
    let (pg, cg, d) = start("pg-secrets", rules, &["--approval-webhook", &url])?;
    pg.admin(&format!("alter role {ROLE} createrole"))?;

    let child = psql_stdin(
        &cg,
        &pg,
        "CREATE ROLE sneaky LOGIN PASSWORD 'Hunter2-create';",
    )?;
    let id = held(&d, 1)?;
    let chat_body = read_one_post(&chat)?;
    let list = d.cli_as("daemon", None, &["approvals", "list"])?;
    let show = d.cli_as("daemon", None, &["approvals", "show", &id])?;
    assert!(show.ok && show.stdout.contains("<redacted>"), "{show:?}");
    let r = d.cli_as("daemon", None, &["approvals", "approve", &id])?;
    assert!(r.ok, "{r:?}");
    let (_, stderr) = out(&child.wait_with_output()?);
    // The server got the real password: the role logs in with it.
    let login = std::process::Command::new("psql")
        .args(["-X", "-At", "-h", &pg.addr.ip().to_string()])
        .args([
            "-p",
            &pg.addr.port().to_string(),
            "-U",
            "sneaky",
            "-d",
            DATABASE,
        ])
        .args(["-c", "select current_user"])
        .env("PGPASSWORD", "Hunter2-create")
        .output()?;
    assert_eq!(out(&login).0, "sneaky", "{stderr} {:?}", out(&login));

    for sql in [
        // what psql's \password sends: a verifier literal
        "ALTER USER sneaky PASSWORD 'SCRAM-SHA-256$4096:SGFzaA==$Hunter2-stored:Hunter2-server'",
        "CREATE USER MAPPING FOR app SERVER nowhere OPTIONS (user 'u', password 'Hunter2-mapping')",
        "ALTER SERVER nowhere OPTIONS (SET password 'Hunter2-alter')",
        "SELECT dblink_connect('host=127.0.0.1 user=u password=Hunter2-dblink')",
    ] {
        // Most of these fail on the server; they are recorded all the same.
        psql_stdin(&cg, &pg, &format!("{sql};"))?.wait_with_output()?;
    }
    let ev = d.wait_events("ends", |e| of_type(e, "session_ended").len() == 5)?;
    let stmts = of_type(&ev, "statement");
    assert_eq!(stmts.len(), 5, "{stmts:?}");
    assert!(
        stmts
            .iter()
            .all(|s| s["text"].as_str().is_some_and(|t| t.contains("<redacted>"))),
        "{stmts:?}"
    );
    assert!(
        of_type(&ev, "request_blocked").is_empty(),
        "patterns saw a password"
    );
    let mut audit = String::new();
    for f in std::fs::read_dir(d.state_dir.join("audit"))? {
        audit.push_str(&std::fs::read_to_string(f?.path()).unwrap_or_default());
    }
    assert!(audit.contains("<redacted>"));
    for (what, text) in [
        ("events", d.events_text()),
        ("audit", audit),
        ("log", d.log()),
        ("approvals list", list.stdout + &list.stderr),
        ("approvals show", show.stdout + &show.stderr),
        ("chat", chat_body),
    ] {
        assert!(
            !text.contains("Hunter2"),
            "a password in the {what}: {text}"
        );
    }
    // Every password above starts so; the policy's own pattern is `Hunter2` alone.
    let leaked = d.files_containing("Hunter2-");
    assert!(leaked.is_empty(), "a password in {leaked:?}");
    Ok(())
}

#[test]
fn query_strings_and_parameters_end_to_end() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let rules = "  - name: no-server-files
    match: {statement: [dangerous_function]}
    action: block
  - name: no-emails
    action: mask
    mask: {detectors: [email]}
";
    let (pg, cg, d) = start("pg-qstr", rules, &[])?;
    let o = psql_in(
        &cg,
        &pg,
        "SELECT query_to_xml('select pg_read_file(''/etc/passwd'')', true, false, '')",
    )
    .output()?;
    let (_, stderr) = out(&o);
    assert!(!o.status.success());
    assert!(stderr.contains("no-server-files"), "{stderr}");

    // pgbench in extended mode binds :mail as a text parameter.
    let script_dir = interlock_tests::scratch("interlock-bench")?;
    let script = script_dir.path().join("bench.sql");
    std::fs::write(
        &script,
        "select :mail::text as m, count(*) from users where id > :n;\n",
    )?;
    let bench = cg
        .command(
            std::path::Path::new("/usr/bin/pgbench"),
            &[
                "-n",
                "-t",
                "1",
                "-M",
                "extended",
                "-D",
                &format!("mail=write to {EMAIL}"),
                "-D",
                "n=1",
                "-f",
                script.to_str().unwrap_or_default(),
                "-h",
                &pg.addr.ip().to_string(),
                "-p",
                &pg.addr.port().to_string(),
                "-U",
                ROLE,
                DATABASE,
            ],
        )
        .env("PGPASSWORD", "not-the-password")
        .env("PGSSLMODE", "disable")
        .output()?;
    assert!(bench.status.success(), "{:?}", out(&bench));
    // pgbench opens a connection of its own before the client's.
    let ev = d.wait_events("ends", |e| of_type(e, "session_ended").len() == 3)?;
    let blocked = of_type(&ev, "request_blocked");
    assert_eq!(blocked[0]["rule"], "no-server-files");
    let stmts = of_type(&ev, "statement");
    let stmt = stmts
        .iter()
        .find(|s| s["text"].as_str().is_some_and(|t| t.contains("$1::text")))
        .map(|s| (*s).clone())
        .unwrap_or(Value::Null);
    assert_eq!(
        stmt["params"],
        serde_json::json!(["write to ****", "1"]),
        "{stmts:#?}"
    );
    // pgbench got the value on its command line, which session_started
    // reports as the process's argv; nothing else may hold it.
    for mut e in d.events() {
        if let Some(p) = e.pointer_mut("/identity/process") {
            p["argv"] = Value::Null;
        }
        assert!(!e.to_string().contains(EMAIL), "{e}");
    }
    Ok(())
}
