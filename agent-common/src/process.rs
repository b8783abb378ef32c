//! Process lineage events from the sched tracepoints, sent over PROC_EVENTS.

/// Bytes of argv captured per exec (NUL separated, truncated).
pub const ARGV_LEN: usize = 512;
/// Bytes of the exec'd filename captured.
pub const FILENAME_LEN: usize = 256;
/// Ring buffer size in bytes.
pub const PROC_EVENTS_BYTES: u32 = 1 << 22;
/// Maximum number of scope cgroups.
pub const SCOPES_MAX: u32 = 16;

/// Kind of a [`ProcessEvent`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessEventKind {
    Fork = 1,
    Exec = 2,
    Exit = 3,
}

/// One process lineage event.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessEvent {
    /// A [`ProcessEventKind`] as u32.
    pub kind: u32,
    /// Fork: the child's tgid; exec/exit: the task's tgid.
    pub tgid: u32,
    /// Fork: the child's pid (thread id); exec/exit: the task's pid.
    pub pid: u32,
    /// Fork: the parent's tgid; otherwise 0.
    pub parent_tgid: u32,
    pub uid: u32,
    pub gid: u32,
    pub ktime_ns: u64,
    pub cgroup_id: u64,
    pub comm: [u8; 16],
    /// Exec: the filename, NUL terminated or truncated.
    pub filename: [u8; FILENAME_LEN],
    /// Exec: argv, NUL separated; `argv_len` bytes are valid.
    pub argv: [u8; ARGV_LEN],
    pub argv_len: u32,
    pub _pad: u32,
}
crate::assert_layout!(ProcessEvent, size = 832, align = 8);

/// Field offsets read from the tracepoints' `format` files at load time
/// (no CO-RE from Rust).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointOffsets {
    /// sched_process_fork: `parent_pid`, `child_pid`.
    pub fork_parent_pid: u32,
    pub fork_child_pid: u32,
    /// sched_process_exec: `__data_loc char[] filename`, `pid`.
    pub exec_filename: u32,
    pub exec_pid: u32,
    /// sys_enter_execve: `argv` (const char *const *).
    pub execve_argv: u32,
    pub _pad: u32,
}
crate::assert_layout!(TracepointOffsets, size = 24, align = 4);
