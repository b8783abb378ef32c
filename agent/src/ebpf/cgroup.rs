//! Finding cgroup v2 and the scope cgroups the programs attach to.

use std::path::{Path, PathBuf};

use super::KernelError;

/// Where cgroup v2 is mounted, from /proc/mounts (/sys/fs/cgroup on a systemd
/// host, /sys/fs/cgroup/unified on hybrid ones).
///
/// # Errors
/// [`KernelError::NoCgroup2`] if /proc/mounts has no cgroup2 entry.
pub fn cgroup2_mount() -> Result<PathBuf, KernelError> {
    let mounts = std::fs::read_to_string("/proc/mounts").map_err(|source| KernelError::Io {
        what: "read",
        path: "/proc/mounts".into(),
        source,
    })?;
    find_cgroup2(&mounts).ok_or(KernelError::NoCgroup2)
}

fn find_cgroup2(mounts: &str) -> Option<PathBuf> {
    entries(mounts).find_map(|(dir, fstype)| (fstype == "cgroup2").then(|| PathBuf::from(dir)))
}

/// (mount point, filesystem type) of each /proc/mounts line.
fn entries(mounts: &str) -> impl Iterator<Item = (String, &str)> {
    mounts.lines().filter_map(|line| {
        let mut f = line.split_whitespace();
        let (_dev, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        Some((unescape_octal(dir), fstype))
    })
}

/// Whether a filesystem of `fstype` is mounted at `dir` (false if
/// /proc/mounts is unreadable).
pub(super) fn is_mounted(fstype: &str, dir: &str) -> bool {
    std::fs::read_to_string("/proc/mounts")
        .map(|m| entries(&m).any(|(d, t)| d == dir && t == fstype))
        .unwrap_or(false)
}

/// /proc/mounts escapes spaces and friends as `\040`.
fn unescape_octal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let digits: String = chars.clone().take(3).collect();
            if digits.len() == 3
                && let Ok(v) = u8::from_str_radix(&digits, 8)
            {
                out.push(char::from(v));
                for _ in 0..3 {
                    chars.next();
                }
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// The directory of a scope cgroup: `/` is the whole host (the cgroup v2
/// root); a path under the mount is used as is; any other path is taken
/// relative to the mount (`/ci.slice` -> `<mount>/ci.slice`).
///
/// # Errors
/// [`KernelError::NoSuchScope`] if the directory does not exist.
pub fn resolve_scope(mount: &Path, scope: &str) -> Result<PathBuf, KernelError> {
    let p = Path::new(scope);
    let dir = if p.starts_with(mount) {
        p.to_path_buf()
    } else {
        mount.join(scope.trim_start_matches('/'))
    };
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(KernelError::NoSuchScope(dir))
    }
}

/// The path (relative to the cgroup v2 mount, with a leading `/`, as in
/// /proc/<pid>/cgroup) of the cgroup whose id is `id`: on cgroup v2 the id
/// is the directory's inode number. Walks the hierarchy (at most `limit`
/// directories); `None` if the cgroup is gone or was not found.
pub fn cgroup_path_of(mount: &Path, id: u64, limit: usize) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let mut stack = vec![mount.to_path_buf()];
    let mut seen = 0usize;
    while let Some(dir) = stack.pop() {
        seen += 1;
        if seen > limit {
            return None;
        }
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        if meta.ino() == id {
            let rel = dir.strip_prefix(mount).ok()?;
            return Some(format!("/{}", rel.display()));
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_hybrid_layout() {
        let mounts = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            find_cgroup2(mounts),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(find_cgroup2("proc /proc proc rw 0 0\n"), None);
        assert_eq!(
            find_cgroup2("cgroup2 /a\\040b cgroup2 rw 0 0"),
            Some(PathBuf::from("/a b"))
        );
        assert!(entries(mounts).any(|(d, t)| d == "/sys/fs/cgroup/cpu" && t == "cgroup"));
        assert!(
            is_mounted("proc", "/proc"),
            "this machine has /proc mounted"
        );
        assert!(!is_mounted("proc", "/no/such/mount"));
    }

    #[test]
    fn finds_a_directory_by_its_inode() {
        use std::os::unix::fs::MetadataExt as _;
        let base = crate::test_dir::TestDir::new("cgpath");
        std::fs::create_dir_all(base.join("a/b")).unwrap();
        let ino = std::fs::metadata(base.join("a/b")).unwrap().ino();
        assert_eq!(cgroup_path_of(&base, ino, 100).as_deref(), Some("/a/b"));
        let root = std::fs::metadata(&*base).unwrap().ino();
        assert_eq!(cgroup_path_of(&base, root, 100).as_deref(), Some("/"));
        assert_eq!(cgroup_path_of(&base, ino, 1), None, "over the limit");
        assert_eq!(cgroup_path_of(&base, u64::MAX, 100), None);
    }

    #[test]
    fn resolves_scopes_relative_to_the_mount() {
        let mount = std::env::temp_dir();
        assert_eq!(resolve_scope(&mount, "/").unwrap(), mount.join(""));
        assert!(matches!(
            resolve_scope(&mount, "/no-such-scope-xyz"),
            Err(KernelError::NoSuchScope(_))
        ));
    }
}
