//! cgroup/connect4 and cgroup/connect6: if the destination is a target,
//! remember who connected where (FLOWS, keyed by socket cookie, counted
//! against the connecting cgroup's quota) and rewrite the destination to
//! the daemon's listener for the target's protocol.

use agent_common::{
    config::{AgentConfig, FAILURE_OPEN, OWN_CONNECTS_FRESH_NS},
    flow::{FlowInfo, refusal},
    target::{
        ADDR_BITS, PORT_BITS, PROTOCOL_SLOTS, TargetMatch, TargetValue, ip6_words_to_bytes,
        v4_mapped,
    },
};
use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_ktime_get_ns,
    },
    macros::cgroup_sock_addr,
    maps::lpm_trie::Key,
    programs::SockAddrContext,
};

use super::{
    ProbeError,
    flows::{disown, own},
};
use crate::maps::{CONFIG, FLOWS, Refused, TARGETS, count_refusal_of};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_STREAM: u32 = 1;
/// cgroup/connect return codes: 1 lets the connect proceed, 0 fails it with EPERM.
const PROCEED: i32 = 1;
const REFUSE: i32 = 0;
/// What a full hash map's update returns.
const E2BIG: i32 = 7;

/// What to do with one connect.
enum Verdict {
    /// Not ours: untouched.
    Pass,
    /// Recorded; rewrite the destination to this daemon listener port.
    Redirect { to_v4: bool, port: u16 },
}

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // Context fields are read once, with direct loads: the verifier rejects
    // loads through a ctx pointer that LLVM has offset.
    // SAFETY: the kernel hands us a valid bpf_sock_addr; these fields are readable in connect4.
    let (ty, port, ip4) = unsafe {
        (
            read_volatile(&(*sa).type_),
            read_volatile(&(*sa).user_port),
            read_volatile(&(*sa).user_ip4),
        )
    };
    match try_connect(&ctx, AF_INET, ty, port, v4_mapped(ip4.to_ne_bytes())) {
        Ok(Verdict::Pass) => PROCEED,
        Ok(Verdict::Redirect { port, .. }) => {
            // SAFETY: user_ip4/user_port are writable in connect4. One store per
            // field: LLVM may otherwise merge them into an 8-byte store the verifier rejects.
            unsafe {
                write_volatile(&mut (*sa).user_ip4, u32::from_ne_bytes([127, 0, 0, 1]));
                write_volatile(&mut (*sa).user_port, u32::from(port.to_be()));
            }
            PROCEED
        }
        Err(_) => REFUSE,
    }
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: as in connect4; user_ip6 is readable in connect6.
    let (ty, port, w) = unsafe {
        (
            read_volatile(&(*sa).type_),
            read_volatile(&(*sa).user_port),
            [
                read_volatile(&(*sa).user_ip6[0]),
                read_volatile(&(*sa).user_ip6[1]),
                read_volatile(&(*sa).user_ip6[2]),
                read_volatile(&(*sa).user_ip6[3]),
            ],
        )
    };
    match try_connect(&ctx, AF_INET6, ty, port, ip6_words_to_bytes(w)) {
        Ok(Verdict::Pass) => PROCEED,
        Ok(Verdict::Redirect { to_v4, port }) => {
            // v4-mapped destinations go to ::ffff:127.0.0.1 (the IPv4
            // listener), real IPv6 ones to ::1.
            let w3 = if to_v4 {
                u32::from_ne_bytes([127, 0, 0, 1])
            } else {
                u32::from_ne_bytes([0, 0, 0, 1])
            };
            let w2 = if to_v4 {
                u32::from_ne_bytes([0, 0, 0xff, 0xff])
            } else {
                0
            };
            // SAFETY: user_ip6/user_port are writable in connect6; one store per field.
            unsafe {
                write_volatile(&mut (*sa).user_ip6[0], 0);
                write_volatile(&mut (*sa).user_ip6[1], 0);
                write_volatile(&mut (*sa).user_ip6[2], w2);
                write_volatile(&mut (*sa).user_ip6[3], w3);
                write_volatile(&mut (*sa).user_port, u32::from(port.to_be()));
            }
            PROCEED
        }
        // A target matched but we could not record it: refusing is the
        // fail-closed answer; letting it through would bypass the daemon.
        Err(_) => REFUSE,
    }
}

// Inlined: returned out of a call, the Redirect payload is undefined on
// the Pass and Err paths, and the verifier rejects reading it ("!read_ok").
#[inline(always)]
fn try_connect(
    ctx: &SockAddrContext,
    family: u16,
    sock_type: u32,
    user_port: u32,
    addr: [u8; 16],
) -> Result<Verdict, ProbeError> {
    if sock_type != SOCK_STREAM {
        return Ok(Verdict::Pass);
    }
    let cfg = match CONFIG.get(0) {
        Some(c) => *c,
        None => return Ok(Verdict::Pass),
    };
    // No daemon ever configured this instance: nothing to redirect to.
    if cfg.daemon_tgid == 0 {
        return Ok(Verdict::Pass);
    }
    // SAFETY: helpers without preconditions.
    let (pid_tgid, uid_gid, cgroup_id) = unsafe {
        (
            bpf_get_current_pid_tgid(),
            bpf_get_current_uid_gid(),
            bpf_get_current_cgroup_id(),
        )
    };
    // The daemon's own upstream connects are never redirected (no loop),
    // but only while it is alive: a dead daemon's pid may be reused.
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == cfg.daemon_tgid && heartbeat_age(&cfg) <= OWN_CONNECTS_FRESH_NS {
        return Ok(Verdict::Pass);
    }

    // user_port holds htons(port) in its low 16 bits.
    let port_be = (user_port as u16).to_ne_bytes();
    let key = Key::new(
        PORT_BITS + ADDR_BITS,
        TargetMatch {
            port: port_be,
            addr,
        },
    );
    let target: TargetValue = match TARGETS.get(&key) {
        Some(t) => *t,
        None => return Ok(Verdict::Pass),
    };
    let open = cfg.failure_mode == FAILURE_OPEN;
    if open && heartbeat_age(&cfg) > cfg.stale_after_ns {
        return Ok(Verdict::Pass);
    }
    let who = Refused {
        cgroup_id,
        uid: uid_gid as u32,
        tgid,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    // From another network namespace (`unshare -rn`, a container) the
    // rewritten destination is that namespace's loopback, never the
    // daemon: refuse at once instead of recording a flow that cannot be
    // accepted. Not passed in fail-open mode either: the daemon is up.
    // SAFETY: the netns helper takes our context.
    if cfg.netns_cookie != 0
        && unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) } != cfg.netns_cookie
    {
        count_refusal_of(refusal::OTHER_NETNS, &who);
        return Err(ProbeError::OtherNetns);
    }

    let to_v4 = family == AF_INET || is_v4_mapped(&addr);
    let slot = target.protocol as usize;
    let port = match (to_v4, slot < PROTOCOL_SLOTS) {
        (true, true) => cfg.listen_port4[slot],
        (false, true) => cfg.listen_port6[slot],
        (_, false) => 0,
    };
    if port == 0 {
        count_refusal_of(refusal::NO_LISTENER, &who);
        return Err(ProbeError::NoListener);
    }
    let flow = FlowInfo {
        orig_addr: addr,
        orig_port: u16::from_be_bytes(port_be),
        family,
        tgid,
        pid: pid_tgid as u32,
        uid: who.uid,
        gid: (uid_gid >> 32) as u32,
        target_id: target.target_id,
        cgroup_id,
        // SAFETY: helper without preconditions.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        comm: who.comm,
    };
    match record_flow(ctx, &flow, cfg.flow_quota) {
        Ok(()) => Ok(Verdict::Redirect { to_v4, port }),
        // Over its quota, a cgroup is refused in both modes: letting it
        // through would let a job buy a bypass by holding sockets.
        Err(ProbeError::Quota) => {
            count_refusal_of(refusal::FLOW_QUOTA, &who);
            Err(ProbeError::Quota)
        }
        // Fail open means availability first, for a full table too.
        Err(ProbeError::MapFull) if open => {
            count_refusal_of(refusal::FLOWS_FULL_PASSED, &who);
            Ok(Verdict::Pass)
        }
        Err(ProbeError::MapFull) => {
            count_refusal_of(refusal::FLOWS_FULL, &who);
            Err(ProbeError::MapFull)
        }
        Err(e) => {
            count_refusal_of(refusal::MAP_ERROR, &who);
            Err(e)
        }
    }
}

/// Nanoseconds since the daemon's last heartbeat.
fn heartbeat_age(cfg: &AgentConfig) -> u64 {
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    now.saturating_sub(cfg.heartbeat_ns)
}

fn is_v4_mapped(a: &[u8; 16]) -> bool {
    a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff
}

/// Records `flow` under the socket's cookie, counted against its cgroup.
#[inline(always)]
fn record_flow(ctx: &SockAddrContext, flow: &FlowInfo, quota: u32) -> Result<(), ProbeError> {
    // SAFETY: the cookie helper takes our context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    // A socket connecting again after a failed connect is counted afresh
    // (its flow is replaced below).
    disown(cookie);
    own(cookie, flow.cgroup_id, quota)?;
    FLOWS.insert(cookie, flow, 0).map_err(|e| {
        disown(cookie);
        if e == -E2BIG {
            ProbeError::MapFull
        } else {
            ProbeError::MapUpdate
        }
    })
}
