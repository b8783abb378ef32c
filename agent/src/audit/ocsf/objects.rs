//! OCSF 1.3.0 objects, as far as interlock fills them. Optional
//! attributes are left out when unknown (never `null`).

use std::net::SocketAddr;

use serde::Serialize;

use super::{Enum, OCSF_VERSION};
use crate::{
    identity::FlowIdentity,
    identity::{LocalPeer, ProcessIdentity},
};

/// The unknown-uid stand-in of identities (never shown as a uid).
const UNKNOWN_ID: u32 = u32::MAX;

/// `metadata`: product, schema version, and the event's own ids.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Metadata {
    pub(crate) version: &'static str,
    pub(crate) product: Product,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) correlation_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sequence: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) log_name: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) profiles: Vec<&'static str>,
}

impl Metadata {
    /// Only product and schema version (the audit record's compact form).
    pub(crate) fn compact() -> Metadata {
        Metadata {
            version: OCSF_VERSION,
            product: Product::interlock(),
            ..Metadata::default()
        }
    }
}

/// `product` (also `app` of Application Lifecycle).
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Product {
    pub(crate) name: &'static str,
    pub(crate) vendor_name: &'static str,
    pub(crate) version: &'static str,
}

impl Product {
    pub(crate) fn interlock() -> Product {
        Product {
            name: "interlock",
            vendor_name: "interlock",
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// `device`: the host the daemon runs on.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Device {
    pub(crate) hostname: String,
    pub(crate) type_id: u32,
    #[serde(rename = "type")]
    pub(crate) type_name: &'static str,
}

impl Device {
    pub(crate) fn host(hostname: &str) -> Device {
        Device {
            hostname: hostname.to_string(),
            // OCSF's device types describe hardware, which we do not know.
            type_id: 0,
            type_name: "Unknown",
        }
    }
}

/// `user`.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct User {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) groups: Vec<Group>,
}

/// One of a user's `groups`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Group {
    pub(crate) name: String,
}

impl User {
    /// A user by uid and name; `None` if neither is known.
    pub(crate) fn of(uid: u32, name: Option<&str>) -> Option<User> {
        let uid = (uid != UNKNOWN_ID).then(|| uid.to_string());
        (uid.is_some() || name.is_some()).then(|| User {
            uid,
            name: name.map(str::to_string),
            groups: Vec::new(),
        })
    }

    /// A control-socket caller, with its groups.
    pub(crate) fn peer(p: &LocalPeer) -> User {
        User {
            uid: Some(p.uid.to_string()),
            name: p.user.clone(),
            groups: p.groups.iter().map(|g| Group { name: g.clone() }).collect(),
        }
    }
}

/// `file`: an executable or a path a command named.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct File {
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) type_id: u32,
    #[serde(rename = "type")]
    pub(crate) type_name: &'static str,
}

impl File {
    pub(crate) fn regular(path: &str) -> File {
        File {
            name: path.rsplit('/').next().unwrap_or(path).to_string(),
            path: path.to_string(),
            type_id: 1,
            type_name: "Regular File",
        }
    }
}

/// `process`.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Process {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cmd_line: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) file: Option<File>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<User>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) parent_process: Option<Box<Process>>,
    /// Executables of the ancestors, parent first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) lineage: Vec<String>,
}

fn cmd_line(argv: &[String]) -> Option<String> {
    (!argv.is_empty()).then(|| argv.join(" "))
}

impl Process {
    /// The process of an identity, with its parent and lineage.
    pub(crate) fn of(p: &ProcessIdentity) -> Process {
        let parent = p.ancestry.first().map(|a| {
            Box::new(Process {
                pid: Some(a.tgid),
                cmd_line: cmd_line(&a.argv),
                file: a.exe.as_deref().map(File::regular),
                name: a
                    .exe
                    .as_deref()
                    .and_then(|e| e.rsplit('/').next())
                    .map(str::to_string),
                ..Process::default()
            })
        });
        Process {
            pid: Some(p.tgid),
            tid: Some(p.pid),
            name: (!p.comm.is_empty()).then(|| p.comm.clone()),
            cmd_line: cmd_line(&p.argv),
            file: p.exe.as_deref().map(File::regular),
            user: User::of(p.uid, p.user.as_deref()),
            parent_process: parent.or_else(|| {
                (p.ppid != 0).then(|| {
                    Box::new(Process {
                        pid: Some(p.ppid),
                        ..Process::default()
                    })
                })
            }),
            lineage: p.ancestry.iter().filter_map(|a| a.exe.clone()).collect(),
        }
    }

    /// interlock's own process, as its lifecycle events describe it.
    pub(crate) fn daemon(pid: u32, uid: u32, exe: Option<&str>, argv: &[String]) -> Process {
        Process {
            pid: (pid != 0).then_some(pid),
            name: Some("interlock".into()),
            cmd_line: cmd_line(argv),
            file: exe.map(File::regular),
            user: User::of(uid, None),
            ..Process::default()
        }
    }
}

/// `actor`: who did it. OCSF wants at least one of its attributes.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Actor {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) process: Option<Process>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<User>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) app_name: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) session: Option<Session>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) idp: Option<Idp>,
}

/// `idp`: the identity provider that vouches for the actor's user.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Idp {
    /// The policy's name of the issuer.
    pub(crate) name: String,
    /// The issuer URL (`iss`).
    pub(crate) uid: String,
}

impl Actor {
    /// The process that made an intercepted connection, and its user: the verified job
    /// token's subject (with its groups, and the issuer as `idp`) when the session has one,
    /// else the process's local user.
    pub(crate) fn of(f: &FlowIdentity) -> Actor {
        let process = Process::of(&f.process);
        let job = f
            .job_token
            .as_ref()
            .filter(|j| j.error.is_none())
            .and_then(|j| Some((j, j.sub.as_ref()?, j.issuer.as_ref()?, j.iss.as_ref()?)));
        match job {
            Some((j, sub, issuer, iss)) => Actor {
                user: Some(User {
                    uid: Some(sub.clone()),
                    name: Some(sub.clone()),
                    groups: j.groups.iter().map(|g| Group { name: g.clone() }).collect(),
                }),
                idp: Some(Idp {
                    name: issuer.clone(),
                    uid: iss.clone(),
                }),
                process: Some(process),
                ..Actor::default()
            },
            None => Actor {
                user: process.user.clone(),
                process: Some(process),
                ..Actor::default()
            },
        }
    }

    /// interlock itself (events about its own log, sinks and policy).
    pub(crate) fn interlock() -> Actor {
        Actor {
            app_name: Some("interlock"),
            ..Actor::default()
        }
    }

    /// Known only by session id (the session's start is not at hand).
    pub(crate) fn session(id: &str) -> Actor {
        Actor {
            session: Some(Session {
                uid: id.to_string(),
            }),
            ..Actor::default()
        }
    }
}

/// `session` (of an actor).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Session {
    pub(crate) uid: String,
}

/// `src_endpoint` / `dst_endpoint`.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Endpoint {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) uid: Option<String>,
}

impl Endpoint {
    pub(crate) fn addr(a: SocketAddr) -> Endpoint {
        Endpoint {
            ip: Some(a.ip().to_string()),
            port: Some(a.port()),
            ..Endpoint::default()
        }
    }

    /// Known only by name (a target whose session start is not at hand).
    pub(crate) fn named(name: &str) -> Endpoint {
        Endpoint {
            name: Some(name.to_string()),
            ..Endpoint::default()
        }
    }
}

/// `connection_info`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ConnectionInfo {
    pub(crate) uid: String,
    pub(crate) protocol_name: &'static str,
    pub(crate) direction_id: u32,
    pub(crate) direction: &'static str,
}

impl ConnectionInfo {
    /// An outbound TCP connection of session `id`.
    pub(crate) fn outbound(id: &str) -> ConnectionInfo {
        ConnectionInfo {
            uid: id.to_string(),
            protocol_name: "tcp",
            direction_id: 2,
            direction: "Outbound",
        }
    }
}

/// `traffic`: bytes from the source (out) and back (in).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Traffic {
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) bytes: u64,
}

/// `database` of Datastore Activity.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Database {
    pub(crate) name: String,
    pub(crate) type_id: u32,
    #[serde(rename = "type")]
    pub(crate) type_name: &'static str,
}

impl Database {
    /// A PostgreSQL target, named by the policy's target name.
    pub(crate) fn postgres(target: &str) -> Database {
        Database {
            name: target.to_string(),
            type_id: 1,
            type_name: "Relational",
        }
    }
}

/// `query_info`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct QueryInfo {
    pub(crate) query_string: String,
    pub(crate) uid: String,
}

/// `firewall_rule`: the policy rule that decided.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Rule {
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) type_name: &'static str,
}

impl Rule {
    /// Rule `name`, or the target's default.
    pub(crate) fn named(name: Option<&str>) -> Rule {
        Rule {
            name: name.unwrap_or("default").to_string(),
            type_name: "interlock policy rule",
        }
    }
}

/// The security-control verdict: `action_id` and `disposition_id` pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) action: Enum,
    pub(crate) disposition: Enum,
}
