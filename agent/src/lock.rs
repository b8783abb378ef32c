//! Exclusive locks that name their holder: one daemon per state directory
//! (its audit log) and per instance (its pins). A lock is `flock` on a file
//! or directory, held as long as the returned [`Held`] lives and released
//! by the kernel when the process ends however it ends, so a crash never
//! leaves a stale lock. The holder's pid comes from `/proc/locks`.

use std::{
    fs::File,
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// A lock held until dropped.
#[derive(Debug)]
pub struct Held {
    _file: File,
}

/// The lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("{what} is in use by another interlock process{}; {hint}", holder_text(*.pid))]
    Held {
        what: String,
        pid: Option<u32>,
        hint: &'static str,
    },
    #[error("cannot lock {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn holder_text(pid: Option<u32>) -> String {
    match pid {
        Some(p) => format!(" (pid {p})"),
        None => String::new(),
    }
}

/// How often a lock is tried again when its path was replaced (removed
/// and made again) between opening and locking it.
const ATTEMPTS: u32 = 8;

/// Takes the lock on `path` (a file, created if missing, or a directory
/// that exists) without waiting. `what` and `hint` word the refusal.
///
/// # Errors
/// [`LockError::Held`] naming the holder's pid when another process holds
/// it; [`LockError::Io`] when `path` cannot be opened.
pub fn exclusive(path: &Path, what: &str, hint: &'static str) -> Result<Held, LockError> {
    let io = |source| LockError::Io {
        path: path.to_owned(),
        source,
    };
    for _ in 0..ATTEMPTS {
        let file = open(path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    what: what.to_string(),
                    pid: holder(&file),
                    hint,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        // Locked what `path` named when it was opened; if the path names
        // something else now (removed, made again), that is not the lock.
        let locked = file.metadata().map_err(io)?;
        match std::fs::metadata(path) {
            Ok(now) if now.dev() == locked.dev() && now.ino() == locked.ino() => {
                return Ok(Held { _file: file });
            }
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(e)),
        }
    }
    Err(io(io::Error::other(
        "it was removed and made again while being locked, repeatedly",
    )))
}

fn open(path: &Path) -> io::Result<File> {
    if path.is_dir() {
        File::open(path)
    } else {
        crate::state_dir::private_file()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
    }
}

/// The pid holding a `flock` on `file`, from `/proc/locks`.
pub fn holder(file: &File) -> Option<u32> {
    let m = file.metadata().ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    holder_in(&locks, m.dev(), m.ino())
}

/// Finds the pid of the FLOCK entry on (`dev`, `ino`) in `/proc/locks`
/// text, whose lines read `1: FLOCK  ADVISORY  WRITE 4711 00:28:47209 0 EOF`
/// (device as hex major:minor; waiters are marked `->` and skipped).
fn holder_in(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let want = format!("{:02x}:{:02x}:{ino}", major(dev), minor(dev));
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        match f.as_slice() {
            [_, "FLOCK", _, _, pid, id, ..] if *id == want => pid.parse().ok(),
            _ => None,
        }
    })
}

/// glibc's `gnu_dev_major`: the dev_t encoding Linux uses.
fn major(dev: u64) -> u64 {
    ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xffff_f000)
}

fn minor(dev: u64) -> u64 {
    (dev & 0xff) | ((dev >> 12) & 0xffff_ff00)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder() {
        let d = crate::test_dir::TestDir::new("lock");
        let path = d.join("daemon.lock");
        let first = exclusive(&path, "state directory x", "stop it first").unwrap();
        // flock conflicts between open file descriptions, even in one process.
        let e = exclusive(&path, "state directory x", "stop it first").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&format!(
                "state directory x is in use by another interlock process (pid {})",
                std::process::id()
            )),
            "{text}"
        );
        assert!(text.ends_with("; stop it first"), "{text}");
        drop(first);
        let again = exclusive(&path, "state directory x", "stop it first");
        assert!(again.is_ok(), "released on drop");
        // Directories lock too (pin directories are).
        let _dir = exclusive(&d, "instance y", "h").unwrap();
        assert!(matches!(
            exclusive(&d, "instance y", "h"),
            Err(LockError::Held { .. })
        ));
        drop(again);
        drop(_dir);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn proc_locks_lines_give_the_pid() {
        let text = "1: FLOCK  ADVISORY  WRITE 27023 fe:00:5431348 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 999 00:28:47209 0 EOF\n\
                    3: FLOCK  ADVISORY  WRITE 28970 00:28:47209 0 EOF\n\
                    4: POSIX  ADVISORY  WRITE 1 00:28:5 0 EOF\n";
        assert_eq!(holder_in(text, 0x28, 47209), Some(28970));
        assert_eq!(holder_in(text, 0xfe00, 5431348), Some(27023));
        assert_eq!(holder_in(text, 0x28, 5), None, "POSIX locks are not ours");
        assert_eq!(holder_in(text, 0x28, 1), None);
        // glibc's makedev(259, 0x10000): a minor past 8 bits.
        assert_eq!((major(0x1001_0300), minor(0x1001_0300)), (259, 0x10000));
    }
}
