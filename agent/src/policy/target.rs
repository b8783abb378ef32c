//! Targets: which destinations are intercepted and what protocol they speak.

use std::{fmt, net::IpAddr, str::FromStr};

use serde::{Deserialize, Serialize};

use super::{eval::Action, upstream::Upstream};

/// Index of a target in its policy; the kernel reports it with each flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct TargetId(pub u32);

/// The protocol a target speaks (selects the daemon's handler).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// A transparent byte relay with session start/end events.
    Tcp,
    /// The PostgreSQL proxy: every statement decided and recorded.
    Postgres,
    /// The SSH proxy: every exec, shell, sftp operation decided and recorded.
    Ssh,
}

impl Protocol {
    /// Every protocol the daemon can serve, in listener order.
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Postgres, Protocol::Ssh];

    /// The kernel's view of the protocol (listener slot).
    pub fn kernel(self) -> agent_common::target::Protocol {
        match self {
            Protocol::Tcp => agent_common::target::Protocol::Tcp,
            Protocol::Postgres => agent_common::target::Protocol::Postgres,
            Protocol::Ssh => agent_common::target::Protocol::Ssh,
        }
    }

    /// The protocol's name as written in policy files.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Postgres => "postgres",
            Protocol::Ssh => "ssh",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which addresses an endpoint covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressMatch {
    /// Every address, IPv4 and IPv6.
    Any,
    /// An address prefix (`10.0.0.0/8`, `::1/128`; a bare address is /32 or /128).
    Prefix { addr: IpAddr, len: u8 },
    /// A host name, resolved at start and re-resolved periodically.
    Host(String),
}

impl FromStr for AddressMatch {
    type Err = String;

    /// Parses `*`, an address, `address/len`, or a host name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("an empty address; write `*` for any address".into());
        }
        if s == "*" {
            return Ok(AddressMatch::Any);
        }
        let (addr_part, len_part) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        match addr_part.parse::<IpAddr>() {
            Ok(addr) => {
                let max = if addr.is_ipv4() { 32 } else { 128 };
                let len =
                    match len_part {
                        None => max,
                        Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(|| {
                            format!("prefix length `{l}` in `{s}` is not 0..={max}")
                        })?,
                    };
                Ok(AddressMatch::Prefix { addr, len })
            }
            Err(_) if len_part.is_some() => Err(format!("`{s}` is not an address prefix")),
            Err(_) if is_host_name(s) => Ok(AddressMatch::Host(s.to_ascii_lowercase())),
            Err(_) => Err(format!(
                "`{s}` is neither an address, a prefix nor a host name"
            )),
        }
    }
}

/// RFC 1123 labels; a last label of digits only (`300.1.1.1`) is a
/// malformed address, never a host name (RFC 3696 §2).
fn is_host_name(s: &str) -> bool {
    let numeric_tld = s
        .rsplit('.')
        .next()
        .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()));
    !numeric_tld
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl<'de> Deserialize<'de> for AddressMatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::scalar::parse_str(d, str::parse)
    }
}

/// One destination pattern of a target.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Which addresses; `*` (the default) is any address.
    #[serde(default = "any_address")]
    pub address: AddressMatch,
    /// The destination port.
    pub port: u16,
}

fn any_address() -> AddressMatch {
    AddressMatch::Any
}

/// A named set of destinations that are intercepted and handled by one protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Target {
    pub id: TargetId,
    pub name: String,
    pub protocol: Protocol,
    pub endpoints: Vec<Endpoint>,
    /// How the daemon reaches the real server (not for `tcp`).
    pub upstream: Upstream,
    /// What happens to sessions no rule decides.
    pub default_action: Action,
    /// Whether sessions need a verified job token.
    pub job_token: JobTokenMode,
}

/// Whether a target's sessions need a verified job token (`job_token:` of a target). A token
/// that is presented and does not verify refuses the session either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobTokenMode {
    /// Verified when one is found or presented; sessions without one proceed.
    #[default]
    Optional,
    /// A session without a verified token is refused.
    Required,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_address_form() {
        assert_eq!("*".parse::<AddressMatch>(), Ok(AddressMatch::Any));
        assert_eq!(
            "127.0.0.2".parse::<AddressMatch>(),
            Ok(AddressMatch::Prefix {
                addr: "127.0.0.2".parse().unwrap(),
                len: 32
            })
        );
        assert_eq!(
            "10.0.0.0/8".parse::<AddressMatch>(),
            Ok(AddressMatch::Prefix {
                addr: "10.0.0.0".parse().unwrap(),
                len: 8
            })
        );
        assert_eq!(
            "::1".parse::<AddressMatch>(),
            Ok(AddressMatch::Prefix {
                addr: "::1".parse().unwrap(),
                len: 128
            })
        );
        assert_eq!(
            "DB.internal".parse::<AddressMatch>(),
            Ok(AddressMatch::Host("db.internal".into()))
        );
    }

    #[test]
    fn rejects_bad_addresses_with_a_reason() {
        for (bad, needle) in [
            ("10.0.0.0/33", "prefix length"),
            ("::/129", "prefix length"),
            ("not a host", "neither"),
            ("foo/8", "not an address prefix"),
            ("", "empty"),
            ("-bad.example", "neither"),
            ("300.1.1.1", "neither"),
            ("10.0.0", "neither"),
        ] {
            let err = bad.parse::<AddressMatch>().unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }
}
