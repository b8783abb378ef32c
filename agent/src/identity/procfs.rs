//! Readers for `/proc/<pid>/*`, all relative to a configurable proc root so tests can use a fake
//! tree. `environ` is not read here: see `ci.rs`, which never keeps it whole.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::IdentityError;
use super::process::{MAX_ARGV_BYTES, ProcessInfo, cap_argv};

/// `/proc/<pid>/stat` is one short line; anything longer is not a stat file.
const STAT_LIMIT: u64 = 4096;
/// `status` and `cgroup` are a few KiB; the cap only guards against a hostile fake tree.
const TEXT_LIMIT: u64 = 64 * 1024;

/// The fields of `/proc/<pid>/stat` the table uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) comm: String,
    pub(crate) ppid: u32,
    pub(crate) start_ticks: u64,
}

pub(crate) fn pid_file(proc_root: &Path, tgid: u32, name: &str) -> PathBuf {
    proc_root.join(tgid.to_string()).join(name)
}

fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, IdentityError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(limit).read_to_end(&mut bytes))
        .map_err(|e| IdentityError::read(path, e))?;
    Ok(bytes)
}

/// Reads comm, ppid and start time from `/proc/<tgid>/stat`.
pub(crate) fn read_stat(proc_root: &Path, tgid: u32) -> Result<Stat, IdentityError> {
    let path = pid_file(proc_root, tgid, "stat");
    let bytes = read_limited(&path, STAT_LIMIT)?;
    parse_stat(&path, &bytes)
}

/// Parses a stat line. comm may contain spaces and parentheses, so it runs from the first `(`
/// to the LAST `)`; the numeric fields follow.
pub(crate) fn parse_stat(path: &Path, bytes: &[u8]) -> Result<Stat, IdentityError> {
    let open = bytes
        .iter()
        .position(|&b| b == b'(')
        .ok_or_else(|| IdentityError::parse(path, "no '(' before comm"))?;
    let close = bytes
        .iter()
        .rposition(|&b| b == b')')
        .filter(|&close| close > open)
        .ok_or_else(|| IdentityError::parse(path, "no ')' after comm"))?;
    let comm = bytes
        .get(open + 1..close)
        .map(String::from_utf8_lossy)
        .unwrap_or_default()
        .into_owned();
    let rest = bytes
        .get(close + 1..)
        .and_then(|rest| std::str::from_utf8(rest).ok())
        .ok_or_else(|| IdentityError::parse(path, "fields after comm are not text"))?;
    // `rest` starts at field 3 (state): ppid is field 4, starttime field 22.
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let ppid = fields
        .get(1)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| IdentityError::parse(path, "bad ppid (field 4)"))?;
    let start_ticks = fields
        .get(19)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| IdentityError::parse(path, "bad starttime (field 22)"))?;
    Ok(Stat {
        comm,
        ppid,
        start_ticks,
    })
}

/// The thread group of task `pid` from the `Tgid:` line of `/proc/<pid>/status`
/// (thread ids have /proc entries too); `None` when unreadable.
pub(crate) fn read_tgid(proc_root: &Path, pid: u32) -> Option<u32> {
    let bytes = read_limited(&pid_file(proc_root, pid, "status"), TEXT_LIMIT).ok()?;
    String::from_utf8_lossy(&bytes)
        .lines()
        .find_map(|line| line.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Reads the real uid and gid from the `Uid:` and `Gid:` lines of `/proc/<tgid>/status`.
pub(crate) fn read_ids(proc_root: &Path, tgid: u32) -> Result<(u32, u32), IdentityError> {
    let path = pid_file(proc_root, tgid, "status");
    let bytes = read_limited(&path, TEXT_LIMIT)?;
    let text = String::from_utf8_lossy(&bytes);
    let real_id = |label: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(label))
            .and_then(|ids| ids.split_ascii_whitespace().next())
            .and_then(|id| id.parse::<u32>().ok())
    };
    let uid = real_id("Uid:").ok_or_else(|| IdentityError::parse(&path, "no Uid line"))?;
    let gid = real_id("Gid:").ok_or_else(|| IdentityError::parse(&path, "no Gid line"))?;
    Ok((uid, gid))
}

/// The target of `/proc/<tgid>/exe`; `None` for kernel threads, gone or unreadable processes.
pub(crate) fn read_exe(proc_root: &Path, tgid: u32) -> Option<String> {
    fs::read_link(pid_file(proc_root, tgid, "exe"))
        .ok()
        .map(|target| target.to_string_lossy().into_owned())
}

/// The command line from `/proc/<tgid>/cmdline` (capped); empty for kernel threads, gone or
/// unreadable processes.
pub(crate) fn read_argv(proc_root: &Path, tgid: u32) -> Vec<String> {
    // One byte past the cap is enough for `cap_argv` to see that the text was cut.
    let limit = u64::try_from(MAX_ARGV_BYTES)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let Ok(bytes) = read_limited(&pid_file(proc_root, tgid, "cmdline"), limit) else {
        return Vec::new();
    };
    let body = bytes.strip_suffix(&[0]).unwrap_or(&bytes);
    if body.is_empty() {
        return Vec::new();
    }
    cap_argv(
        body.split(|&b| b == 0)
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect(),
    )
}

/// The cgroup-v2 path (the `0::/path` line) from `/proc/<tgid>/cgroup`; `None` when the file
/// is unreadable or the process is only in v1 hierarchies.
pub(crate) fn read_cgroup(proc_root: &Path, tgid: u32) -> Option<String> {
    let bytes = read_limited(&pid_file(proc_root, tgid, "cgroup"), TEXT_LIMIT).ok()?;
    String::from_utf8_lossy(&bytes)
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::to_owned)
}

/// Everything /proc says about one process. Fails when `stat` or `status` cannot be read or
/// parsed (typically: the process is gone, see [`IdentityError::is_process_gone`]); a missing
/// exe or command line only leaves those fields empty.
pub(crate) fn read_process(proc_root: &Path, tgid: u32) -> Result<ProcessInfo, IdentityError> {
    let stat = read_stat(proc_root, tgid)?;
    let (uid, gid) = read_ids(proc_root, tgid)?;
    Ok(ProcessInfo {
        tgid,
        ppid: stat.ppid,
        uid,
        gid,
        comm: stat.comm,
        exe: read_exe(proc_root, tgid),
        argv: read_argv(proc_root, tgid),
        start_ticks: Some(stat.start_ticks),
        execs: None,
        exited: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat_line(comm: &str) -> String {
        format!(
            "4242 ({comm}) S 17 4242 4242 0 -1 4194304 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10"
        )
    }

    #[test]
    fn stat_with_plain_comm() -> Result<(), IdentityError> {
        let stat = parse_stat(Path::new("stat"), stat_line("bash").as_bytes())?;
        let want = Stat {
            comm: "bash".into(),
            ppid: 17,
            start_ticks: 987_654,
        };
        assert_eq!(stat, want);
        Ok(())
    }

    #[test]
    fn stat_with_spaces_and_parens_in_comm() -> Result<(), IdentityError> {
        let stat = parse_stat(Path::new("stat"), stat_line("a) S 1 (b c)").as_bytes())?;
        assert_eq!(stat.comm, "a) S 1 (b c)");
        assert_eq!(stat.ppid, 17);
        assert_eq!(stat.start_ticks, 987_654);
        Ok(())
    }

    #[test]
    fn malformed_stat_is_an_error_not_a_panic() {
        for bad in [
            "",
            "4242",
            "4242 (x",
            "4242 )x( S 1",
            "4242 (x) S",
            "4242 (x) S notanumber",
            "4242 (x) S 1 2 3",
        ] {
            let res = parse_stat(Path::new("stat"), bad.as_bytes());
            assert!(
                matches!(res, Err(IdentityError::Parse { .. })),
                "{bad:?} parsed"
            );
        }
        let invalid_utf8 = b"1 (\xff) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 \xff";
        assert!(parse_stat(Path::new("stat"), invalid_utf8).is_err());
    }
}
