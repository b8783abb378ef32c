//! Python packages the integration tests use as independent checkers:
//! `standardwebhooks` (webhook signatures), `pydantic-ocsf` (the OCSF 1.3.0
//! models webhook bodies are validated against) and `asciinema` (the SSH
//! proxy's terminal recordings parse and play: `python3 -m asciinema cat`).

use std::process::Command;

use anyhow::Result;

use super::Step;
use crate::util;

/// One package installed with pip and found by importing `module`.
pub(super) struct PipPackage {
    pub(super) name: &'static str,
    pub(super) package: &'static str,
    pub(super) module: &'static str,
}

/// The webhook integration test's signature check.
pub(super) const STANDARD_WEBHOOKS: PipPackage = PipPackage {
    name: "python-standardwebhooks",
    package: "standardwebhooks",
    module: "standardwebhooks",
};

/// The webhook integration tests' OCSF 1.3.0 models.
pub(super) const PYDANTIC_OCSF: PipPackage = PipPackage {
    name: "python-ocsf",
    package: "pydantic-ocsf==3.0.0",
    module: "ocsf.v1_3_0.events",
};

/// The SSH tests' asciicast player (2.4, the last Python release).
pub(super) const ASCIINEMA: PipPackage = PipPackage {
    name: "python-asciinema",
    package: "asciinema==2.4.0",
    module: "asciinema",
};

/// `pip install PACKAGE`; `--break-system-packages` where the Python is
/// externally managed (Debian's), which plain pip refuses.
fn fix_command(package: &str) -> Command {
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "pip", "install", "--quiet", package]);
    if externally_managed() {
        cmd.arg("--break-system-packages");
    }
    cmd
}

/// Whether this Python marks itself externally managed (PEP 668).
fn externally_managed() -> bool {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig,os;print(os.path.exists(os.path.join(sysconfig.get_path('stdlib'),'EXTERNALLY-MANAGED')))",
        ])
        .output();
    out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "True")
}

impl Step for PipPackage {
    fn name(&self) -> &'static str {
        self.name
    }

    fn is_done(&self) -> Result<bool> {
        let import = format!("import {}", self.module);
        let out = util::probe(Command::new("python3").args(["-c", &import]))?;
        Ok(out.is_some_and(|o| o.status.success()))
    }

    fn describe_fix(&self) -> String {
        util::render(&fix_command(self.package))
    }

    fn apply(&self) -> Result<()> {
        util::run(&mut fix_command(self.package))
    }
}
