//! Permissions of the state directory. It holds statements, identities,
//! recordings and keys, so only root reads it: the directory itself is
//! 0711 (others may only traverse it, to reach the control socket, whose
//! callers are authorised per request), everything below is 0700
//! (directories) or 0600 (files). Files are created with these modes; at
//! start, anything an earlier version or an operator left more open is
//! tightened, with a warning naming it.

use std::{
    fs::{DirBuilder, OpenOptions},
    io,
    os::unix::fs::{
        DirBuilderExt as _, FileTypeExt as _, OpenOptionsExt as _, PermissionsExt as _,
    },
    path::{Path, PathBuf},
};

/// Mode of the state directory: traverse-only for group and others.
pub(crate) const STATE_DIR_MODE: u32 = 0o711;
/// Mode of every directory below it.
pub(crate) const DIR_MODE: u32 = 0o700;
/// Mode of every file in it.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Open options for a new file of the state directory (mode 0600).
pub(crate) fn private_file() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Writes `bytes` to `path` (created 0600, or truncated), like `fs::write`.
///
/// # Errors
/// The file cannot be opened or written.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?
        .write_all(bytes)
}

/// Creates `dir` (and missing parents) with mode 0700, or tightens it to
/// 0700 if it exists with group or other bits.
///
/// # Errors
/// It cannot be created or its mode set.
pub(crate) fn private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    tighten(dir, DIR_MODE).map(|_| ())
}

/// One path whose mode was tightened at start.
#[derive(Debug)]
pub(crate) struct Tightened {
    pub(crate) path: PathBuf,
    pub(crate) was: u32,
    pub(crate) now: u32,
}

/// Creates the state directory (0711) if needed, sets it to exactly 0711
/// — tightened if more open, and made traversable if it is not, since
/// approvers who are not root reach the control socket through it (a
/// service manager may have created it 0700) — and tightens everything
/// below it. Symbolic links are neither followed nor changed; sockets keep
/// their mode (the control socket is recreated at 0666).
///
/// # Errors
/// The directory cannot be created, read or changed.
pub(crate) fn prepare(state_dir: &Path) -> io::Result<Vec<Tightened>> {
    DirBuilder::new()
        .recursive(true)
        .mode(STATE_DIR_MODE)
        .create(state_dir)?;
    let mut out = Vec::new();
    out.extend(tighten(state_dir, STATE_DIR_MODE)?);
    let mode = std::fs::symlink_metadata(state_dir)?.permissions().mode() & 0o7777;
    if mode != STATE_DIR_MODE {
        std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(STATE_DIR_MODE))?;
        out.push(Tightened {
            path: state_dir.to_owned(),
            was: mode,
            now: STATE_DIR_MODE,
        });
    }
    walk(state_dir, &mut out)?;
    Ok(out)
}

/// The directories above `path` that others cannot traverse (so a user
/// who is not root cannot reach a socket in it).
pub(crate) fn untraversable_ancestors(path: &Path) -> Vec<(PathBuf, u32)> {
    path.ancestors()
        .skip(1)
        .filter_map(|a| {
            let m = std::fs::metadata(a).ok()?.permissions().mode() & 0o7777;
            (m & 0o001 == 0).then(|| (a.to_owned(), m))
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<Tightened>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() {
            out.extend(tighten(&path, DIR_MODE)?);
            walk(&path, out)?;
        } else if kind.is_file() {
            out.extend(tighten(&path, FILE_MODE)?);
        } else if kind.is_socket() || kind.is_symlink() {
            continue;
        }
    }
    Ok(())
}

/// Clears the bits of `path`'s mode that `allowed` does not have.
fn tighten(path: &Path, allowed: u32) -> io::Result<Option<Tightened>> {
    let mode = std::fs::symlink_metadata(path)?.permissions().mode() & 0o7777;
    let now = mode & allowed;
    if now == mode {
        return Ok(None);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(now))?;
    Ok(Some(Tightened {
        path: path.to_owned(),
        was: mode,
        now,
    }))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn creates_private_and_tightens_what_is_open() {
        let root = crate::test_dir::TestDir::new("il-state");
        let state = root.join("state");
        assert!(prepare(&state).unwrap().is_empty());
        assert_eq!(mode(&state), STATE_DIR_MODE);
        private_dir(&state.join("audit")).unwrap();
        assert_eq!(mode(&state.join("audit")), DIR_MODE);
        let mut f = private_file()
            .create(true)
            .append(true)
            .open(state.join("audit/segment"))
            .unwrap();
        f.write_all(b"x\n").unwrap();
        assert_eq!(mode(&state.join("audit/segment")), FILE_MODE);
        // What an older version left: world-readable files and directories.
        std::fs::write(state.join("events.jsonl"), "{}\n").unwrap();
        std::fs::set_permissions(
            state.join("events.jsonl"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        std::fs::set_permissions(state.join("audit"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", state.join("link")).unwrap();
        let t = prepare(&state).unwrap();
        let mut fixed: Vec<(String, u32, u32)> = t
            .iter()
            .map(|t| {
                let name = t.path.strip_prefix(&root).unwrap().display().to_string();
                (name, t.was, t.now)
            })
            .collect();
        fixed.sort();
        assert_eq!(
            fixed,
            [
                ("state".to_string(), 0o755, 0o711),
                ("state/audit".to_string(), 0o755, 0o700),
                ("state/events.jsonl".to_string(), 0o644, 0o600),
            ]
        );
        assert_eq!(
            mode(Path::new("/etc/passwd")) & 0o044,
            0o044,
            "links not followed"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
