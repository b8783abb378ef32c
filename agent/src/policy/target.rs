//! Targets: which destinations are intercepted and what protocol they speak.

use std::{fmt, net::IpAddr, str::FromStr};

use serde::{Deserialize, Serialize};

use super::{
    eval::Action,
    upstream::{TlsMode, Upstream},
};

/// Index of a target in its policy; the kernel reports it with each flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct TargetId(pub u32);

// The protocol is part of a flow's identity (below policy); policy names it here.
pub use crate::identity::Protocol;

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

impl Target {
    /// Whether interlock logs in upstream with a credential of the policy's
    /// (a PostgreSQL password; an SSH key or password).
    pub fn injects_credentials(&self) -> bool {
        match self.protocol {
            Protocol::Tcp => false,
            Protocol::Postgres => self.upstream.password.is_some(),
            Protocol::Ssh => self.upstream.password.is_some() || self.upstream.key.is_some(),
        }
    }

    /// The first `match` entry (with its index) that covers more than one
    /// address: a prefix shorter than a whole address, or any address. A
    /// job dialling such a target chooses the server, and may listen on
    /// one of the addresses itself.
    pub fn wide_endpoint(&self) -> Option<(usize, &Endpoint)> {
        self.endpoints
            .iter()
            .enumerate()
            .find(|(_, e)| match &e.address {
                AddressMatch::Any => true,
                AddressMatch::Prefix { addr, len } => *len < if addr.is_ipv4() { 32 } else { 128 },
                // Resolved by the daemon, not chosen by the job.
                AddressMatch::Host(_) => false,
            })
    }

    /// Whether a PostgreSQL target's injected password would go to whatever
    /// server the job dials: a wide `match`, no `upstream.servers` and no
    /// certificate check. `policy check` refuses such targets.
    pub fn password_unpinned(&self) -> Option<(usize, &Endpoint)> {
        if self.protocol != Protocol::Postgres
            || self.upstream.password.is_none()
            || self.upstream.tls == TlsMode::VerifyFull
            || !self.upstream.servers.is_empty()
        {
            return None;
        }
        self.wide_endpoint()
    }

    /// Whether interlock may send this target's injected credentials to the
    /// server at `dialled` (the address the job connected to). `Err` names
    /// the reason the session is refused. SSH servers prove themselves by
    /// their pinned host key and PostgreSQL servers under `verify-full` by
    /// their certificate before any credential is sent; `upstream.servers`,
    /// when given, narrows every protocol to those addresses.
    pub fn credentials_may_go_to(&self, dialled: IpAddr) -> Result<(), String> {
        if !self.injects_credentials() {
            return Ok(());
        }
        let dialled = dialled.to_canonical();
        if !self.upstream.servers.is_empty() {
            if self
                .upstream
                .servers
                .iter()
                .any(|s| s.to_canonical() == dialled)
            {
                return Ok(());
            }
            return Err(format!(
                "target `{}`: {dialled} is not one of `upstream.servers`; the injected credential goes only to those",
                self.name
            ));
        }
        // Refused at policy load; checked again so no path sends it anyway.
        if let Some((_, e)) = self.password_unpinned() {
            return Err(format!(
                "target `{}`: match {} lets the job choose the server and no `upstream.servers` pins where the injected password goes",
                self.name,
                e.address.describe()
            ));
        }
        Ok(())
    }
}

impl Target {
    /// SSH: the user interlock logs in upstream as when the client asked
    /// for `requested`: `upstream.user` whatever was asked, else the asked
    /// user if `upstream.users` lists it. `Err` is the refusal for the
    /// client, naming the target and the users it allows. Without either
    /// (refused at policy load when a credential is injected) nobody is let in.
    pub fn ssh_login_user(&self, requested: &str) -> Result<String, String> {
        if let Some(fixed) = &self.upstream.user {
            return Ok(fixed.clone());
        }
        if self.upstream.users.iter().any(|u| u == requested) {
            return Ok(requested.to_string());
        }
        let shown = crate::text::escape_controls(requested);
        Err(if self.upstream.users.is_empty() {
            format!(
                "target `{}` names no upstream user (`upstream.user` or `upstream.users`); login as `{shown}` refused",
                self.name
            )
        } else {
            format!(
                "login as `{shown}` is not allowed on target `{}` (upstream.users: {})",
                self.name,
                self.upstream.users.join(", ")
            )
        })
    }
}

impl AddressMatch {
    /// The match as written in a policy (`*`, `10.0.0.0/8`, `10.0.0.5`, `db.internal`).
    pub fn describe(&self) -> String {
        match self {
            AddressMatch::Any => "*".into(),
            AddressMatch::Prefix { addr, len } if *len == if addr.is_ipv4() { 32 } else { 128 } => {
                addr.to_string()
            }
            AddressMatch::Prefix { addr, len } => format!("{addr}/{len}"),
            AddressMatch::Host(h) => h.clone(),
        }
    }
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

    fn pg(matches: &[&str], upstream: &str) -> Target {
        Target {
            id: TargetId(0),
            name: "db".into(),
            protocol: Protocol::Postgres,
            endpoints: matches
                .iter()
                .map(|m| Endpoint {
                    address: m.parse().unwrap(),
                    port: 5432,
                })
                .collect(),
            upstream: serde_yaml::from_str(upstream).unwrap(),
            default_action: Action::Allow,
            job_token: JobTokenMode::Optional,
        }
    }

    #[test]
    fn injected_passwords_go_only_to_pinned_servers() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let pw = "password: {env: PW}\n";
        // A range without servers: nowhere (and policy check refuses it).
        let t = pg(&["127.0.0.0/8"], pw);
        assert_eq!(t.password_unpinned().map(|(i, _)| i), Some(0));
        let e = t.credentials_may_go_to(ip("127.0.0.9")).unwrap_err();
        assert!(e.contains("`db`") && e.contains("127.0.0.0/8"), "{e}");
        // Any address is as wide.
        assert!(pg(&["10.0.0.5", "*"], pw).password_unpinned().is_some());
        // Exact addresses and host names pin by themselves.
        let t = pg(&["10.0.0.5", "::1", "db.internal"], pw);
        assert!(t.password_unpinned().is_none());
        assert!(t.credentials_may_go_to(ip("10.0.0.5")).is_ok());
        // servers: only those, v4-mapped or not.
        let t = pg(
            &["127.0.0.0/8"],
            "password: {env: PW}\nservers: [127.0.0.81]\n",
        );
        assert!(t.password_unpinned().is_none());
        assert!(t.credentials_may_go_to(ip("127.0.0.81")).is_ok());
        assert!(t.credentials_may_go_to(ip("::ffff:127.0.0.81")).is_ok());
        let e = t.credentials_may_go_to(ip("127.0.0.82")).unwrap_err();
        assert!(
            e.contains("127.0.0.82 is not one of `upstream.servers`"),
            "{e}"
        );
        // verify-full: the certificate pins the server.
        let t = pg(
            &["10.0.0.0/8"],
            "password: {env: PW}\ntls: verify-full\nca_file: /ca.pem\n",
        );
        assert!(t.credentials_may_go_to(ip("10.1.2.3")).is_ok());
        // Nothing injected, nothing to pin.
        assert!(
            pg(&["*"], "user: u\n")
                .credentials_may_go_to(ip("10.1.2.3"))
                .is_ok()
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
