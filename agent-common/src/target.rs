//! The TARGETS map: which destinations are intercepted and for which protocol.
//!
//! One LPM trie serves exact addresses, CIDR prefixes and "any address" for
//! both families: the key data is the destination port followed by the
//! address in IPv6 form (IPv4 as v4-mapped `::ffff:a.b.c.d`). The prefix length
//! always covers the port, so a lookup with the full 144 bits finds the most
//! specific target for that port.

/// Maximum number of target entries.
pub const TARGETS_MAX: u32 = 4096;
/// Bits of the key that hold the port.
pub const PORT_BITS: u32 = 16;
/// Bits of the key that hold the address.
pub const ADDR_BITS: u32 = 128;
/// Bits of a v4-mapped address that are the `::ffff:0:0/96` prefix.
pub const V4_MAPPED_PREFIX_BITS: u32 = 96;

/// The data part of an LPM key (the prefix length is kept by the trie key).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetMatch {
    /// Destination port, network byte order.
    pub port: [u8; 2],
    /// Destination address as IPv6 (IPv4 v4-mapped), network byte order.
    pub addr: [u8; 16],
}
crate::assert_layout!(TargetMatch, size = 18, align = 1);

/// What to do with a matching connect.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetValue {
    /// Index of the target in the daemon's policy.
    pub target_id: u32,
    /// A [`Protocol`] as u32: picks the listener the connect is sent to.
    pub protocol: u32,
}
crate::assert_layout!(TargetValue, size = 8, align = 4);

/// The protocol a target speaks; selects the daemon's listener.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tcp = 0,
    Postgres = 1,
    Ssh = 2,
}

/// Number of listener slots in [`crate::config::AgentConfig`].
pub const PROTOCOL_SLOTS: usize = 4;

impl Protocol {
    /// The protocol for a raw map value; `None` if the value is unknown.
    pub const fn from_u32(v: u32) -> Option<Protocol> {
        match v {
            0 => Some(Protocol::Tcp),
            1 => Some(Protocol::Postgres),
            2 => Some(Protocol::Ssh),
            _ => None,
        }
    }
}

/// The IPv4 address `a` as a v4-mapped IPv6 address.
pub const fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

/// An IPv6 address held as four network-order u32 words (as in the kernel's
/// `user_ip6` / `local_ip6`) as bytes.
pub const fn ip6_words_to_bytes(w: [u32; 4]) -> [u8; 16] {
    let mut a = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let b = w[i].to_ne_bytes();
        a[i * 4] = b[0];
        a[i * 4 + 1] = b[1];
        a[i * 4 + 2] = b[2];
        a[i * 4 + 3] = b[3];
        i += 1;
    }
    a
}
