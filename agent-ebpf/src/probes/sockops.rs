//! sock_ops on ACTIVE_ESTABLISHED: for a socket connect4/6 redirected, record
//! its local address -> socket cookie, which is exactly the peer address the
//! daemon's listener sees on accept.

use agent_common::{
    flow::{PeerKey, refusal},
    target::{ip6_words_to_bytes, v4_mapped},
};
use core::ptr::read_volatile;

use aya_ebpf::{
    bindings::BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, helpers::bpf_get_socket_cookie, macros::sock_ops,
    programs::SockOpsContext,
};

use super::ProbeError;
use crate::maps::{FLOWS, PEERS, count_refusal};

const AF_INET: u32 = 2;

#[sock_ops]
pub fn sockops_established(ctx: SockOpsContext) -> u32 {
    // sock_ops return values are ignored for this op; errors leave no PEERS
    // entry, so the daemon refuses the connection (fail closed).
    let _ = try_sockops(&ctx);
    1
}

fn try_sockops(ctx: &SockOpsContext) -> Result<(), ProbeError> {
    if ctx.op() != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        return Ok(());
    }
    // SAFETY: the context pointer is valid for the program's lifetime.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    if FLOWS.get_ptr(cookie).is_none() {
        return Ok(());
    }
    let ops = ctx.ops;
    // Read every field once with direct loads (the verifier rejects loads
    // through an offset ctx pointer, which LLVM produces for branchy reads).
    // SAFETY: the kernel hands us a valid bpf_sock_ops; these fields are readable.
    let (family, ip4, ip6, port) = unsafe {
        (
            read_volatile(&(*ops).family),
            read_volatile(&(*ops).local_ip4),
            [
                read_volatile(&(*ops).local_ip6[0]),
                read_volatile(&(*ops).local_ip6[1]),
                read_volatile(&(*ops).local_ip6[2]),
                read_volatile(&(*ops).local_ip6[3]),
            ],
            read_volatile(&(*ops).local_port),
        )
    };
    let addr = if family == AF_INET {
        v4_mapped(ip4.to_ne_bytes())
    } else {
        ip6_words_to_bytes(ip6)
    };
    // local_port is in host byte order.
    let key = PeerKey {
        addr,
        port: port as u16,
        _pad: [0; 2],
    };
    PEERS.insert(key, cookie, 0).map_err(|_| {
        // The daemon will refuse this connection as one without a flow;
        // the count says why.
        count_refusal(refusal::PEERS_FULL);
        ProbeError::MapUpdate
    })
}
