//! psycopg2's own test suite, for the `pg_driver_suites` integration test
//! (a driver's suite run directly and through interlock): the PyPI sdist
//! of a pinned release (it ships `tests/`; psycopg 3's sdist does not)
//! unpacked under `<target>/driver-suites/`, and a venv there with pytest
//! and psycopg2 built from that same sdist against Debian's libpq
//! (`libpq-dev`). Nothing outside the target directory changes.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result};

use super::Step;
use crate::util::{self, Workspace};

/// The release whose suite CI runs (the test names the same directory).
const PSYCOPG2: &str = "psycopg2-2.9.13";
const PSYCOPG2_REQ: &str = "psycopg2==2.9.13";
const PYTEST_REQ: &str = "pytest==9.2.0";

pub(super) struct Psycopg2Suite {
    dir: PathBuf,
}

impl Psycopg2Suite {
    pub(super) fn new(ws: &Workspace) -> Self {
        Self {
            dir: suites_dir(ws),
        }
    }

    fn python(&self) -> PathBuf {
        self.dir.join("venv/bin/python")
    }

    fn sdist(&self) -> PathBuf {
        self.dir.join("sdist").join(format!("{PSYCOPG2}.tar.gz"))
    }

    fn commands(&self) -> Vec<Command> {
        let mut venv = Command::new("python3");
        venv.args(["-m", "venv"]).arg(self.dir.join("venv"));
        let pip = |args: &[&str]| {
            let mut c = Command::new(self.python());
            c.args(["-m", "pip"]).args(args);
            c
        };
        let pytest = pip(&["install", "--quiet", PYTEST_REQ]);
        // The sdist itself, not a wheel: the wheels carry no tests.
        let mut download = pip(&["download", "--quiet", "--no-deps", "--no-binary", ":all:"]);
        download
            .arg("--dest")
            .arg(self.dir.join("sdist"))
            .arg(PSYCOPG2_REQ);
        let mut unpack = Command::new("tar");
        unpack
            .arg("-xzf")
            .arg(self.sdist())
            .arg("-C")
            .arg(&self.dir);
        let mut install = pip(&["install", "--quiet"]);
        install.arg(self.sdist());
        vec![venv, pytest, download, unpack, install]
    }
}

/// `<target>/driver-suites` (the test reads `INTERLOCK_DRIVER_SUITES`, which
/// `cargo xtask test` sets to this).
pub(crate) fn suites_dir(ws: &Workspace) -> PathBuf {
    ws.target_dir().join("driver-suites")
}

impl Step for Psycopg2Suite {
    fn name(&self) -> &'static str {
        "psycopg2-suite"
    }

    fn is_done(&self) -> Result<bool> {
        if !self
            .dir
            .join(PSYCOPG2)
            .join("tests/testconfig.py")
            .is_file()
        {
            return Ok(false);
        }
        let check = "import psycopg2, pytest; assert psycopg2.__version__.startswith('2.9.13 ')";
        let out = util::probe(Command::new(self.python()).args(["-c", check]))?;
        Ok(out.is_some_and(|o| o.status.success()))
    }

    fn describe_fix(&self) -> String {
        self.commands()
            .iter()
            .map(util::render)
            .collect::<Vec<_>>()
            .join(" && ")
    }

    fn apply(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("create {}", self.dir.display()))?;
        for mut cmd in self.commands() {
            util::run(&mut cmd)?;
        }
        Ok(())
    }
}
