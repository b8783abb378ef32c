//! The pin tree is root's alone (issue 15, item 7). Where bpffs is
//! world-writable (1777, as on this machine), an unprivileged user could
//! create an instance's pin directory before the daemon does and later swap
//! its pins. The daemon creates the tree 0700, refuses one it does not own
//! or others can write (naming it), and `interlock detach` removes nothing
//! from such a tree. Each test uses its own pin root under /sys/fs/bpf, so
//! other daemons on the machine are untouched.

use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Result, bail};
use interlock_tests::*;

/// A pin root of this test's own, removed (as root) at the end.
struct PinRoot(PathBuf);

impl PinRoot {
    fn new() -> PinRoot {
        PinRoot(Path::new("/sys/fs/bpf").join(unique("interlock-pintest")))
    }

    fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The attack needs a bpffs others can write (1777 here); where it is
/// not, users cannot create anything there and the test has nothing to show.
fn world_writable_bpffs() -> bool {
    let writable =
        std::fs::metadata("/sys/fs/bpf").is_ok_and(|m| m.permissions().mode() & 0o002 != 0);
    if !writable {
        eprintln!("SKIPPED: /sys/fs/bpf is not writable by other users here");
    }
    writable
}

/// Runs `program args` as user nobody; whether it succeeded.
fn as_nobody(program: &str, args: &[&str]) -> Result<bool> {
    Ok(Command::new("/usr/bin/setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            program,
        ])
        .args(args)
        .status()?
        .success())
}

fn spec(cg: &TestCgroup, port: u16, root: &PinRoot) -> DaemonSpec {
    DaemonSpec::tcp(cg, &[port], &["--pin-root", &root.arg()])
}

#[test]
fn a_pin_tree_a_user_created_first_is_refused_by_name() -> Result<()> {
    if !privileged() || !world_writable_bpffs() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let cg = TestCgroup::new("pinowner")?;
    let root = PinRoot::new();
    // The user prepares the tree the daemon will use.
    let instance_links = format!("{}/any/links", root.arg());
    assert!(as_nobody("/bin/mkdir", &["-p", &instance_links])?);
    let err = match Daemon::start(spec(&cg, server.addr.port(), &root)) {
        Ok(_) => bail!("the daemon adopted a pin tree owned by nobody"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains(&format!("refusing the pin directory {}", root.arg()))
            && err.contains("owned by uid 65534"),
        "{err}"
    );
    // Nothing was attached: the connect goes direct, unintercepted.
    let reply = client_in(&cg, &["echo", &server.addr.to_string(), "direct"], &[])?;
    assert!(reply.ends_with("direct"), "{reply}");
    assert_eq!(server.connections(), 1);
    Ok(())
}

#[test]
fn the_daemon_makes_the_tree_private_and_users_cannot_enter_it() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let cg = TestCgroup::new("pinmode")?;
    let root = PinRoot::new();
    let d = Daemon::start(spec(&cg, server.addr.port(), &root))?;
    for dir in [
        root.0.clone(),
        d.pin_dir(),
        d.pin_dir().join("maps"),
        d.pin_dir().join("links"),
    ] {
        let m = std::fs::symlink_metadata(&dir)?;
        assert!(m.is_dir());
        assert_eq!(m.uid(), 0, "{}", dir.display());
        assert_eq!(m.permissions().mode() & 0o7777, 0o700, "{}", dir.display());
    }
    let planted = d.pin_dir().join("links").join("planted");
    assert!(!as_nobody("/bin/mkdir", &[&planted.display().to_string()])?);
    assert!(!planted.exists());
    // And it intercepts as ever.
    let reply = client_in(&cg, &["echo", &server.addr.to_string(), "in"], &[])?;
    assert!(reply.ends_with("in"));
    d.wait_events("a session", |e| !of_type(e, "session_started").is_empty())?;
    Ok(())
}

#[test]
fn a_tree_others_can_write_is_refused_and_detach_removes_nothing_from_it() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let cg = TestCgroup::new("pinwritable")?;
    let root = PinRoot::new();
    let mut d = Daemon::start(spec(&cg, server.addr.port(), &root))?;
    d.wait_events("start", |e| !of_type(e, "daemon_started").is_empty())?;
    d.signal_and_wait(libc::SIGKILL)?;
    // An operator's mistake (or an older setup): the instance's links
    // directory became writable by everyone.
    let links = d.pin_dir().join("links");
    std::fs::set_permissions(&links, std::fs::Permissions::from_mode(0o777))?;
    let err = match d.spawn() {
        Ok(()) => bail!("the daemon adopted pins from a world-writable directory"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains(&format!("refusing the pin directory {}", links.display()))
            && err.contains("writable by group or others (mode 777)"),
        "{err}"
    );
    // detach refuses too, and leaves every pin where it was.
    let pins_before = std::fs::read_dir(&links)?.count();
    let out = d.cli(&[
        "detach",
        "--instance",
        &d.instance,
        "--pin-root",
        &root.arg(),
    ])?;
    assert!(!out.ok, "{out:?}");
    assert!(out.stderr.contains("refusing the pin directory"), "{out:?}");
    assert_eq!(std::fs::read_dir(&links)?.count(), pins_before);
    // Put right by root, the tree is adopted again.
    std::fs::set_permissions(&links, std::fs::Permissions::from_mode(0o700))?;
    d.spawn()?;
    let ev = d.wait_events("the restart", |e| of_type(e, "daemon_started").len() == 2)?;
    assert_eq!(of_type(&ev, "daemon_started")[1]["adopted_pins"], true);
    Ok(())
}
