//! The policy file format (versioned YAML) and its validation.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::{
    PolicyError,
    eval::Action,
    identity::{IdentityPolicy, RawIdentity},
    locate::{
        self,
        Step::{self, Index, Key},
    },
    rule::{RawRule, Rule},
    target::{Endpoint, JobTokenMode, Protocol, Target, TargetId},
    upstream::{ClientAuthMethod, PasswordAuth, TlsMode, Upstream},
    web::{RawWeb, WebPolicy},
};
use crate::identity::CI_ALLOWLIST;

/// The only policy format version this build reads.
const VERSION: u32 = 1;

/// A validated policy.
#[derive(Clone, Debug)]
pub struct Policy {
    path: PathBuf,
    targets: Vec<Target>,
    rules: Vec<Rule>,
    identity: IdentityPolicy,
    web: Option<WebPolicy>,
}

impl Policy {
    /// The approvals page, if the policy configures one.
    pub fn web(&self) -> Option<&WebPolicy> {
        self.web.as_ref()
    }

    /// Trusted runners, token variables and issuers.
    pub fn identity(&self) -> &IdentityPolicy {
        &self.identity
    }

    /// The job token verifier of this policy's issuers.
    pub fn verifier(&self) -> &crate::oidc::Verifier {
        &self.identity.verifier.0
    }

    /// The file this policy came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All targets, indexed by [`TargetId`].
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// The target with this id; `None` if the id is not from this policy.
    pub fn target(&self, id: TargetId) -> Option<&Target> {
        self.targets.iter().find(|t| t.id == id)
    }

    /// The target called `name`.
    pub fn target_named(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// What `policy check` warns about: targets whose injected password
    /// goes to a server interlock does not authenticate (no `tls:
    /// verify-full`), or that answer cleartext or md5 requests.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for t in &self.targets {
            if t.protocol != Protocol::Postgres || t.upstream.password.is_none() {
                continue;
            }
            let up = &t.upstream;
            if up.tls != TlsMode::VerifyFull {
                out.push(format!(
                    "target `{}`: the injected password is sent without checking the server's certificate (tls: {}); anyone who can intercept or impersonate the server's address can run SCRAM with it, or read it when cleartext or md5 is allowed: use `tls: verify-full` with `ca_file`",
                    t.name,
                    up.tls.name()
                ));
            }
            for m in [PasswordAuth::Md5, PasswordAuth::Cleartext] {
                if up.password_auth.contains(&m) {
                    out.push(format!(
                        "target `{}`: `password_auth` allows {}: the server receives {}",
                        t.name,
                        m.name(),
                        match m {
                            PasswordAuth::Cleartext => "the password itself",
                            _ =>
                                "an md5 hash that logs in as the role wherever it is stored as md5",
                        }
                    ));
                }
            }
        }
        out
    }

    /// Gives targets that `old` also has the ids they had there, and new
    /// targets ids `old` never used. The kernel reports target ids with
    /// each flow, so a flow recorded before a reload must still name its
    /// target after it.
    pub fn keep_ids_of(&mut self, old: &Policy) {
        let mut next = old.targets.iter().map(|t| t.id.0 + 1).max().unwrap_or(0);
        for t in &mut self.targets {
            match old.target_named(&t.name) {
                Some(o) => t.id = o.id,
                None => {
                    t.id = TargetId(next);
                    next += 1;
                }
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: u32,
    #[serde(default)]
    identity: RawIdentity,
    #[serde(default)]
    targets: Vec<RawTarget>,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    web: Option<RawWeb>,
}

/// What a target does with sessions no rule decides.
#[derive(Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum DefaultAction {
    #[default]
    Allow,
    Block,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: String,
    protocol: Protocol,
    #[serde(rename = "match")]
    endpoints: Vec<Endpoint>,
    #[serde(default)]
    upstream: Option<Upstream>,
    #[serde(default)]
    default: DefaultAction,
    #[serde(default)]
    job_token: JobTokenMode,
}

/// Reads and validates the policy file at `path`.
///
/// # Errors
/// [`PolicyError::Read`] if the file cannot be read, [`PolicyError::Syntax`]
/// (with line and column) for YAML and type errors and for well-formed
/// files that make no sense.
pub fn load(path: &Path) -> Result<Policy, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Validates policy `text`; `path` is only used in errors.
///
/// # Errors
/// As [`load`], without [`PolicyError::Read`].
pub fn parse(path: &Path, text: &str) -> Result<Policy, PolicyError> {
    let raw: RawPolicy = serde_yaml::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        PolicyError::Syntax {
            path: path.to_owned(),
            line,
            column,
            message: strip_location(&e),
        }
    })?;
    // Semantic errors name the node they are about (see `locate`).
    let at = |node: &[Step<'_>], message: String| {
        let (line, column) = locate::position(text, node);
        PolicyError::Syntax {
            path: path.to_owned(),
            line,
            column,
            message,
        }
    };
    if raw.version != VERSION {
        return Err(at(
            &[Key("version")],
            format!(
                "version {} is not supported (this interlock reads version {VERSION})",
                raw.version
            ),
        ));
    }
    let identity = raw.identity.validate().map_err(|(node, m)| at(&node, m))?;
    let web = match raw.web {
        Some(w) => Some(w.validate().map_err(|(node, m)| at(&node, m))?),
        None => None,
    };
    let has_issuers = identity.verifier.0.issuers().next().is_some();
    let mut names = HashSet::new();
    let mut targets = Vec::with_capacity(raw.targets.len());
    for (i, t) in raw.targets.into_iter().enumerate() {
        let here = |rest: &[Step<'_>], message: String| {
            let mut node = vec![Key("targets"), Index(i)];
            node.extend_from_slice(rest);
            at(&node, message)
        };
        if t.name.trim().is_empty() {
            return Err(here(
                &[Key("name")],
                format!("target #{} has an empty name", i + 1),
            ));
        }
        if !names.insert(t.name.clone()) {
            return Err(here(
                &[Key("name")],
                format!("target `{}` is defined twice", t.name),
            ));
        }
        if t.endpoints.is_empty() {
            return Err(here(
                &[Key("match")],
                format!("target `{}` has an empty `match` list", t.name),
            ));
        }
        if let Some((j, e)) = t.endpoints.iter().enumerate().find(|(_, e)| e.port == 0) {
            return Err(here(
                &[Key("match"), Index(j), Key("port")],
                format!(
                    "target `{}`: port 0 in match {:?} is not a destination port",
                    t.name, e.address
                ),
            ));
        }
        if t.protocol == Protocol::Tcp && t.upstream.is_some() {
            return Err(here(
                &[Key("upstream")],
                format!(
                    "target `{}`: protocol tcp relays bytes and takes no `upstream` settings",
                    t.name
                ),
            ));
        }
        if let Some(up) = &t.upstream
            && up.tls == super::TlsMode::VerifyFull
            && up.ca_file.is_none()
        {
            return Err(here(
                &[Key("upstream"), Key("tls")],
                format!(
                    "target `{}`: tls verify-full needs `upstream.ca_file`",
                    t.name
                ),
            ));
        }
        if let Some(up) = &t.upstream
            && t.protocol != Protocol::Ssh
            && (!up.users.is_empty() || !up.env.is_empty())
        {
            let key = if up.users.is_empty() { "env" } else { "users" };
            return Err(here(
                &[Key("upstream"), Key(key)],
                format!("target `{}`: `upstream.{key}` is for protocol ssh", t.name),
            ));
        }
        if let Some(up) = &t.upstream
            && up.password_auth.is_empty()
        {
            return Err(here(
                &[Key("upstream"), Key("password_auth")],
                format!(
                    "target `{}`: `password_auth` is empty; list scram, md5 or cleartext",
                    t.name
                ),
            ));
        }
        let id = u32::try_from(i).map_err(|_| here(&[], "too many targets".into()))?;
        let target = Target {
            id: TargetId(id),
            name: t.name.clone(),
            protocol: t.protocol,
            endpoints: t.endpoints.clone(),
            upstream: t.upstream.clone().unwrap_or_default(),
            default_action: Action::Allow,
            job_token: t.job_token,
        };
        if !target.upstream.servers.is_empty() && !target.injects_credentials() {
            return Err(here(
                &[Key("upstream"), Key("servers")],
                format!(
                    "target `{}`: `upstream.servers` says where injected credentials may go, and this target injects none",
                    t.name
                ),
            ));
        }
        // Fail closed: the job picks the address it dials within a range,
        // and can listen on one; the password must not follow it there.
        if let Some((j, e)) = target.password_unpinned() {
            return Err(here(
                &[Key("match"), Index(j)],
                format!(
                    "target `{}`: an injected password with match {} would go to whichever server in it the job dials (the job can listen on one): list the real servers in `upstream.servers`, match exact addresses or host names only, or verify the server with `tls: verify-full`",
                    t.name,
                    e.address.describe()
                ),
            ));
        }
        if t.protocol == Protocol::Ssh {
            let up = t.upstream.as_ref();
            if up.is_none_or(|u| u.key.is_none() && u.password.is_none()) {
                return Err(here(
                    &[Key("upstream")],
                    format!(
                        "target `{}`: protocol ssh needs `upstream.key` or `upstream.password` (interlock logs in upstream; the job never holds the credential)",
                        t.name
                    ),
                ));
            }
            // The job must never choose whom the injected credential logs in
            // as (`ssh root@host` would otherwise be root with the deploy key).
            match up {
                Some(u) if u.user.is_some() && !u.users.is_empty() => {
                    return Err(here(
                        &[Key("upstream"), Key("users")],
                        format!(
                            "target `{}`: give `upstream.user` (one fixed user) or `upstream.users` (the users a client may ask for), not both",
                            t.name
                        ),
                    ));
                }
                Some(u) if u.user.is_none() && u.users.is_empty() => {
                    return Err(here(
                        &[Key("upstream")],
                        format!(
                            "target `{}`: an injected SSH credential needs `upstream.user` (the user interlock logs in as) or `upstream.users` (the users a client may ask for); otherwise the job would choose, e.g. `ssh root@...`",
                            t.name
                        ),
                    ));
                }
                _ => {}
            }
            if let Some((j, bad)) = up
                .iter()
                .flat_map(|u| u.env.iter())
                .enumerate()
                .find(|(_, e)| globset::Glob::new(e).is_err() || e.is_empty())
            {
                return Err(here(
                    &[Key("upstream"), Key("env"), Index(j)],
                    format!(
                        "target `{}`: `{bad}` in `upstream.env` is not a variable name or glob",
                        t.name
                    ),
                ));
            }
            if up.is_none_or(|u| u.host_key.is_none() && u.known_hosts.is_none()) {
                return Err(here(
                    &[Key("upstream")],
                    format!(
                        "target `{}`: protocol ssh needs `upstream.host_key` or `upstream.known_hosts`; an unverified upstream host key is never accepted",
                        t.name
                    ),
                ));
            }
        }
        let asks_token = t
            .upstream
            .as_ref()
            .is_some_and(|u| u.client_auth.contains(&ClientAuthMethod::JobToken));
        if (asks_token || t.job_token == JobTokenMode::Required) && !has_issuers {
            let node: &[Step<'_>] = if asks_token {
                &[Key("upstream"), Key("client_auth")]
            } else {
                &[Key("job_token")]
            };
            return Err(here(
                node,
                format!(
                    "target `{}` uses job tokens, but `identity.issuers` names no issuer to verify them",
                    t.name
                ),
            ));
        }
        if asks_token {
            let up = t.upstream.as_ref();
            if t.protocol == Protocol::Tcp {
                return Err(here(
                    &[Key("upstream"), Key("client_auth")],
                    format!(
                        "target `{}`: tcp targets cannot ask for a job token",
                        t.name
                    ),
                ));
            }
            if t.protocol == Protocol::Postgres && up.is_none_or(|u| u.password.is_none()) {
                return Err(here(
                    &[Key("upstream"), Key("client_auth")],
                    format!(
                        "target `{}`: with `client_auth: [job_token]` the client's password is its job token, so interlock must log in upstream itself: give `upstream.password`",
                        t.name
                    ),
                ));
            }
            if t.protocol == Protocol::Ssh
                && up.is_some_and(|u| u.client_auth.contains(&ClientAuthMethod::Password))
            {
                return Err(here(
                    &[Key("upstream"), Key("client_auth")],
                    format!(
                        "target `{}`: `password` and `job_token` both take the client's password; list one",
                        t.name
                    ),
                ));
            }
        }
        targets.push(Target {
            default_action: match t.default {
                DefaultAction::Allow => Action::Allow,
                DefaultAction::Block => Action::Block {
                    message: "no rule allows this session (target default: block)".into(),
                },
            },
            ..target
        });
    }
    let mut rule_names = HashSet::new();
    let mut rules = Vec::with_capacity(raw.rules.len());
    for (i, r) in raw.rules.into_iter().enumerate() {
        let here = |rest: &[Step<'_>], message: String| {
            let mut node = vec![Key("rules"), Index(i)];
            node.extend_from_slice(rest);
            at(&node, message)
        };
        let rule = r.validate().map_err(|(node, m)| {
            let node: Vec<Step<'_>> = node.iter().map(|k| Key(k)).collect();
            here(&node, m)
        })?;
        if !rule_names.insert(rule.name.clone()) {
            return Err(here(
                &[Key("name")],
                format!("rule `{}` is defined twice", rule.name),
            ));
        }
        if let Some((k, unknown)) = rule
            .conditions
            .targets
            .iter()
            .enumerate()
            .find(|(_, t)| !names.contains(*t))
        {
            return Err(here(
                &[Key("match"), Key("target"), Index(k)],
                format!(
                    "rule `{}` names target `{unknown}`, which this policy does not define",
                    rule.name
                ),
            ));
        }
        check_identity_conditions(&rule, &identity).map_err(|(node, m)| here(&node, m))?;
        if let Some(a) = &rule.approval
            && a.approvers.names_web()
            && web.is_none()
        {
            return Err(here(
                &[Key("approval"), Key("approvers")],
                format!(
                    "rule `{}` names identity-provider approvers (oidc_groups, oidc_emails, oidc_subjects), but the policy has no `web:` section where they could sign in",
                    rule.name
                ),
            ));
        }
        rules.push(rule);
    }
    Ok(Policy {
        path: path.to_owned(),
        targets,
        rules,
        identity,
        web,
    })
}

/// No silent conditions: a `ci:` condition on a variable interlock never captures, or in a
/// policy without trusted runners, and an `oidc:` condition without (or naming an unknown)
/// issuer could never hold.
fn check_identity_conditions(
    rule: &Rule,
    identity: &IdentityPolicy,
) -> Result<(), (Vec<Step<'static>>, String)> {
    let c = &rule.conditions;
    if let Some(var) = c.ci.keys().find(|v| !CI_ALLOWLIST.contains(&v.as_str())) {
        return Err((
            vec![Key("match"), Key("ci")],
            format!(
                "rule `{}`: `ci: {{ {var}: ... }}` can never hold: interlock only captures these CI variables: {}",
                rule.name,
                CI_ALLOWLIST.join(", ")
            ),
        ));
    }
    if !c.ci.is_empty() && identity.runners.is_empty() {
        return Err((
            vec![Key("match"), Key("ci")],
            format!(
                "rule `{}`: `ci:` can never hold: CI variables come only from the process a trusted runner started, and `identity.runners` names none",
                rule.name
            ),
        ));
    }
    if let Some(o) = &c.oidc {
        let verifier = &identity.verifier.0;
        if verifier.issuers().next().is_none() {
            return Err((
                vec![Key("match"), Key("oidc")],
                format!(
                    "rule `{}`: `oidc:` can never hold: `identity.issuers` names no issuer",
                    rule.name
                ),
            ));
        }
        if let Some(name) = &o.issuer
            && verifier.issuer_named(name).is_none()
        {
            return Err((
                vec![Key("match"), Key("oidc"), Key("issuer")],
                format!(
                    "rule `{}` names issuer `{name}`, which `identity.issuers` does not define",
                    rule.name
                ),
            ));
        }
    }
    Ok(())
}

/// serde_yaml appends " at line L column C" to its messages; we print the
/// position in front instead, compiler style.
fn strip_location(e: &serde_yaml::Error) -> String {
    let msg = e.to_string();
    match msg.find(" at line ") {
        Some(i) => msg.get(..i).unwrap_or(&msg).to_string(),
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::AddressMatch;

    fn parse_str(text: &str) -> Result<Policy, PolicyError> {
        parse(Path::new("test.yaml"), text)
    }

    #[test]
    fn parses_targets() {
        let p = parse_str(
            "version: 1\ntargets:\n  - name: pg\n    protocol: tcp\n    match:\n      - { address: 127.0.0.2, port: 5432 }\n      - { port: 6432 }\n",
        )
        .unwrap();
        assert_eq!(p.targets().len(), 1);
        let t = &p.targets()[0];
        assert_eq!(t.name, "pg");
        assert_eq!(t.endpoints[1].address, AddressMatch::Any);
    }

    #[test]
    fn every_example_policy_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                load(&path).unwrap_or_else(|e| panic!("{e}"));
                seen += 1;
            }
        }
        assert!(seen >= 1, "no example policies in {}", dir.display());
    }

    #[test]
    fn pinned_passwords_load_and_weak_upstreams_are_warned_about() {
        let base = "version: 1\ntargets:\n  - name: db\n    protocol: postgres\n    match: [{address: 127.0.0.0/8, port: 5432}]\n";
        // servers pins a range; verify-full pins by certificate.
        let p = parse_str(&format!(
            "{base}    upstream: {{password: {{env: PW}}, servers: [127.0.0.81], tls: disable, password_auth: [scram, md5]}}\n"
        ))
        .unwrap();
        let w = p.warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("target `db`") && w[0].contains("tls: disable"),
            "{w:?}"
        );
        assert!(w[1].contains("allows md5"), "{w:?}");
        let p = parse_str(&format!(
            "{base}    upstream: {{password: {{env: PW}}, tls: verify-full, ca_file: /ca.pem}}\n"
        ))
        .unwrap();
        assert!(p.warnings().is_empty(), "{:?}", p.warnings());
        // Passthrough targets have nothing to pin or warn about.
        let p = parse_str(&format!("{base}    upstream: {{tls: require}}\n")).unwrap();
        assert!(p.warnings().is_empty());
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let err = parse_str(
            "version: 1\ntargets:\n  - name: pg\n    protocol: carrier-pigeon\n    match: []\n",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("test.yaml:4:15: "), "{msg}");
        assert!(msg.contains("carrier-pigeon"), "{msg}");
    }

    #[test]
    fn bad_address_names_the_position() {
        let err = parse_str(
            "version: 1\ntargets:\n  - name: pg\n    protocol: tcp\n    match:\n      - { address: 10.0.0.0/40, port: 1 }\n",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("test.yaml:6:"), "{msg}");
        assert!(msg.contains("prefix length"), "{msg}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = parse_str("version: 1\ntargetz: []\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `targetz`"), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_node_they_are_about() {
        for (text, at, needle) in [
            ("version: 2\n", "1:10", "version 2 is not supported"),
            (
                "version: 1\ntargets:\n  - {name: ' ', protocol: tcp, match: [{port: 1}]}\n",
                "3:12",
                "empty name",
            ),
            (
                "version: 1\ntargets:\n  - {name: a, protocol: tcp, match: []}\n",
                "3:37",
                "empty `match`",
            ),
            (
                "version: 1\ntargets:\n  - {name: a, protocol: tcp, match: [{port: 1}]}\n  - {name: a, protocol: tcp, match: [{port: 2}]}\n",
                "4:12",
                "defined twice",
            ),
            (
                "version: 1\ntargets:\n  - name: a\n    protocol: tcp\n    match:\n      - {port: 1}\n      - {port: 0}\n",
                "7:16",
                "port 0",
            ),
            (
                "version: 1\ntargets:\n  - name: a\n    protocol: postgres\n    match: [{port: 1}]\n    upstream:\n      user: u\n      tls: verify-full\n",
                "8:12",
                "needs `upstream.ca_file`",
            ),
            (
                "version: 1\ntargets:\n  - name: s\n    protocol: ssh\n    match: [{port: 22}]\n",
                "3:5",
                "needs `upstream.key`",
            ),
            // An injected password on a range the job can pick a server in.
            (
                "version: 1\ntargets:\n  - name: db\n    protocol: postgres\n    match:\n      - {address: 10.0.0.5, port: 5432}\n      - {address: 127.0.0.0/8, port: 5432}\n    upstream: {password: {env: PW}}\n",
                "7:9",
                "target `db`: an injected password with match 127.0.0.0/8",
            ),
            (
                "version: 1\ntargets:\n  - name: db\n    protocol: postgres\n    match: [{port: 5432}]\n    upstream: {password: {env: PW}, tls: require}\n",
                "5:13",
                "list the real servers in `upstream.servers`",
            ),
            (
                "version: 1\ntargets:\n  - name: db\n    protocol: postgres\n    match: [{port: 5432}]\n    upstream: {servers: [10.0.0.5]}\n",
                "6:25",
                "this target injects none",
            ),
            (
                "version: 1\ntargets:\n  - name: db\n    protocol: postgres\n    match: [{port: 5432}]\n    upstream: {password_auth: []}\n",
                "6:31",
                "`password_auth` is empty",
            ),
            // The rule's name contains the target's: the unknown target is
            // still found where it is written, not at the name.
            (
                "version: 1\ntargets:\n  - {name: db, protocol: tcp, match: [{port: 1}]}\nrules:\n  - name: db-readers-dbx\n    action: allow\n    match:\n      target: [db, dbx]\n",
                "8:20",
                "target `dbx`",
            ),
        ] {
            let err = parse_str(text).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("test.yaml:{at}: ")),
                "{text}: {err}"
            );
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
