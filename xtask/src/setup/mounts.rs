//! Pseudo-filesystems the agent needs: cgroup2 (checked), bpffs and tracefs (mounted).

use std::fs;
use std::process::Command;

use anyhow::{Context, Result};

use super::Step;
use crate::util;

const BPFFS_DIR: &str = "/sys/fs/bpf";
const TRACEFS_DIR: &str = "/sys/kernel/tracing";

/// One line of /proc/mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    pub(crate) target: String,
    pub(crate) fstype: String,
}

/// Parses /proc/mounts text; malformed lines are skipped.
pub(crate) fn parse_mounts(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _source = fields.next()?;
            let target = unescape(fields.next()?);
            let fstype = unescape(fields.next()?);
            Some(MountEntry { target, fstype })
        })
        .collect()
}

/// Undoes the kernel's octal escapes (`\040` for a space, `\134` for a backslash, ...).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| b == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match octal {
            Some(value) => {
                out.push(value);
                i += 4;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first mount of the given filesystem type.
pub(crate) fn find_fstype<'a>(mounts: &'a [MountEntry], fstype: &str) -> Option<&'a MountEntry> {
    mounts.iter().find(|m| m.fstype == fstype)
}

/// Whether a filesystem of the given type is mounted at `target`.
pub(crate) fn is_mounted_at(mounts: &[MountEntry], target: &str, fstype: &str) -> bool {
    mounts
        .iter()
        .any(|m| m.target == target && m.fstype == fstype)
}

fn read_mounts() -> Result<Vec<MountEntry>> {
    let text = fs::read_to_string("/proc/mounts").context("could not read /proc/mounts")?;
    Ok(parse_mounts(&text))
}

/// The cgroup v2 mount (/sys/fs/cgroup on systemd hosts, /sys/fs/cgroup/unified on hybrid ones).
pub(crate) fn cgroup2_mount() -> Result<Option<MountEntry>> {
    Ok(find_fstype(&read_mounts()?, "cgroup2").cloned())
}

/// bpffs at /sys/fs/bpf, where the agent pins its maps and links.
pub(super) struct Bpffs;

impl Step for Bpffs {
    fn name(&self) -> &'static str {
        "bpffs"
    }

    fn is_done(&self) -> Result<bool> {
        Ok(is_mounted_at(&read_mounts()?, BPFFS_DIR, "bpf"))
    }

    fn describe_fix(&self) -> String {
        format!("mkdir -p {BPFFS_DIR} && mount -t bpf -o mode={BPFFS_MODE} bpf {BPFFS_DIR}")
    }

    fn apply(&self) -> Result<()> {
        util::run(Command::new("mkdir").args(["-p", BPFFS_DIR]))?;
        // Only root needs bpffs; mounted world-writable (the kernel's
        // default is 1777), users can plant directories where pins go.
        util::run(Command::new("mount").args([
            "-t",
            "bpf",
            "-o",
            &format!("mode={BPFFS_MODE}"),
            "bpf",
            BPFFS_DIR,
        ]))
    }
}

/// Mode bpffs is mounted with (systemd mounts it so too).
const BPFFS_MODE: &str = "0700";

/// A warning when bpffs is already mounted writable by every user: set-up
/// does not remount it (other software on the host may rely on it), and
/// the daemon refuses pin trees others could write anyway.
pub(crate) fn bpffs_advice() -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mounted = is_mounted_at(&read_mounts().ok()?, BPFFS_DIR, "bpf");
    let mode = fs::metadata(BPFFS_DIR).ok()?.permissions().mode() & 0o7777;
    advice_for(mounted, mode)
}

fn advice_for(mounted: bool, mode: u32) -> Option<String> {
    (mounted && mode & 0o002 != 0).then(|| {
        format!(
            "warning: {BPFFS_DIR} is writable by every user (mode {mode:o}); consider `mount -o remount,mode={BPFFS_MODE} {BPFFS_DIR}` (interlock refuses pin directories others could write)"
        )
    })
}

/// tracefs at /sys/kernel/tracing, where the agent reads tracepoint formats.
pub(super) struct Tracefs;

impl Step for Tracefs {
    fn name(&self) -> &'static str {
        "tracefs"
    }

    fn is_done(&self) -> Result<bool> {
        Ok(is_mounted_at(&read_mounts()?, TRACEFS_DIR, "tracefs"))
    }

    fn describe_fix(&self) -> String {
        format!("mount -t tracefs nodev {TRACEFS_DIR}")
    }

    fn apply(&self) -> Result<()> {
        util::run(Command::new("mount").args(["-t", "tracefs", "nodev", TRACEFS_DIR]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
sysfs /sys sysfs rw,relatime 0 0
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
bpf /sys/fs/bpf bpf rw,relatime 0 0
nodev /sys/kernel/tracing tracefs rw,relatime 0 0
/dev/vda /mnt/with\\040space ext4 rw 0 0
garbage
";

    #[test]
    fn parses_entries_and_skips_malformed_lines() {
        let mounts = parse_mounts(HYBRID);
        assert_eq!(mounts.len(), 7);
        assert_eq!(
            mounts.get(3),
            Some(&MountEntry {
                target: "/sys/fs/cgroup/unified".into(),
                fstype: "cgroup2".into(),
            })
        );
    }

    #[test]
    fn unescapes_octal_sequences() {
        let mounts = parse_mounts(HYBRID);
        assert_eq!(
            mounts.get(6).map(|m| m.target.as_str()),
            Some("/mnt/with space")
        );
        assert_eq!(unescape(r"a\134b\0"), r"a\b\0");
    }

    #[test]
    fn finds_cgroup2_on_hybrid_and_unified_hosts() {
        let hybrid = parse_mounts(HYBRID);
        let found = find_fstype(&hybrid, "cgroup2").map(|m| m.target.as_str());
        assert_eq!(found, Some("/sys/fs/cgroup/unified"));

        let unified = parse_mounts("cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n");
        let found = find_fstype(&unified, "cgroup2").map(|m| m.target.as_str());
        assert_eq!(found, Some("/sys/fs/cgroup"));

        let v1_only = parse_mounts("cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n");
        assert_eq!(find_fstype(&v1_only, "cgroup2"), None);
    }

    #[test]
    fn world_writable_bpffs_gets_advice() {
        assert!(advice_for(true, 0o1777).is_some_and(|a| a.contains("mode 1777")));
        assert_eq!(advice_for(true, 0o700), None);
        assert_eq!(advice_for(false, 0o1777), None);
    }

    #[test]
    fn checks_bpffs_and_tracefs_mountpoints() {
        let mounted = parse_mounts(HYBRID);
        assert!(is_mounted_at(&mounted, BPFFS_DIR, "bpf"));
        assert!(is_mounted_at(&mounted, TRACEFS_DIR, "tracefs"));

        // Right type, wrong place; right place, wrong type.
        let elsewhere =
            parse_mounts("bpf /run/bpf bpf rw 0 0\ntmpfs /sys/kernel/tracing tmpfs rw 0 0\n");
        assert!(!is_mounted_at(&elsewhere, BPFFS_DIR, "bpf"));
        assert!(!is_mounted_at(&elsewhere, TRACEFS_DIR, "tracefs"));
    }
}
