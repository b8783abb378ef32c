//! Process lineage from the kernel: tracepoint field offsets read from the
//! tracefs `format` files, scope entries for the in-kernel filter, and the
//! consumer turning PROC_EVENTS records into [`identity::ProcessEvent`]s.

use std::{
    os::{
        fd::{AsRawFd, RawFd},
        unix::fs::MetadataExt as _,
    },
    path::Path,
    sync::Mutex,
};

use agent_common::process::{
    ARGV_LEN, ProcessEvent as RawEvent, ProcessEventKind, ScopeEntry, TracepointOffsets,
};

use aya::maps::{MapData, RingBuf};

use super::KernelError;
use crate::identity::ProcessEvent;

/// Where tracefs is mounted (the daemon mounts it if absent).
pub(super) const TRACEFS: &str = "/sys/kernel/tracing";

/// Offsets of the fields the tracepoint programs read.
pub(super) fn tracepoint_offsets(tracefs: &Path) -> Result<TracepointOffsets, KernelError> {
    let fork = read_format(tracefs, "sched", "sched_process_fork")?;
    let exec = read_format(tracefs, "sched", "sched_process_exec")?;
    let exit = read_format(tracefs, "sched", "sched_process_exit")?;
    let execve = read_format(tracefs, "syscalls", "sys_enter_execve")?;
    let need = |text: &str, tp: &'static str, field: &'static str| {
        field_offset(text, field).ok_or(KernelError::TracepointField {
            tracepoint: tp,
            field,
        })
    };
    Ok(TracepointOffsets {
        fork_child_pid: need(&fork, "sched_process_fork", "child_pid")?,
        exec_filename: need(&exec, "sched_process_exec", "filename")?,
        exec_old_pid: need(&exec, "sched_process_exec", "old_pid")?,
        // Only newer kernels have it; 0 makes the program fall back to pid == tgid.
        exit_group_dead: field_offset(&exit, "group_dead").unwrap_or(0),
        execve_argv: need(&execve, "sys_enter_execve", "argv")?,
        _pad: 0,
    })
}

fn read_format(tracefs: &Path, category: &str, name: &str) -> Result<String, KernelError> {
    let path = tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    std::fs::read_to_string(&path).map_err(|source| KernelError::Io {
        what: "read",
        path,
        source,
    })
}

/// The offset of `field` in a tracepoint `format` text, e.g. from
/// `field:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;`.
fn field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let name = decl.split_whitespace().last()?;
        // `char comm[16]` names the field `comm`.
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        rest.split(';')
            .find_map(|kv| kv.trim().strip_prefix("offset:")?.trim().parse().ok())
    })
}

/// The scope entry of a cgroup directory: its id (inode) and depth below the mount.
pub(super) fn scope_entry(mount: &Path, dir: &Path) -> Result<ScopeEntry, KernelError> {
    let meta = std::fs::metadata(dir).map_err(|source| KernelError::Io {
        what: "stat",
        path: dir.to_path_buf(),
        source,
    })?;
    let level = dir
        .strip_prefix(mount)
        .map(|rel| rel.components().count())
        .map_err(|_| KernelError::NoSuchScope(dir.to_path_buf()))?;
    Ok(ScopeEntry {
        id: meta.ino(),
        level: u32::try_from(level).unwrap_or(u32::MAX),
        _pad: 0,
    })
}

/// The PROC_EVENTS ring buffer. An async task waits for [`readable`], and
/// whoever builds an identity first [`drain`]s it, so records the kernel
/// submitted before a connect are applied before that connect is attributed.
///
/// [`readable`]: ProcessEventStream::readable
/// [`drain`]: ProcessEventStream::drain
pub struct ProcessEventStream {
    inner: tokio::io::unix::AsyncFd<RingFd>,
}

/// The ring behind a lock, with its fd for the runtime's poller.
struct RingFd {
    fd: RawFd,
    ring: Mutex<RingBuf<MapData>>,
}

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl ProcessEventStream {
    /// Registers the ring with the runtime (call inside it).
    ///
    /// # Errors
    /// The ring's fd cannot be registered with the runtime.
    pub(super) fn new(ring: RingBuf<MapData>) -> std::io::Result<ProcessEventStream> {
        let fd = ring.as_raw_fd();
        let ring = RingFd {
            fd,
            ring: Mutex::new(ring),
        };
        // SAFETY: RingFd owns the ring buffer, which keeps `fd` open for as
        // long as the AsyncFd (which owns the RingFd) lives, as register requires.
        #[allow(unsafe_code)]
        let inner = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE)
        }
        .map_err(std::io::Error::from)?;
        Ok(ProcessEventStream { inner })
    }

    /// Waits until the kernel may have submitted records.
    ///
    /// # Errors
    /// Polling the ring failed.
    pub async fn readable(&self) -> std::io::Result<()> {
        let mut guard = self.inner.readable().await?;
        // Cleared before the caller drains: a record submitted after this
        // point raises readiness again, so none is left waiting.
        guard.clear_ready();
        Ok(())
    }

    /// Takes every record available now, in order, without blocking.
    /// Undecodable records are skipped.
    pub fn drain(&self) -> Vec<ProcessEvent> {
        let mut ring = self
            .inner
            .get_ref()
            .ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut batch = Vec::new();
        while let Some(item) = ring.next() {
            batch.extend(decode(&item));
        }
        batch
    }
}

/// Decodes one PROC_EVENTS record; `None` for a short or unknown record.
fn decode(bytes: &[u8]) -> Option<ProcessEvent> {
    if bytes.len() < std::mem::size_of::<RawEvent>() {
        return None;
    }
    // SAFETY: length checked above; RawEvent is plain old data (every byte
    // pattern is valid) and read_unaligned copes with the ring's alignment.
    #[allow(unsafe_code)]
    let raw: RawEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let comm = c_str(&raw.comm);
    Some(match ProcessEventKind::from_u32(raw.kind)? {
        ProcessEventKind::Fork => ProcessEvent::Fork {
            child_tgid: raw.tgid,
            parent_tgid: raw.parent_tgid,
            uid: raw.uid,
            gid: raw.gid,
            comm,
        },
        ProcessEventKind::Exec => {
            let len = (raw.argv_len as usize).min(ARGV_LEN);
            let argv = raw
                .argv
                .get(..len)
                .unwrap_or_default()
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            ProcessEvent::Exec {
                tgid: raw.tgid,
                uid: raw.uid,
                gid: raw.gid,
                comm,
                filename: c_str(&raw.filename),
                argv,
            }
        }
        ProcessEventKind::Exit => ProcessEvent::Exit { tgid: raw.tgid },
    })
}

fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(bytes.get(..end).unwrap_or_default()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORK: &str = "name: sched_process_fork\nID: 1\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n";

    #[test]
    fn reads_offsets_from_format_text() {
        assert_eq!(field_offset(FORK, "child_pid"), Some(20));
        assert_eq!(field_offset(FORK, "parent_pid"), Some(12));
        assert_eq!(field_offset(FORK, "parent_comm"), Some(8));
        assert_eq!(field_offset(FORK, "pid"), None, "no partial-name matches");
        assert_eq!(
            field_offset("\tfield:char comm[16];\toffset:8;\tsize:16;", "comm"),
            Some(8)
        );
    }

    #[test]
    fn reads_this_kernels_formats() {
        // Needs tracefs (mounted by `cargo xtask setup`); skipped where it is absent.
        if !Path::new(TRACEFS).join("events/sched").exists() {
            eprintln!("SKIPPED: tracefs not mounted");
            return;
        }
        let o = tracepoint_offsets(Path::new(TRACEFS)).unwrap();
        assert!(o.fork_child_pid > 0 && o.exec_filename > 0 && o.execve_argv > 0);
    }

    fn raw(kind: ProcessEventKind) -> RawEvent {
        RawEvent {
            kind: kind as u32,
            tgid: 42,
            parent_tgid: 7,
            uid: 1000,
            gid: 100,
            argv_len: 0,
            ktime_ns: 1,
            cgroup_id: 2,
            comm: *b"psql\0\0\0\0\0\0\0\0\0\0\0\0",
            filename: [0; agent_common::process::FILENAME_LEN],
            argv: [0; ARGV_LEN],
        }
    }

    fn bytes(r: &RawEvent) -> Vec<u8> {
        let mut v = vec![0u8; std::mem::size_of::<RawEvent>()];
        // SAFETY: test-only copy of a POD value into a buffer of its size.
        #[allow(unsafe_code)]
        unsafe {
            std::ptr::copy_nonoverlapping(
                (r as *const RawEvent).cast::<u8>(),
                v.as_mut_ptr(),
                v.len(),
            )
        };
        v
    }

    #[test]
    fn decodes_exec_with_argv() {
        let mut r = raw(ProcessEventKind::Exec);
        r.filename[..13].copy_from_slice(b"/usr/bin/psql");
        let args = b"psql\0-h\0db\0";
        r.argv[..args.len()].copy_from_slice(args);
        r.argv_len = args.len() as u32;
        let ev = decode(&bytes(&r)).unwrap();
        assert_eq!(
            ev,
            ProcessEvent::Exec {
                tgid: 42,
                uid: 1000,
                gid: 100,
                comm: "psql".into(),
                filename: "/usr/bin/psql".into(),
                argv: vec!["psql".into(), "-h".into(), "db".into()],
            }
        );
    }

    #[test]
    fn decodes_fork_and_exit_and_rejects_garbage() {
        assert!(matches!(
            decode(&bytes(&raw(ProcessEventKind::Fork))),
            Some(ProcessEvent::Fork {
                child_tgid: 42,
                parent_tgid: 7,
                ..
            })
        ));
        assert_eq!(
            decode(&bytes(&raw(ProcessEventKind::Exit))),
            Some(ProcessEvent::Exit { tgid: 42 })
        );
        assert_eq!(decode(&[0u8; 10]), None, "short record");
        let mut unknown = raw(ProcessEventKind::Exit);
        unknown.kind = 99;
        assert_eq!(decode(&bytes(&unknown)), None);
    }
}
