//! The pin tree `<pin root>/<instance>/{maps,links}` and who may have
//! touched it. A restarted daemon adopts whatever is pinned there, so the
//! tree must be one nobody else can write: every directory of it is created
//! 0700 and owned by the daemon's user (root), every ancestor must be
//! root's and not writable by others (or sticky, like a 1777 bpffs), and a
//! tree that fails this is refused with the path and reason, never adopted
//! or "repaired". On hosts where bpffs is mounted world-writable a user
//! could otherwise pre-create the instance's directory and later swap pins
//! for directories, so that the next start adopts nothing.

use std::{
    fs::{DirBuilder, Metadata},
    io,
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _},
    path::{Component, Path, PathBuf},
};

use tracing::warn;

use super::KernelError;

/// Where instances pin their maps and links unless told otherwise.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/interlock";

/// Mode of every directory of the pin tree.
const PIN_DIR_MODE: u32 = 0o700;

/// The pin directory of `instance` under `root`.
pub fn pin_dir(root: &Path, instance: &str) -> PathBuf {
    root.join(instance)
}

/// An instance's checked pin directories.
pub(super) struct PinTree {
    pub maps: PathBuf,
    pub links: PathBuf,
}

/// An instance name names one directory: no separators, no `.`/`..`.
///
/// # Errors
/// [`KernelError::InstanceName`] otherwise.
pub fn check_instance(instance: &str) -> Result<(), KernelError> {
    let mut parts = Path::new(instance).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(_)), None) if !instance.contains('/') => Ok(()),
        _ => Err(KernelError::InstanceName(instance.to_string())),
    }
}

/// Creates (0700) or checks the pin tree of `instance` under `root`.
///
/// # Errors
/// [`KernelError::UnsafePins`] naming the first directory someone other
/// than this user owns or could write; I/O errors creating it.
pub(super) fn prepare(root: &Path, instance: &str) -> Result<PinTree, KernelError> {
    check_instance(instance)?;
    check_ancestors(root)?;
    let dir = pin_dir(root, instance);
    let tree = PinTree {
        maps: dir.join("maps"),
        links: dir.join("links"),
    };
    for d in [
        root,
        dir.as_path(),
        tree.maps.as_path(),
        tree.links.as_path(),
    ] {
        private_dir(d)?;
    }
    Ok(tree)
}

/// What a refused instance lock tells the user to do.
const INSTANCE_HINT: &str =
    "two daemons must not share pins: stop that one first, or give this one another --instance";

/// Makes (or checks) the instance's pin tree and takes the lock on its
/// directory; held for as long as the returned value lives.
///
/// # Errors
/// [`KernelError::InUse`] naming the holder's pid when another process
/// holds it; as [`prepare`] for an unsafe tree.
pub(super) fn lock(root: &Path, instance: &str) -> Result<crate::lock::Held, KernelError> {
    prepare(root, instance)?;
    let dir = pin_dir(root, instance);
    Ok(crate::lock::exclusive(
        &dir,
        &format!("instance `{instance}` ({})", dir.display()),
        INSTANCE_HINT,
    )?)
}

/// Checks an existing pin tree without creating anything: `Ok(None)` if
/// `instance` has no pin directory, `Ok(Some(dir))` if it has a safe one.
///
/// # Errors
/// As [`prepare`]: an unsafe tree is reported, not used.
pub(super) fn existing(root: &Path, instance: &str) -> Result<Option<PathBuf>, KernelError> {
    check_instance(instance)?;
    let dir = pin_dir(root, instance);
    match std::fs::symlink_metadata(&dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(KernelError::Io {
                what: "stat",
                path: dir,
                source,
            });
        }
        Ok(_) => {}
    }
    check_ancestors(root)?;
    for d in [
        root.to_path_buf(),
        dir.clone(),
        dir.join("maps"),
        dir.join("links"),
    ] {
        match std::fs::symlink_metadata(&d) {
            Ok(m) => check_private(&d, &m)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(KernelError::Io {
                    what: "stat",
                    path: d,
                    source,
                });
            }
        }
    }
    Ok(Some(dir))
}

/// Every ancestor of `root` must be a real directory of root's (or this
/// user's) that others cannot write, unless it is sticky (then they cannot
/// rename or remove what is ours in it).
fn check_ancestors(root: &Path) -> Result<(), KernelError> {
    if !root.is_absolute() {
        return Err(unsafe_pins(root, "is not an absolute path".into()));
    }
    let mut ancestors: Vec<&Path> = root.ancestors().skip(1).collect();
    ancestors.reverse();
    for a in ancestors {
        let m = std::fs::symlink_metadata(a).map_err(|source| KernelError::Io {
            what: "stat",
            path: a.to_path_buf(),
            source,
        })?;
        if m.file_type().is_symlink() {
            return Err(unsafe_pins(a, "is a symbolic link".into()));
        }
        if !m.is_dir() {
            return Err(unsafe_pins(a, "is not a directory".into()));
        }
        if m.uid() != 0 && m.uid() != euid() {
            return Err(unsafe_pins(a, format!("is owned by uid {}", m.uid())));
        }
        let mode = m.permissions().mode();
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(unsafe_pins(
                a,
                format!(
                    "is writable by others (mode {:o}) without the sticky bit",
                    mode & 0o7777
                ),
            ));
        }
    }
    Ok(())
}

/// Creates `dir` 0700 or checks the existing one, then tightens it to 0700.
fn private_dir(dir: &Path) -> Result<(), KernelError> {
    match DirBuilder::new().mode(PIN_DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(KernelError::Io {
                what: "create",
                path: dir.to_path_buf(),
                source,
            });
        }
    }
    let m = std::fs::symlink_metadata(dir).map_err(|source| KernelError::Io {
        what: "stat",
        path: dir.to_path_buf(),
        source,
    })?;
    check_private(dir, &m)?;
    let mode = m.permissions().mode() & 0o7777;
    if mode != PIN_DIR_MODE {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(PIN_DIR_MODE)).map_err(
            |source| KernelError::Io {
                what: "chmod",
                path: dir.to_path_buf(),
                source,
            },
        )?;
        warn!(path = %dir.display(), was = format!("{mode:o}"), "pin directory tightened to 0700");
    }
    Ok(())
}

/// A directory of the tree: ours, a real directory, not writable by others.
fn check_private(dir: &Path, m: &Metadata) -> Result<(), KernelError> {
    if m.file_type().is_symlink() {
        return Err(unsafe_pins(dir, "is a symbolic link".into()));
    }
    if !m.is_dir() {
        return Err(unsafe_pins(dir, "is not a directory".into()));
    }
    if m.uid() != euid() {
        return Err(unsafe_pins(
            dir,
            format!(
                "is owned by uid {}, not by uid {} (this daemon)",
                m.uid(),
                euid()
            ),
        ));
    }
    let mode = m.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(unsafe_pins(
            dir,
            format!("is writable by group or others (mode {:o})", mode & 0o7777),
        ));
    }
    Ok(())
}

fn unsafe_pins(path: &Path, why: String) -> KernelError {
    KernelError::UnsafePins {
        path: path.to_path_buf(),
        why,
    }
}

/// The effective uid of this process (the owner of its /proc entry).
fn euid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

/// Removes an instance's pins, which detaches its programs and frees its
/// maps once no daemon holds them. Returns what was removed; empty if the
/// instance had no pins. Nothing is removed from a tree that fails the
/// checks (someone else's files could be in it).
///
/// # Errors
/// The tree is unsafe, or a pin exists but cannot be removed.
pub fn detach(root: &Path, instance: &str) -> Result<Vec<PathBuf>, KernelError> {
    let Some(dir) = existing(root, instance)? else {
        return Ok(Vec::new());
    };
    // Held while removing, so no daemon starts on pins being removed, and
    // a running daemon's pins are never touched.
    let _lock = crate::lock::exclusive(
        &dir,
        &format!("instance `{instance}` ({})", dir.display()),
        "a running daemon's pins are not removed: stop it first",
    )?;
    let mut removed = Vec::new();
    for sub in ["links", "maps"] {
        let d = dir.join(sub);
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            std::fs::remove_file(&p).map_err(|source| KernelError::Io {
                what: "remove pin",
                path: p.clone(),
                source,
            })?;
            removed.push(p);
        }
        let _ = std::fs::remove_dir(&d);
    }
    let _ = std::fs::remove_dir(&dir);
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_are_one_plain_component() {
        for ok in ["default", "t-1-2", "ci.runner"] {
            assert!(check_instance(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "../etc", "/abs", "a/"] {
            assert!(
                matches!(check_instance(bad), Err(KernelError::InstanceName(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_tree_others_can_write_is_refused_and_ours_is_tightened() {
        let base = crate::test_dir::TestDir::new("pins");
        let root = base.join("root");
        // A world-writable, non-sticky ancestor: refused, naming it.
        std::fs::set_permissions(&*base, std::fs::Permissions::from_mode(0o777)).unwrap();
        match prepare(&root, "i") {
            Err(KernelError::UnsafePins { path, why }) => {
                assert_eq!(path, &*base);
                assert!(why.contains("without the sticky bit"), "{why}");
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("adopted a tree under a world-writable directory"),
        }
        // Sticky, like a 1777 bpffs: fine; the tree is created 0700.
        std::fs::set_permissions(&*base, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let tree = prepare(&root, "i").unwrap();
        for d in [&root, &root.join("i"), &tree.maps, &tree.links] {
            let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        // An existing directory of ours that is too open is tightened...
        std::fs::set_permissions(&tree.maps, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare(&root, "i").unwrap();
        let mode = std::fs::metadata(&tree.maps).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        // ...but one others can write is refused (pins in it may be anyone's).
        std::fs::set_permissions(&tree.links, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            prepare(&root, "i"),
            Err(KernelError::UnsafePins { path, .. }) if path == tree.links
        ));
        assert!(matches!(
            detach(&root, "i"),
            Err(KernelError::UnsafePins { path, .. }) if path == tree.links
        ));
        // A symbolic link in place of a directory is refused, not followed.
        std::fs::set_permissions(&tree.links, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::remove_dir(&tree.links).unwrap();
        std::os::unix::fs::symlink(&*base, &tree.links).unwrap();
        assert!(matches!(
            detach(&root, "i"),
            Err(KernelError::UnsafePins { path, why }) if path == tree.links && why.contains("symbolic")
        ));
        assert!(detach(&root, "none").unwrap().is_empty());
    }
}
