//! Which file a process runs, and whether its path names it in a way a non-root user cannot
//! fake. A path is only text: anyone can `cp /bin/bash /tmp/gitlab-runner` or symlink a
//! system binary under a runner's name. So an executable counts as the program its path
//! names (for `identity.runners` and for allow rules on `exe`/`ancestor_exe`) only when
//!
//! - the file the kernel runs for the process (`/proc/<pid>/exe`, which follows the file even
//!   when it was renamed or deleted) is the file at that path now (same device and inode),
//! - that file is owned by root and not writable by group or others, and
//! - every directory on the path as written, and on the path it resolves to, is owned by root
//!   and not writable by group or others (so only root chose what the name points to), and
//!   every symlink on the written path is root's.
//!
//! What cannot be checked (the process is gone, /proc unreadable) is unknown, never trusted.

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::procfs::pid_file;

/// Group- and other-write permission bits.
const WRITABLE_BY_OTHERS: u32 = 0o022;

/// The file a process runs, as the kernel sees it (`stat` of `/proc/<pid>/exe`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExeFile {
    /// Device number of the file system holding it.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// File mode (type and permission bits).
    pub mode: u32,
}

/// Whether an executable path can be believed to name the program the process runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "trust", rename_all = "snake_case")]
pub enum ExeTrust {
    /// Root-owned file at a root-controlled path, and the very file the process runs.
    Trusted,
    /// Checked, and not trusted: why.
    Untrusted { reason: String },
    /// Could not be checked: why.
    Unknown { reason: String },
}

impl Default for ExeTrust {
    /// What records of versions that did not check read back as, and what nothing was
    /// established about.
    fn default() -> Self {
        ExeTrust::Unknown {
            reason: "not checked".into(),
        }
    }
}

impl ExeTrust {
    /// Whether the path is trusted.
    pub fn is_trusted(&self) -> bool {
        matches!(self, ExeTrust::Trusted)
    }

    /// Why it is not trusted; `None` when it is.
    pub fn why_not(&self) -> Option<&str> {
        match self {
            ExeTrust::Trusted => None,
            ExeTrust::Untrusted { reason } | ExeTrust::Unknown { reason } => Some(reason),
        }
    }
}

/// The file live process `tgid` runs and whether `exe` (the path the table holds for it) is
/// trusted to name it.
pub(crate) fn inspect(
    proc_root: &Path,
    tgid: u32,
    exe: Option<&str>,
) -> (Option<ExeFile>, ExeTrust) {
    let link = pid_file(proc_root, tgid, "exe");
    let meta = match fs::metadata(&link) {
        Ok(m) => m,
        Err(e) => {
            let reason = format!("cannot stat {}: {e}", link.display());
            return (None, ExeTrust::Unknown { reason });
        }
    };
    let file = ExeFile {
        dev: meta.dev(),
        ino: meta.ino(),
        uid: meta.uid(),
        gid: meta.gid(),
        mode: meta.mode(),
    };
    let trust = match exe {
        None => ExeTrust::Unknown {
            reason: format!("the executable path of pid {tgid} is unknown"),
        },
        Some(path) => match check_path(Path::new(path), &file) {
            Ok(()) => ExeTrust::Trusted,
            Err(reason) => ExeTrust::Untrusted {
                reason: format!("`{path}` (pid {tgid}): {reason}"),
            },
        },
    };
    (Some(file), trust)
}

/// `Ok` when `path` names `file` the way only root could have arranged.
fn check_path(path: &Path, file: &ExeFile) -> Result<(), String> {
    if !path.is_absolute() {
        return Err("a relative path: what it named at exec cannot be checked".into());
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err("the path has `.` or `..` components".into());
    }
    if file.uid != 0 {
        return Err(format!("the file is owned by uid {}, not root", file.uid));
    }
    if file.mode & WRITABLE_BY_OTHERS != 0 {
        return Err(format!(
            "the file is writable by group or others (mode {:o})",
            file.mode & 0o7777
        ));
    }
    let now = fs::metadata(path).map_err(|e| format!("cannot stat it: {e}"))?;
    if (now.dev(), now.ino()) != (file.dev, file.ino) {
        return Err("the file at this path is not the one the process runs (replaced or renamed since exec)".into());
    }
    // The path as written: each directory root's and closed; a symlink root's, in such a
    // directory (so root chose where it points).
    let mut prefix = PathBuf::new();
    let mut parts = path.components().peekable();
    while let Some(part) = parts.next() {
        prefix.push(part);
        if parts.peek().is_none() {
            break;
        }
        let m = fs::symlink_metadata(&prefix)
            .map_err(|e| format!("cannot stat {}: {e}", prefix.display()))?;
        if m.file_type().is_symlink() {
            if m.uid() != 0 {
                return Err(format!(
                    "{} is a symlink owned by uid {}",
                    prefix.display(),
                    m.uid()
                ));
            }
        } else {
            closed_dir(&prefix, &m)?;
        }
    }
    // The path it resolves to: the directories the file really sits in.
    let real = fs::canonicalize(path).map_err(|e| format!("cannot resolve it: {e}"))?;
    for dir in real.ancestors().skip(1) {
        let m = fs::metadata(dir).map_err(|e| format!("cannot stat {}: {e}", dir.display()))?;
        closed_dir(dir, &m)?;
    }
    Ok(())
}

/// `Ok` when `dir` is a directory owned by root that group and others cannot write.
fn closed_dir(dir: &Path, m: &fs::Metadata) -> Result<(), String> {
    if !m.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    if m.uid() != 0 {
        return Err(format!(
            "directory {} is owned by uid {}, not root",
            dir.display(),
            m.uid()
        ));
    }
    if m.mode() & WRITABLE_BY_OTHERS != 0 {
        return Err(format!(
            "directory {} is writable by group or others (mode {:o})",
            dir.display(),
            m.mode() & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(path: &str) -> ExeFile {
        let m = fs::metadata(path).unwrap();
        ExeFile {
            dev: m.dev(),
            ino: m.ino(),
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode(),
        }
    }

    #[test]
    fn a_system_binary_at_its_own_path_is_trusted() {
        // /bin may be a symlink to usr/bin (merged /usr): root's, so still trusted.
        for p in ["/usr/bin/env", "/bin/sh"] {
            let f = file_of(p);
            if f.uid != 0 {
                continue; // not a root-installed system here
            }
            assert_eq!(check_path(Path::new(p), &f), Ok(()), "{p}");
        }
    }

    #[test]
    fn copies_links_and_odd_paths_are_not() {
        let f = file_of("/usr/bin/env");
        let dir = tempfile::tempdir().unwrap();
        // A copy under a runner's name in a directory others could write.
        let copy = dir.path().join("gitlab-runner");
        fs::copy("/usr/bin/env", &copy).unwrap();
        let err = check_path(&copy, &file_of(copy.to_str().unwrap())).unwrap_err();
        assert!(err.contains("directory") || err.contains("uid"), "{err}");
        // A symlink to the real binary under a runner's name: the name was not root's choice.
        let link = dir.path().join("Runner.Worker");
        std::os::unix::fs::symlink("/usr/bin/env", &link).unwrap();
        assert!(check_path(&link, &f).is_err());
        // Another file than the process runs.
        assert!(
            check_path(Path::new("/usr/bin/env"), &file_of("/bin/sh"))
                .unwrap_err()
                .contains("not the one")
        );
        assert!(
            check_path(Path::new("env"), &f)
                .unwrap_err()
                .contains("relative")
        );
        assert!(
            check_path(Path::new("/usr/bin/../bin/env"), &f)
                .unwrap_err()
                .contains("..")
        );
    }

    #[test]
    fn a_gone_process_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let (file, trust) = inspect(dir.path(), 4242, Some("/usr/bin/env"));
        assert!(file.is_none());
        assert!(matches!(trust, ExeTrust::Unknown { .. }), "{trust:?}");
    }
}
