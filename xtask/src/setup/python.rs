//! The Python packages the webhook integration tests check with:
//! `standardwebhooks` (an independent signature check) and `pydantic-ocsf`
//! (the OCSF 1.3.0 models the webhook bodies are validated against).

use std::process::Command;

use anyhow::Result;

use super::Step;
use crate::util;

pub(super) struct StandardWebhooks;

/// `pip install standardwebhooks pydantic-ocsf`; `--break-system-packages` where the
/// Python is externally managed (Debian's), which plain pip refuses.
fn fix_command() -> Command {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "standardwebhooks",
        "pydantic-ocsf==3.0.0",
    ]);
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

impl Step for StandardWebhooks {
    fn name(&self) -> &'static str {
        "python-standardwebhooks"
    }

    fn is_done(&self) -> Result<bool> {
        let out = util::probe(
            Command::new("python3").args(["-c", "import standardwebhooks, ocsf.v1_3_0.events"]),
        )?;
        Ok(out.is_some_and(|o| o.status.success()))
    }

    fn describe_fix(&self) -> String {
        util::render(&fix_command())
    }

    fn apply(&self) -> Result<()> {
        util::run(&mut fix_command())
    }
}
