//! cgroup/sock_release: a socket that goes away gives back its count, and
//! takes its flow with it unless the connection reached the daemon.
//! Without this, a connect that failed after connect4/6 recorded it (a
//! bind to a busy port, an unreachable listener) left its FLOWS entry
//! behind until a sweep, and a job looping such connects filled the table
//! for everyone. A connection that was established stays in FLOWS: the
//! daemon still has it to accept (a client may write and close before it
//! does), and deletes the entry then.

use aya_ebpf::{helpers::bpf_get_socket_cookie, macros::cgroup_sock, programs::SockContext};
use core::ptr::read_volatile;

use super::flows::disown;
use crate::maps::FLOWS;

/// sock_release's return value must be 1 (the kernel ignores it).
const DONE: i32 = 1;
/// TCP states of a socket whose connect never completed.
const TCP_SYN_SENT: u32 = 2;
const TCP_CLOSE: u32 = 7;

#[cgroup_sock(sock_release)]
pub fn sock_release(ctx: SockContext) -> i32 {
    let sk = ctx.sock;
    // SAFETY: the kernel hands us a valid bpf_sock; `state` is readable in sock_release.
    let state = unsafe { read_volatile(&(*sk).state) };
    // SAFETY: the cookie helper takes our context.
    let cookie = unsafe { bpf_get_socket_cookie(sk.cast()) };
    disown(cookie);
    if state == TCP_CLOSE || state == TCP_SYN_SENT {
        let _ = FLOWS.remove(cookie);
    }
    DONE
}
