//! cgroup/sock_release: a socket that goes away takes its flow with it.
//! Without this, a connect that failed after connect4/6 recorded it (a
//! bind to a busy port, an unreachable listener) left its FLOWS entry
//! behind until a sweep, and a job looping such connects filled the table
//! for everyone. Flows of sockets still open stay (the daemon may not have
//! accepted them yet); the per-cgroup quota bounds those.

use agent_common::{
    flow::PeerKey,
    target::{ip6_words_to_bytes, v4_mapped},
};
use core::ptr::read_volatile;

use aya_ebpf::{helpers::bpf_get_socket_cookie, macros::cgroup_sock, programs::SockContext};

use super::flows::release_flow;
use crate::maps::{FLOWS, PEERS};

const AF_INET: u32 = 2;
/// sock_release's return value must be 1 (the kernel ignores it).
const DONE: i32 = 1;

#[cgroup_sock(sock_release)]
pub fn sock_release(ctx: SockContext) -> i32 {
    let sk = ctx.sock;
    // Read every field once, first (see connect.rs: the verifier rejects
    // loads through an offset ctx pointer).
    // SAFETY: the kernel hands us a valid bpf_sock; these fields are readable in sock_release.
    let (family, ip4, ip6, port) = unsafe {
        (
            read_volatile(&(*sk).family),
            read_volatile(&(*sk).src_ip4),
            [
                read_volatile(&(*sk).src_ip6[0]),
                read_volatile(&(*sk).src_ip6[1]),
                read_volatile(&(*sk).src_ip6[2]),
                read_volatile(&(*sk).src_ip6[3]),
            ],
            read_volatile(&(*sk).src_port),
        )
    };
    // SAFETY: the cookie helper takes our context.
    let cookie = unsafe { bpf_get_socket_cookie(sk.cast()) };
    if FLOWS.get_ptr(&cookie).is_none() {
        return DONE;
    }
    // A connection the daemon never accepted also leaves PEERS, unless
    // its client port already belongs to another flow.
    let key = PeerKey {
        addr: if family == AF_INET {
            v4_mapped(ip4.to_ne_bytes())
        } else {
            ip6_words_to_bytes(ip6)
        },
        port: port as u16,
        _pad: [0; 2],
    };
    // SAFETY: the value is copied out at once.
    if unsafe { PEERS.get(&key) }.is_some_and(|c| *c == cookie) {
        let _ = PEERS.remove(&key);
    }
    release_flow(cookie);
    DONE
}
