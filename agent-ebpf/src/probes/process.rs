//! Process lineage tracepoints. Each reports only tasks under a scope cgroup,
//! so the cost stays off the rest of the host.
//!
//! sys_enter_execve copies argv from user memory into PENDING_ARGV (keyed by
//! pid); sched_process_exec (which has the final filename and the pre-exec
//! pid) takes it and emits one Exec event. Fork and exit are emitted directly.

use core::ffi::c_void;

use agent_common::process::{
    ARG_MAX_LEN, ARGS_MAX, ARGV_LEN, FILENAME_LEN, ProcessEvent, ProcessEventKind, SCOPES_MAX,
    TracepointOffsets,
};
use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_ktime_get_ns, bpf_probe_read_user,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_probe_read_kernel_str, bpf_probe_read_user_str,
        },
    },
    macros::tracepoint,
    programs::TracePointContext,
};

use super::ProbeError;
use crate::maps::{ARGV_SCRATCH, LOST_EVENTS, PENDING_ARGV, PROC_EVENTS, SCOPES, TP_OFFSETS};

#[tracepoint(category = "sched", name = "sched_process_fork")]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    let _ = try_fork(&ctx);
    0
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let _ = try_exec(&ctx);
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let _ = try_exit(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_execve")]
pub fn sys_enter_execve(ctx: TracePointContext) -> u32 {
    let _ = try_enter_execve(&ctx);
    0
}

/// Whether the current task is under one of the scope cgroups.
fn in_scope() -> bool {
    let mut i = 0;
    while i < SCOPES_MAX {
        if let Some(s) = SCOPES.get(i) {
            // SAFETY: helper without preconditions beyond a level argument.
            if s.id != 0 && unsafe { bpf_get_current_ancestor_cgroup_id(s.level as i32) } == s.id {
                return true;
            }
        }
        i += 1;
    }
    false
}

/// Records are submitted without waking the daemon until the ring is a
/// quarter full: the daemon drains it before attributing any connection and
/// on a short timer, so a wake-up per fork/exec/exit would only cost CPU.
fn wakeup_flag() -> u64 {
    let used = PROC_EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let size = PROC_EVENTS.query(BPF_RB_RING_SIZE as u64);
    if used >= size / 4 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

fn offsets() -> Result<TracepointOffsets, ProbeError> {
    TP_OFFSETS.get(0).copied().ok_or(ProbeError::MapLookup)
}

/// A zero-initialised event in the ring buffer with the common fields set.
fn new_event(
    kind: ProcessEventKind,
    tgid: u32,
) -> Result<aya_ebpf::maps::ring_buf::RingBufEntry<ProcessEvent>, ProbeError> {
    let Some(mut entry) = PROC_EVENTS.reserve::<ProcessEvent>(0) else {
        // Counted, so the daemon can report the loss instead of it being silent.
        if let Some(lost) = LOST_EVENTS.get_ptr_mut(0) {
            // SAFETY: this CPU's slot of a per-CPU map; no one else writes it now.
            unsafe { *lost += 1 };
        }
        return Err(ProbeError::RingFull);
    };
    let ev = entry.as_mut_ptr();
    let uid_gid = bpf_get_current_uid_gid();
    // SAFETY: `ev` points at a reserved, writable ProcessEvent; writing the
    // zero pattern first makes every field initialised.
    unsafe {
        core::ptr::write_bytes(ev, 0, 1);
        (*ev).kind = kind as u32;
        (*ev).tgid = tgid;
        (*ev).uid = uid_gid as u32;
        (*ev).gid = (uid_gid >> 32) as u32;
        (*ev).ktime_ns = bpf_ktime_get_ns();
        (*ev).cgroup_id = bpf_get_current_cgroup_id();
        (*ev).comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }
    Ok(entry)
}

fn try_fork(ctx: &TracePointContext) -> Result<(), ProbeError> {
    if !in_scope() {
        return Ok(());
    }
    let off = offsets()?;
    // SAFETY: the offset comes from this tracepoint's format file.
    let child: i32 =
        unsafe { ctx.read_at(off.fork_child_pid as usize) }.map_err(|_| ProbeError::Read)?;
    let mut entry = new_event(ProcessEventKind::Fork, child as u32)?;
    // SAFETY: writing into the reserved event.
    unsafe { (*entry.as_mut_ptr()).parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32 };
    entry.submit(wakeup_flag());
    Ok(())
}

fn try_exit(ctx: &TracePointContext) -> Result<(), ProbeError> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let off = offsets()?;
    let whole_process = if off.exit_group_dead != 0 {
        // SAFETY: the offset comes from this tracepoint's format file.
        unsafe { ctx.read_at::<u8>(off.exit_group_dead as usize) }.map_err(|_| ProbeError::Read)?
            != 0
    } else {
        // Older kernels: the leader's exit stands for the process.
        pid_tgid as u32 == tgid
    };
    if !whole_process || !in_scope() {
        return Ok(());
    }
    new_event(ProcessEventKind::Exit, tgid)?.submit(wakeup_flag());
    Ok(())
}

fn try_enter_execve(ctx: &TracePointContext) -> Result<(), ProbeError> {
    if !in_scope() {
        return Ok(());
    }
    let off = offsets()?;
    let pid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the offset comes from this tracepoint's format file.
    let argv: *const u64 =
        unsafe { ctx.read_at(off.execve_argv as usize) }.map_err(|_| ProbeError::Read)?;
    let buf = ARGV_SCRATCH.get_ptr_mut(0).ok_or(ProbeError::MapLookup)?;
    let mut len: usize = 0;
    let mut i = 0;
    while i < ARGS_MAX {
        // SAFETY: reading a user pointer with the fault-tolerant helper.
        let arg = match unsafe { bpf_probe_read_user(argv.wrapping_add(i as usize)) } {
            Ok(p) if p != 0 => p,
            _ => break,
        };
        if len >= ARGV_LEN {
            break;
        }
        // Masking keeps the destination provably inside `data` for the verifier.
        let at = len & (ARGV_LEN - 1);
        // SAFETY: `buf` is this CPU's scratch entry; at + ARG_MAX_LEN <= data.len().
        let n = unsafe {
            bpf_probe_read_user_str(
                (*buf).data.as_mut_ptr().add(at) as *mut c_void,
                ARG_MAX_LEN as u32,
                arg as *const c_void,
            )
        };
        if n <= 0 {
            break;
        }
        len = at + n as usize;
        i += 1;
    }
    // SAFETY: as above.
    unsafe {
        (*buf).len = if len > ARGV_LEN {
            ARGV_LEN as u32
        } else {
            len as u32
        }
    };
    // By reference: by value would copy 776 bytes onto the 512-byte BPF stack.
    #[allow(clippy::needless_borrows_for_generic_args)]
    // SAFETY: `buf` is a valid map value pointer; insert copies it.
    PENDING_ARGV
        .insert(pid, unsafe { &*buf }, 0)
        .map_err(|_| ProbeError::MapUpdate)
}

fn try_exec(ctx: &TracePointContext) -> Result<(), ProbeError> {
    if !in_scope() {
        return Ok(());
    }
    let off = offsets()?;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: the offsets come from this tracepoint's format file.
    let (loc, old_pid): (u32, i32) = unsafe {
        (
            ctx.read_at(off.exec_filename as usize)
                .map_err(|_| ProbeError::Read)?,
            ctx.read_at(off.exec_old_pid as usize)
                .map_err(|_| ProbeError::Read)?,
        )
    };
    let mut entry = new_event(ProcessEventKind::Exec, tgid)?;
    let ev = entry.as_mut_ptr();
    // __data_loc: low 16 bits offset from the start of the record, high 16 length.
    let name_off = (loc & 0xffff) as usize;
    // SAFETY: the filename lies inside this tracepoint record; the copy is bounded by FILENAME_LEN.
    unsafe {
        bpf_probe_read_kernel_str(
            (*ev).filename.as_mut_ptr() as *mut c_void,
            FILENAME_LEN as u32,
            (ctx.as_ptr() as *const u8).wrapping_add(name_off) as *const c_void,
        );
    }
    let key = old_pid as u32;
    if let Some(p) = PENDING_ARGV.get_ptr(key) {
        // SAFETY: `p` is a valid map value; the event has room for ARGV_LEN bytes.
        unsafe {
            let n = (*p).len;
            (*ev).argv_len = if n > ARGV_LEN as u32 {
                ARGV_LEN as u32
            } else {
                n
            };
            core::ptr::copy_nonoverlapping((*p).data.as_ptr(), (*ev).argv.as_mut_ptr(), ARGV_LEN);
        }
        let _ = PENDING_ARGV.remove(key);
    }
    entry.submit(wakeup_flag());
    Ok(())
}
