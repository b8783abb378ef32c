//! A PostgreSQL driver's own test suite (pytest) run against a real server,
//! directly or through interlock, and the per-test comparison of the two
//! runs. The suite is found at a path: psycopg2's from its PyPI sdist
//! (unpacked by `cargo xtask setup`), or any other pytest suite a developer
//! has (psycopg 3's `tests/` from its repository). Outcomes come from
//! `tests/driver/interlock_outcomes.py`, a pytest plugin writing one JSON
//! line per test.

use std::{
    collections::BTreeMap,
    fmt,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::{TestCgroup, workspace};

/// Where `cargo xtask setup` puts the suites CI runs: `$INTERLOCK_DRIVER_SUITES`,
/// else `<workspace>/target/driver-suites`.
pub fn suites_dir() -> PathBuf {
    std::env::var_os("INTERLOCK_DRIVER_SUITES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/driver-suites"))
}

/// One pytest suite and the Python that runs it (with the driver and
/// pytest installed).
#[derive(Clone, Debug)]
pub struct Suite {
    pub name: String,
    /// The directory given to pytest (a `tests/` folder).
    pub dir: PathBuf,
    pub python: PathBuf,
    /// The whole run is killed after this long, and the test then running is named.
    pub limit: Duration,
    /// More pytest arguments (e.g. `-m "not slow"`, a file to run).
    pub pytest_args: Vec<String>,
}

/// Where and as whom the suite connects. Both drivers' variables are set
/// from it: `PSYCOPG_TEST_DSN` (psycopg 3) and `PSYCOPG2_TESTDB*` (psycopg2).
#[derive(Clone, Debug)]
pub struct Dsn {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub dbname: String,
}

impl Dsn {
    fn envs(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "PSYCOPG_TEST_DSN",
                format!(
                    "host={} port={} user={} password={} dbname={}",
                    self.host, self.port, self.user, self.password, self.dbname
                ),
            ),
            ("PSYCOPG2_TESTDB", self.dbname.clone()),
            ("PSYCOPG2_TESTDB_HOST", self.host.clone()),
            ("PSYCOPG2_TESTDB_PORT", self.port.to_string()),
            ("PSYCOPG2_TESTDB_USER", self.user.clone()),
            ("PSYCOPG2_TESTDB_PASSWORD", self.password.clone()),
        ]
    }
}

/// One test's result: passed, failed, error, skipped, xfailed, xpassed,
/// or started (the run ended while it ran).
#[derive(Clone, Debug)]
pub struct Outcome {
    pub outcome: String,
    pub detail: String,
}

/// Every test of one run, by pytest node id.
#[derive(Debug, Default)]
pub struct Outcomes {
    pub tests: BTreeMap<String, Outcome>,
    /// pytest's rootdir, which node ids are relative to.
    pub rootdir: PathBuf,
    /// The pytest output (tail), for failure messages.
    pub output_tail: String,
}

/// How many tests of a run ended which way.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub run: usize,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub xfailed: usize,
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} run: {} passed, {} failed or errored, {} skipped, {} xfailed/xpassed",
            self.run, self.passed, self.failed, self.skipped, self.xfailed
        )
    }
}

impl Outcomes {
    pub fn counts(&self) -> Counts {
        let mut c = Counts {
            run: self.tests.len(),
            ..Counts::default()
        };
        for o in self.tests.values() {
            match o.outcome.as_str() {
                "passed" => c.passed += 1,
                "skipped" => c.skipped += 1,
                "xfailed" | "xpassed" => c.xfailed += 1,
                _ => c.failed += 1,
            }
        }
        c
    }

    /// Tests that passed in `direct` and did not pass here, with how they ended here.
    pub fn regressions_from(&self, direct: &Outcomes) -> Vec<(String, Outcome)> {
        direct
            .tests
            .iter()
            .filter(|(_, o)| o.outcome == "passed")
            .filter_map(|(id, _)| {
                let here = self.tests.get(id).cloned().unwrap_or(Outcome {
                    outcome: "not run".into(),
                    detail: String::new(),
                });
                (here.outcome != "passed").then(|| (id.clone(), here))
            })
            .collect()
    }
}

/// The tests of `regressions` as pytest arguments (absolute node ids).
pub fn node_args(rootdir: &Path, regressions: &[(String, Outcome)]) -> Vec<String> {
    regressions
        .iter()
        .map(|(id, _)| rootdir.join(id).display().to_string())
        .collect()
}

/// Formats regressions for an assertion message.
pub fn describe(regressions: &[(String, Outcome)]) -> String {
    let mut s = String::new();
    for (id, o) in regressions {
        s.push_str(&format!("--- {id}: {}\n{}\n", o.outcome, o.detail.trim()));
    }
    s
}

/// Runs `suite` against `dsn`, inside `cgroup` (so interlock intercepts
/// every connection it makes) or, with `None`, directly: the whole suite,
/// or with `only` just those tests (absolute `rootdir/node id`s). Scratch
/// files go to `scratch`. Errors: the run could not start, or it passed
/// its time limit (naming the test that was running).
pub fn run(
    suite: &Suite,
    dsn: &Dsn,
    cgroup: Option<&TestCgroup>,
    scratch: &Path,
    only: Option<&[String]>,
) -> Result<Outcomes> {
    let label = if cgroup.is_some() {
        "through interlock"
    } else {
        "direct"
    };
    let work = scratch.join(label.replace(' ', "-"));
    std::fs::create_dir_all(&work)?;
    let outcomes_file = work.join("outcomes.jsonl");
    let log_file = work.join("pytest.log");
    let dir = suite.dir.display().to_string();
    let cache = format!("cache_dir={}", work.join("cache").display());
    let mut args = vec![
        "-m",
        "pytest",
        "-q",
        "-p",
        "interlock_outcomes",
        // Same order in both runs, so an order-dependent test cannot differ.
        "-p",
        "no:randomly",
        "-o",
        &cache,
    ];
    args.extend(suite.pytest_args.iter().map(String::as_str));
    match only {
        Some(ids) => args.extend(ids.iter().map(String::as_str)),
        None => args.push(&dir),
    }
    let mut cmd = match cgroup {
        Some(cg) => cg.command(&suite.python, &args),
        None => {
            let mut c = Command::new(&suite.python);
            c.args(args);
            c
        }
    };
    let log = std::fs::File::create(&log_file)?;
    // The working directory is not the suite's parent: a source checkout
    // there would shadow the installed driver with its source folder.
    cmd.current_dir(&work)
        .envs(dsn.envs())
        .env("INTERLOCK_OUTCOMES", &outcomes_file)
        .env("PYTHONPATH", workspace().join("tests/driver"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("start {}", suite.python.display()))?;
    let deadline = Instant::now() + suite.limit;
    let timed_out = loop {
        if child.try_wait()?.is_some() {
            break false;
        }
        if Instant::now() > deadline {
            // The whole group: pytest and whatever it started (pproxy, workers).
            // SAFETY: signalling the process group we created.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break true;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = std::fs::read_to_string(&log_file).unwrap_or_default();
    let output_tail: String = {
        let lines: Vec<&str> = output.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    let mut tests = BTreeMap::new();
    let mut rootdir = PathBuf::new();
    for line in std::fs::read_to_string(&outcomes_file)
        .unwrap_or_default()
        .lines()
    {
        let v: Value = serde_json::from_str(line).context("an outcomes line")?;
        if let Some(dir) = v["rootdir"].as_str() {
            rootdir = PathBuf::from(dir);
            continue;
        }
        let id = v["id"].as_str().unwrap_or_default().to_string();
        tests.insert(
            id,
            Outcome {
                outcome: v["outcome"].as_str().unwrap_or_default().to_string(),
                detail: v["detail"].as_str().unwrap_or_default().to_string(),
            },
        );
    }
    if timed_out {
        let running: Vec<&String> = tests
            .iter()
            .filter(|(_, o)| o.outcome == "started")
            .map(|(id, _)| id)
            .collect();
        bail!(
            "{} {label}: killed after {} s while running {running:?}\n{output_tail}",
            suite.name,
            suite.limit.as_secs()
        );
    }
    if tests.is_empty() {
        bail!("{} {label}: no test ran\n{output_tail}", suite.name);
    }
    Ok(Outcomes {
        tests,
        rootdir,
        output_tail,
    })
}
