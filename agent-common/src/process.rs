//! Process lineage: the sched tracepoints report fork, exec (with argv
//! captured at sys_enter_execve) and exit over PROC_EVENTS, for tasks under
//! the scope cgroups only.

/// Bytes of argv captured per exec (NUL separated, truncated).
pub const ARGV_LEN: usize = 512;
/// At most this many bytes of one argument are copied.
pub const ARG_MAX_LEN: usize = ARGV_LEN / 2;
/// At most this many arguments are copied.
pub const ARGS_MAX: u32 = 24;
/// Bytes of the exec'd filename captured.
pub const FILENAME_LEN: usize = 256;
/// Ring buffer size in bytes.
pub const PROC_EVENTS_BYTES: u32 = 1 << 22;
/// Maximum number of scope cgroups.
pub const SCOPES_MAX: u32 = 16;
/// Execs in flight (between sys_enter_execve and sched_process_exec).
pub const PENDING_EXECS_MAX: u32 = 4096;

/// Kind of a [`ProcessEvent`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessEventKind {
    Fork = 1,
    Exec = 2,
    Exit = 3,
}

impl ProcessEventKind {
    /// The kind for a raw value; `None` if unknown.
    pub const fn from_u32(v: u32) -> Option<ProcessEventKind> {
        match v {
            1 => Some(ProcessEventKind::Fork),
            2 => Some(ProcessEventKind::Exec),
            3 => Some(ProcessEventKind::Exit),
            _ => None,
        }
    }
}

/// One process lineage event.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessEvent {
    /// A [`ProcessEventKind`] as u32.
    pub kind: u32,
    /// Fork: the child's pid (a thread id when a thread was created: the
    /// daemon checks); exec/exit: the task's tgid.
    pub tgid: u32,
    /// Fork: the parent's tgid; otherwise 0.
    pub parent_tgid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Exec: bytes of `argv` that are valid.
    pub argv_len: u32,
    pub ktime_ns: u64,
    pub cgroup_id: u64,
    pub comm: [u8; 16],
    /// Exec: the filename, NUL terminated or truncated.
    pub filename: [u8; FILENAME_LEN],
    /// Exec: argv, NUL separated.
    pub argv: [u8; ARGV_LEN],
}
crate::assert_layout!(ProcessEvent, size = 824, align = 8);

/// argv copied at sys_enter_execve, waiting for sched_process_exec.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PendingArgv {
    pub len: u32,
    pub _pad: u32,
    /// One extra half so a string copy at any offset below ARGV_LEN stays in bounds.
    pub data: [u8; ARGV_LEN + ARG_MAX_LEN],
}
crate::assert_layout!(PendingArgv, size = 776, align = 4);

/// A scope cgroup: tracepoints report a task if its ancestor at `level` is `id`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScopeEntry {
    /// cgroup v2 id (the directory's inode number); 0 = unused slot.
    pub id: u64,
    /// Depth below the cgroup v2 root (the root is 0).
    pub level: u32,
    pub _pad: u32,
}
crate::assert_layout!(ScopeEntry, size = 16, align = 8);

/// Tracepoint field offsets read from the `format` files at load time (no
/// CO-RE from Rust). 0 means "field not present on this kernel".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointOffsets {
    /// sched_process_fork: `pid_t child_pid`.
    pub fork_child_pid: u32,
    /// sched_process_exec: `__data_loc char[] filename`.
    pub exec_filename: u32,
    /// sched_process_exec: `pid_t old_pid` (the pid before a non-leader thread's exec).
    pub exec_old_pid: u32,
    /// sched_process_exit: `bool group_dead` (whole process gone).
    pub exit_group_dead: u32,
    /// sys_enter_execve: `const char *const * argv`.
    pub execve_argv: u32,
    pub _pad: u32,
}
crate::assert_layout!(TracepointOffsets, size = 24, align = 4);
