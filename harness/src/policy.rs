//! Policy text for a daemon under test or bench: the targets, which are the same few lines
//! for every test of a protocol (a server's address, the credentials interlock injects, the
//! host key it pins), built from the running server; the rules stay YAML written in the test,
//! where a reader sees what the test decides.

use std::{fmt::Write as _, net::SocketAddr, path::Path};

use crate::{PgServer, Sshd, postgres::ROLE};

/// A policy with one tcp target over the given `address:port` endpoints.
pub fn tcp_policy(name: &str, endpoints: &[(&str, u16)]) -> String {
    let mut s = format!("version: 1\ntargets:\n  - name: {name}\n    protocol: tcp\n    match:\n");
    for (a, p) in endpoints {
        s.push_str(&format!("      - {{ address: \"{a}\", port: {p} }}\n"));
    }
    s
}

/// A policy file's text: targets added one by one, then the rules, verbatim.
///
/// ```ignore
/// let policy = Policy::new()
///     .postgres("app-db", &pg, &pg.password_file()?)
///     .rules("
///   - name: no-truncate
///     match: {statement: [truncate]}
///     action: block
/// ");
/// ```
#[derive(Debug, Clone, Default)]
pub struct Policy {
    targets: String,
    rules: String,
}

impl Policy {
    /// No target, no rule.
    pub fn new() -> Policy {
        Policy::default()
    }

    /// A `tcp` target `name` matching each of `endpoints`.
    pub fn tcp(mut self, name: &str, endpoints: &[SocketAddr]) -> Policy {
        let _ = write!(
            self.targets,
            "  - name: {name}\n    protocol: tcp\n    match:\n"
        );
        for e in endpoints {
            let _ = writeln!(
                self.targets,
                "      - {{ address: \"{}\", port: {} }}",
                e.ip(),
                e.port()
            );
        }
        self
    }

    /// A `postgres` target `name` for `pg`: interlock logs in as the test role with the
    /// password in `password_file`, upstream TLS off.
    pub fn postgres(self, name: &str, pg: &PgServer, password_file: &Path) -> Policy {
        self.postgres_with(name, pg.addr, password_file, "")
    }

    /// [`Policy::postgres`] for a server at `addr`, with `extra` YAML lines (indented as
    /// target keys, four spaces) after `upstream`.
    pub fn postgres_with(
        mut self,
        name: &str,
        addr: SocketAddr,
        password_file: &Path,
        extra: &str,
    ) -> Policy {
        let _ = writeln!(
            self.targets,
            "  - name: {name}\n    protocol: postgres\n    match:\n      - {{ address: \"{}\", port: {} }}\n    upstream: {{ user: {ROLE}, password: {{ file: \"{}\" }}, tls: disable }}",
            addr.ip(),
            addr.port(),
            password_file.display(),
        );
        self.extra(extra)
    }

    /// An `ssh` target `name` for `sshd`: interlock logs in as root with the key sshd
    /// authorizes and pins sshd's host key.
    pub fn ssh(self, name: &str, sshd: &Sshd) -> Policy {
        self.ssh_with(name, sshd, "")
    }

    /// [`Policy::ssh`] with `extra` YAML lines (indented as target keys, four spaces).
    pub fn ssh_with(self, name: &str, sshd: &Sshd, extra: &str) -> Policy {
        self.ssh_login(name, sshd, "user: root", extra)
    }

    /// [`Policy::ssh_with`] whose upstream login is `login`, one YAML line of the
    /// `upstream:` block (`user: NAME` or `users: [A, B]`), instead of `user: root`.
    pub fn ssh_login(mut self, name: &str, sshd: &Sshd, login: &str, extra: &str) -> Policy {
        let _ = writeln!(
            self.targets,
            "  - name: {name}\n    protocol: ssh\n    match:\n      - {{ address: \"{}\", port: {} }}\n    upstream:\n      {login}\n      key: {{ file: \"{}\" }}\n      host_key: \"{}\"",
            sshd.addr.ip(),
            sshd.addr.port(),
            sshd.client_key.display(),
            sshd.host_public_key,
        );
        self.extra(extra)
    }

    /// Lines added to the last target, ending with a newline.
    fn extra(mut self, yaml: &str) -> Policy {
        let yaml = yaml.trim_matches('\n');
        if !yaml.is_empty() {
            self.targets.push_str(yaml);
            self.targets.push('\n');
        }
        self
    }

    /// The `rules:` list, verbatim YAML (items indented two spaces); appended to any given
    /// before. Empty text adds nothing.
    pub fn rules(mut self, yaml: &str) -> Policy {
        let yaml = yaml.trim_start_matches('\n');
        if yaml.trim().is_empty() {
            return self;
        }
        self.rules.push_str(yaml);
        if !self.rules.ends_with('\n') {
            self.rules.push('\n');
        }
        self
    }

    /// The policy file's text.
    pub fn yaml(&self) -> String {
        let mut text = format!("version: 1\ntargets:\n{}", self.targets);
        if !self.targets.ends_with('\n') {
            text.push('\n');
        }
        if !self.rules.is_empty() {
            text.push_str("rules:\n");
            text.push_str(&self.rules);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_targets_and_rules_in_order() {
        let p = Policy::new()
            .tcp("a", &["127.0.0.2:4567".parse().unwrap()])
            .rules("  - name: r\n    match: { target: [a] }\n    action: block\n")
            .yaml();
        assert_eq!(
            p,
            "version: 1\ntargets:\n  - name: a\n    protocol: tcp\n    match:\n      - { address: \"127.0.0.2\", port: 4567 }\nrules:\n  - name: r\n    match: { target: [a] }\n    action: block\n"
        );
    }

    #[test]
    fn postgres_target_injects_the_password_file() {
        let p = Policy::new()
            .postgres_with(
                "db",
                "127.0.0.5:5433".parse().unwrap(),
                Path::new("/tmp/pw"),
                "",
            )
            .yaml();
        assert!(p.contains("  - name: db\n    protocol: postgres\n"));
        assert!(p.contains("{ address: \"127.0.0.5\", port: 5433 }"));
        assert!(p.contains("password: { file: \"/tmp/pw\" }"));
        assert!(!p.contains("rules:"));
    }
}
