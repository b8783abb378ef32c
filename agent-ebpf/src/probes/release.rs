//! cgroup/sock_release: a socket that goes away takes its flow with it.
//! Without this, a connect that failed after connect4/6 recorded it (a
//! bind to a busy port, an unreachable listener) left its FLOWS entry
//! behind until a sweep, and a job looping such connects filled the table
//! for everyone. Flows of sockets still open stay (the daemon may not have
//! accepted them yet); the per-cgroup quota bounds those.
//!
//! PEERS is left alone: sock_release may not read the socket's source
//! address (the verifier allows it only in post_bind), and PEERS entries
//! go when the daemon accepts (it accepts every connection in its backlog,
//! closed ones too) or, for a dead daemon's, in its successor's sweep.

use aya_ebpf::{helpers::bpf_get_socket_cookie, macros::cgroup_sock, programs::SockContext};

use super::flows::release_flow;

/// sock_release's return value must be 1 (the kernel ignores it).
const DONE: i32 = 1;

#[cgroup_sock(sock_release)]
pub fn sock_release(ctx: SockContext) -> i32 {
    // SAFETY: the cookie helper takes our context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock.cast()) };
    release_flow(cookie);
    DONE
}
