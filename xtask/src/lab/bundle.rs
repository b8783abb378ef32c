//! The artifacts a lab guest gets (read-only over 9p, or rsynced by
//! Vagrant): the host's `interlock` and `xtask` binaries (debug symbols
//! stripped: they are read over 9p under emulation) and the files `xtask
//! install` installs — a small workspace the guest's xtask is pointed at
//! with `XTASK_WORKSPACE`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result};

use super::say;
use crate::util::{self, Workspace};

/// Where the guest mounts the bundle.
pub(crate) const GUEST_DIR: &str = "/lab";

/// `<target>/lab/<name>`, filled afresh from `interlock` (`lab run` and
/// `lab box` use their own, so a box made while VMs run leaves their share alone).
pub(crate) fn make(ws: &Workspace, name: &str, interlock: &Path) -> Result<PathBuf> {
    let dir = ws.target_dir().join("lab").join(name);
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("rm -r {}", dir.display()))?;
    }
    fs::create_dir_all(&dir)?;
    strip_into(interlock, &dir.join("interlock"))?;
    strip_into(&std::env::current_exe()?, &dir.join("xtask"))?;
    for sub in ["policies", "dist"] {
        let to = dir.join(sub);
        fs::create_dir_all(&to)?;
        for entry in fs::read_dir(ws.root().join(sub))? {
            let p = entry?.path();
            if let Some(name) = p.file_name().filter(|_| p.is_file()) {
                fs::copy(&p, to.join(name))?;
            }
        }
    }
    fs::copy(ws.root().join("README.md"), dir.join("README.md"))?;
    say(&format!("artifacts for the guests in {}", dir.display()));
    Ok(dir)
}

fn strip_into(from: &Path, to: &Path) -> Result<()> {
    util::run(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(to)
            .arg(from),
    )
}
