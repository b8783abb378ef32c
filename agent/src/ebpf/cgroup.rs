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
    fn resolves_scopes_relative_to_the_mount() {
        let mount = std::env::temp_dir();
        assert_eq!(resolve_scope(&mount, "/").unwrap(), mount.join(""));
        assert!(matches!(
            resolve_scope(&mount, "/no-such-scope-xyz"),
            Err(KernelError::NoSuchScope(_))
        ));
    }
}
