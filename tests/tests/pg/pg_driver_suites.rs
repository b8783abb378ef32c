//! Transparency a driver can rely on: a real driver's own test suite, run
//! directly against PostgreSQL and then through interlock (the suite's
//! processes in a scope cgroup, every connection redirected to the daemon),
//! once with injected credentials and once with the client's own
//! authentication relayed. Every test that passes directly must pass
//! through interlock (a test that fails through interlock is run once more
//! on its own, since suites hold timing-bound tests a loaded machine can
//! miss; passing then is reported, failing again fails this test).
//!
//! CI runs psycopg2's suite from its PyPI sdist (`cargo xtask setup`
//! unpacks it and builds the driver into a venv under `target/driver-suites`).
//! Any other pytest suite that reads `PSYCOPG_TEST_DSN` or `PSYCOPG2_TESTDB*`
//! runs the same way when given by path: psycopg 3's `tests/` from its
//! repository, with a Python that has psycopg and pytest installed:
//!
//! ```text
//! INTERLOCK_DRIVER_SUITE=/path/to/psycopg/tests \
//! INTERLOCK_DRIVER_PYTHON=/path/to/venv/bin/python \
//! INTERLOCK_DRIVER_PYTEST_ARGS="-m 'not slow'" \
//!   cargo test -p interlock-tests --test pg -- --nocapture pg_driver_suites::
//! ```

use std::{path::PathBuf, time::Duration};

use anyhow::Result;
use interlock_tests::{driver_suite::*, postgres::*, *};

/// The superuser the suites log in as (tests create extensions, terminate
/// backends, prepare transactions), and its password.
const DRIVER_ROLE: &str = "driver";
const DRIVER_PASSWORD: &str = "drv-s3cret";
const DRIVER_DB: &str = "driver_test";

/// The psycopg2 release whose sdist `cargo xtask setup` unpacks.
const PSYCOPG2: &str = "psycopg2-2.9.13";

/// How the daemon authenticates upstream for a proxied run.
#[derive(Clone, Copy, Debug)]
enum Auth {
    /// The target holds the role's password; the client's is never forwarded.
    Injected,
    /// The target has no credentials: the client's SCRAM exchange is relayed.
    Passthrough,
}

fn policy(pg: &PgServer, auth: Auth, password_file: &std::path::Path) -> String {
    let upstream = match auth {
        Auth::Injected => format!(
            "{{user: {DRIVER_ROLE}, password: {{file: {}}}, tls: disable}}",
            password_file.display()
        ),
        Auth::Passthrough => "{tls: disable}".to_string(),
    };
    format!(
        "version: 1
targets:
  - name: driver-db
    protocol: postgres
    match: [{{address: {ip}, port: {port}}}]
    upstream: {upstream}
",
        ip = pg.addr.ip(),
        port = pg.addr.port(),
    )
}

/// Runs `suite` directly and through interlock (both authentication
/// modes); fails naming every test that passed directly and not through
/// interlock. Prints the counts of each run.
fn compare(suite: &Suite, ip: &str) -> Result<()> {
    let scratch = scratch("interlock-driver-suite")?;
    // Enough connections for the pool tests, and prepared transactions so
    // the two-phase-commit tests run instead of skipping.
    let pg = PgServer::start_with_settings(
        ip,
        &["max_connections=100", "max_prepared_transactions=10"],
    )?;
    pg.admin(&format!(
        "create role {DRIVER_ROLE} superuser login password '{DRIVER_PASSWORD}'"
    ))?;
    pg.admin(&format!("create database {DRIVER_DB} owner {DRIVER_ROLE}"))?;
    let password_file = scratch.path().join("driver-password");
    std::fs::write(&password_file, DRIVER_PASSWORD)?;
    let dsn = Dsn {
        host: pg.addr.ip().to_string(),
        port: pg.addr.port(),
        user: DRIVER_ROLE.into(),
        password: DRIVER_PASSWORD.into(),
        dbname: DRIVER_DB.into(),
    };

    let direct = run(suite, &dsn, None, &scratch.path().join("direct"), None)?;
    let counts = direct.counts();
    eprintln!("{} direct: {counts}", suite.name);
    assert!(
        counts.passed > 0,
        "{}: no test passed directly, so the comparison would prove nothing\n{}",
        suite.name,
        direct.output_tail
    );

    let mut failures = String::new();
    for auth in [Auth::Injected, Auth::Passthrough] {
        let cg = TestCgroup::new("driver-suite")?;
        let d = Daemon::start(DaemonSpec::with_policy(
            &cg,
            &policy(&pg, auth, &password_file),
            &[],
        ))?;
        let work = scratch.path().join(format!("{auth:?}"));
        let proxied = run(suite, &dsn, Some(&cg), &work, None)?;
        eprintln!(
            "{} through interlock ({auth:?}): {}",
            suite.name,
            proxied.counts()
        );
        // The comparison means something only if the suite's connections
        // really went through the daemon.
        let sessions = d.count_events("session_started");
        assert!(
            sessions as usize >= counts.passed / 10,
            "only {sessions} sessions went through interlock ({auth:?})\n{}",
            d.log()
        );
        let mut regressions = proxied.regressions_from(&direct);
        if !regressions.is_empty() {
            // Once more, those tests alone: suites hold tests with time
            // limits of their own (a pool full within 1 s) that a loaded
            // machine misses now and then, directly too. A test that
            // fails again is a failure; one that passes is named.
            let ids = node_args(&proxied.rootdir, &regressions);
            let again = run(suite, &dsn, Some(&cg), &work.join("again"), Some(&ids))?;
            let (flaky, failed): (Vec<_>, Vec<_>) = regressions
                .into_iter()
                .partition(|(id, _)| again.tests.get(id).is_some_and(|o| o.outcome == "passed"));
            for (id, o) in &flaky {
                eprintln!(
                    "{} ({auth:?}): {id} {} through interlock, then passed when run again",
                    suite.name, o.outcome
                );
            }
            regressions = failed;
        }
        if !regressions.is_empty() {
            failures.push_str(&format!(
                "{} tests of {} passed directly and not through interlock ({auth:?}), twice:\n{}\n",
                regressions.len(),
                suite.name,
                describe(&regressions)
            ));
        }
    }
    assert!(failures.is_empty(), "{failures}");
    Ok(())
}

#[test]
fn psycopg2_suite_passes_through_interlock_wherever_it_passes_directly() -> Result<()> {
    if !privileged() || !PgServer::available() {
        return Ok(());
    }
    let base = suites_dir();
    let suite = Suite {
        name: PSYCOPG2.into(),
        dir: base.join(PSYCOPG2).join("tests"),
        python: base.join("venv/bin/python"),
        limit: Duration::from_secs(600),
        pytest_args: vec![],
    };
    if !suite.dir.is_dir() || !suite.python.is_file() {
        skip_or_fail(
            "psycopg2's test suite",
            &format!(
                "{} or {} is missing",
                suite.dir.display(),
                suite.python.display()
            ),
        );
        return Ok(());
    }
    compare(&suite, "127.0.0.71")
}

/// A suite given by path (`INTERLOCK_DRIVER_SUITE`, run by
/// `INTERLOCK_DRIVER_PYTHON`, default `python3`, with the extra pytest
/// arguments in `INTERLOCK_DRIVER_PYTEST_ARGS`, split as a shell would
/// (spaces, quotes), and a
/// limit of `INTERLOCK_DRIVER_SUITE_LIMIT` seconds per run, default 2400):
/// psycopg 3's, for one.
/// CI has no such suite (its machines reach no source repositories), so
/// without the variable this test says so and ends.
#[test]
fn a_driver_suite_given_by_path_passes_through_interlock_wherever_it_passes_directly() -> Result<()>
{
    let Some(dir) = std::env::var_os("INTERLOCK_DRIVER_SUITE").map(PathBuf::from) else {
        eprintln!(
            "not run: INTERLOCK_DRIVER_SUITE names no suite (e.g. a psycopg checkout's tests/)"
        );
        return Ok(());
    };
    if !privileged() || !PgServer::available() {
        return Ok(());
    }
    let python = std::env::var_os("INTERLOCK_DRIVER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"));
    let limit = std::env::var("INTERLOCK_DRIVER_SUITE_LIMIT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2400);
    let pytest_args = std::env::var("INTERLOCK_DRIVER_PYTEST_ARGS")
        .map(|a| shell_words(&a))
        .unwrap_or_default();
    let suite = Suite {
        name: dir.display().to_string(),
        dir,
        python,
        limit: Duration::from_secs(limit),
        pytest_args,
    };
    compare(&suite, "127.0.0.72")
}

/// Splits `s` into words at unquoted whitespace; single and double quotes
/// group (no escapes or expansions).
fn shell_words(s: &str) -> Vec<String> {
    let (mut words, mut word, mut quote, mut open) = (vec![], String::new(), None, false);
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                open = true;
            }
            (None, c) if c.is_whitespace() => {
                if open {
                    words.push(std::mem::take(&mut word));
                    open = false;
                }
            }
            (None, c) => {
                word.push(c);
                open = true;
            }
        }
    }
    if open {
        words.push(word);
    }
    words
}

#[test]
fn pytest_arguments_split_as_a_shell_would() {
    assert_eq!(
        shell_words(" -m 'not slow'  -k \"a b\" x ''"),
        ["-m", "not slow", "-k", "a b", "x", ""]
    );
}
