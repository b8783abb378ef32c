//! `cargo xtask install`: puts interlock on a host as a systemd service —
//! the binary in /usr/local/bin, the default policy in /etc/interlock (an
//! existing policy is never overwritten), the unit in /etc/systemd/system,
//! the state directory /var/lib/interlock (0711) — then checks what it
//! installed (`interlock policy check`, `systemd-analyze verify`) and, on a
//! systemd host, enables and starts the service.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    build_cmd, setup,
    util::{self, Workspace},
};

/// The unit file, from `dist/`.
const UNIT: &str = "interlock.service";

/// Options of `cargo xtask install`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Install under this directory instead of `/` (a staging root: nothing
    /// is enabled or started).
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Install this `interlock` binary instead of building a release one.
    #[arg(long)]
    binary: Option<PathBuf>,
}

/// Where each installed file goes, relative to the root.
struct Layout {
    root: PathBuf,
}

impl Layout {
    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }
    fn bin(&self) -> PathBuf {
        self.path("/usr/local/bin/interlock")
    }
    fn policy(&self) -> PathBuf {
        self.path("/etc/interlock/policy.yaml")
    }
    fn unit(&self) -> PathBuf {
        self.path("/etc/systemd/system").join(UNIT)
    }
}

pub(crate) fn cmd(args: &Args, ws: &Workspace) -> Result<()> {
    let real = args.root == Path::new("/");
    if real && !util::is_root() {
        bail!("installing interlock on this host needs root (or pass --root DIR to stage it)");
    }
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => {
            setup::ensure_setup(ws)?;
            build_cmd::build(ws, true)?;
            ws.interlock_bin(true)
        }
    };
    if !binary.is_file() {
        bail!("{} is not a file", binary.display());
    }
    let at = Layout {
        root: args.root.clone(),
    };

    copy(&binary, &at.bin(), 0o755)?;
    if at.policy().exists() {
        say(&format!(
            "kept the existing policy {}",
            at.policy().display()
        ));
    } else {
        copy(
            &ws.root().join("policies/default.yaml"),
            &at.policy(),
            0o644,
        )?;
    }
    let examples = at.path("/usr/local/share/interlock/policies");
    for entry in fs::read_dir(ws.root().join("policies"))? {
        let p = entry?.path();
        if let Some(name) = p.file_name() {
            copy(&p, &examples.join(name), 0o644)?;
        }
    }
    copy(
        &ws.root().join("README.md"),
        &at.path("/usr/local/share/doc/interlock/README.md"),
        0o644,
    )?;
    copy(&ws.root().join("dist").join(UNIT), &at.unit(), 0o644)?;
    let state = at.path("/var/lib/interlock");
    fs::create_dir_all(&state).with_context(|| format!("mkdir {}", state.display()))?;
    // Traversable (not listable) by others: approvers who are not root reach
    // default/control.sock through it.
    fs::set_permissions(&state, fs::Permissions::from_mode(0o711))?;
    say(&format!("state directory {} (0711)", state.display()));

    check(&at)?;
    if !real {
        say(&format!(
            "staged under {}; nothing enabled",
            at.root.display()
        ));
        return Ok(());
    }
    if fs::read_to_string("/proc/1/comm").is_ok_and(|c| c.trim() == "systemd") {
        util::run(Command::new("systemctl").arg("daemon-reload"))?;
        util::run(Command::new("systemctl").args(["enable", "--now", UNIT]))?;
        say("interlock is running: `systemctl status interlock`, `interlock status`");
    } else {
        say(
            "PID 1 is not systemd here, so the service was not started; on a systemd host run \
             `systemctl daemon-reload && systemctl enable --now interlock`",
        );
    }
    Ok(())
}

/// Checks the installed policy with the installed binary, and the unit with
/// `systemd-analyze verify` (which reports problems as messages, so any
/// message fails the check).
fn check(at: &Layout) -> Result<()> {
    let mut policy_check = Command::new(at.bin());
    policy_check.arg("policy").arg("check").arg(at.policy());
    util::run(&mut policy_check)?;

    let unit = fs::read_to_string(at.unit())?;
    // A staged unit names paths that exist only under the root: verify a
    // copy pointing there.
    let root = at.root.to_string_lossy();
    let rooted = if at.root == Path::new("/") {
        unit
    } else {
        unit.replace(
            "/usr/local/bin/interlock",
            &format!("{}/usr/local/bin/interlock", root.trim_end_matches('/')),
        )
    };
    let scratch = std::env::temp_dir().join(format!("interlock-unit-{}", std::process::id()));
    fs::create_dir_all(&scratch)?;
    let copy = scratch.join(UNIT);
    fs::write(&copy, rooted)?;
    let mut verify = Command::new("systemd-analyze");
    verify.arg("verify").arg(&copy);
    let out = util::probe(&mut verify)?;
    let _ = fs::remove_dir_all(&scratch);
    match out {
        None => say("systemd-analyze is not installed: the unit was not verified"),
        Some(out) => {
            let msgs = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if !out.status.success() || !msgs.is_empty() {
                bail!("systemd-analyze verify {UNIT}: {msgs}");
            }
            say(&format!("verified {UNIT} with systemd-analyze"));
        }
    }
    Ok(())
}

/// Copies `from` to `to` (through a temporary file and a rename, so a
/// running binary is replaced, not overwritten) with `mode`.
fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    let dir = to
        .parent()
        .with_context(|| format!("{} has no parent", to.display()))?;
    fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        to.file_name().unwrap_or_default().to_string_lossy()
    ));
    fs::copy(from, &tmp)
        .with_context(|| format!("copy {} to {}", from.display(), tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, to).with_context(|| format!("rename to {}", to.display()))?;
    say(&format!("installed {} ({mode:o})", to.display()));
    Ok(())
}

fn say(what: &str) {
    println!("install: {what}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The debug `interlock` binary `cargo xtask test` builds before the unit tests.
    fn built_binary(ws: &Workspace) -> Option<PathBuf> {
        let bin = ws.interlock_bin(false);
        if bin.is_file() {
            return Some(bin);
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is not built; CI must build it first",
            bin.display()
        );
        eprintln!("SKIPPED: {} is not built", bin.display());
        None
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0)
    }

    #[test]
    fn stages_an_install_keeps_an_edited_policy_and_verifies_the_unit() -> Result<()> {
        let ws = Workspace::locate()?;
        let Some(binary) = built_binary(&ws) else {
            return Ok(());
        };
        let root = std::env::temp_dir().join(format!("interlock-stage-{}", std::process::id()));
        let args = Args {
            root: root.clone(),
            binary: Some(binary),
        };
        cmd(&args, &ws)?;
        let at = Layout { root: root.clone() };
        assert_eq!(mode(&at.bin()), 0o755);
        assert_eq!(mode(&at.policy()), 0o644);
        assert_eq!(mode(&at.path("/var/lib/interlock")), 0o711);
        assert_eq!(
            fs::read_to_string(at.unit())?,
            fs::read_to_string(ws.root().join("dist").join(UNIT))?
        );

        // An operator's policy survives a reinstall.
        let mine = "version: 1\n# mine\ntargets:\n  - name: db\n    protocol: tcp\n    match:\n      - port: 5432\n";
        fs::write(at.policy(), mine)?;
        cmd(&args, &ws)?;
        assert_eq!(fs::read_to_string(at.policy())?, mine);

        // A unit with a mistake fails the check (if systemd-analyze is here).
        if util::probe(Command::new("systemd-analyze").arg("--version"))?.is_some() {
            let unit = fs::read_to_string(at.unit())?;
            fs::write(
                at.unit(),
                unit.replace("Restart=always", "Restart=sometimes"),
            )?;
            let err = check(&at).expect_err("a bad unit must not verify");
            assert!(err.to_string().contains("sometimes"), "{err}");
        }
        // A broken policy fails it too.
        fs::write(at.policy(), "version: 1\ntargets: [\n")?;
        assert!(check(&at).is_err());
        fs::remove_dir_all(&root)?;
        Ok(())
    }
}
