//! The test OpenID provider: npm `oidc-provider`, pinned by `tests/oidc-provider/package.json`
//! and its lock file, installed with `npm ci` (exactly the locked versions). The job-token
//! tests start it on loopback (tests/src/oidc.rs). Node.js and npm come with the machine.

use std::{path::PathBuf, process::Command};

use anyhow::Result;

use super::Step;
use crate::util::{self, Workspace};

pub(super) struct OidcProvider {
    dir: PathBuf,
}

impl OidcProvider {
    pub(super) fn new(ws: &Workspace) -> OidcProvider {
        OidcProvider {
            dir: ws.root().join("tests/oidc-provider"),
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("npm");
        cmd.args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&self.dir);
        cmd
    }
}

impl Step for OidcProvider {
    fn name(&self) -> &'static str {
        "npm-oidc-provider"
    }

    fn is_done(&self) -> Result<bool> {
        Ok(self
            .dir
            .join("node_modules/oidc-provider/package.json")
            .is_file())
    }

    fn describe_fix(&self) -> String {
        util::render(&self.command())
    }

    fn apply(&self) -> Result<()> {
        util::run(&mut self.command())
    }
}
