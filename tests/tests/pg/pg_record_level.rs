//! The recording level is the policy's, not the statement's: a statement can
//! raise its own level (a rule on its text or classes may set `full`), never
//! lower it, so a comment such as `/* payments. */` cannot take its text out
//! of the audit trail. Real psql, the kernel redirect, the daemon's records.

use anyhow::Result;
use interlock_tests::{postgres::*, *};
use serde_json::Value;

fn target(pg: &PgServer, pw: &std::path::Path) -> String {
    Policy::new().postgres("app-db", pg, pw).yaml()
}

/// The first `n` `statement` events, once there are that many.
fn statements(d: &Daemon, n: usize) -> Result<Vec<Value>> {
    let ev = d.wait_events(&format!("{n} statements"), |e| {
        of_type(e, "statement").len() >= n
    })?;
    Ok(of_type(&ev, "statement").into_iter().cloned().collect())
}

#[test]
fn a_comment_cannot_lower_the_recording_level() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let pg = PgServer::start("127.0.0.74")?;
    let pw = pg.password_file()?;
    let cg = TestCgroup::new("pg-record")?;

    // The rule the issue found: keyed on the statement text, lowering the
    // level. The daemon refuses to run with it, naming why.
    let smuggling = format!(
        "{}rules:
  - name: quiet-payments
    match: {{sql: '(?i)\\bpayments\\.'}}
    action: record
    record: metadata
",
        target(&pg, &pw)
    );
    let refused = Daemon::start(DaemonSpec::with_policy(&cg, &smuggling, &[]));
    let err = match refused {
        Ok(_) => anyhow::bail!("the daemon ran a policy whose statements choose their level"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("quiet-payments") && err.contains("cannot be keyed on the request itself"),
        "{err}"
    );

    // Identity and target may lower the level; a rule on the statement may
    // only raise it.
    let policy = format!(
        "{}rules:
  - name: quiet-app-db
    match: {{target: [app-db]}}
    action: record
    record: metadata
  - name: loud-payments
    match: {{sql: '(?i)\\bpayments\\.'}}
    action: record
    record: full
",
        target(&pg, &pw)
    );
    let d = Daemon::start(DaemonSpec::with_policy(&cg, &policy, &[]))?;
    for sql in ["SELECT 1 AS plain", "SELECT 2 AS flagged /* payments. */"] {
        let out = psql_in(&cg, &pg, sql).output()?;
        assert!(
            out.status.success(),
            "{sql}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            d.log()
        );
    }
    let stmts = statements(&d, 2)?;
    let texts: Vec<&Value> = stmts.iter().map(|s| &s["text"]).collect();
    assert_eq!(
        texts,
        [
            &Value::Null,
            &Value::from("SELECT 2 AS flagged /* payments. */")
        ],
        "{stmts:#?}"
    );
    Ok(())
}
