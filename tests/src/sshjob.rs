//! The CI job's side of the SSH tests through the real daemon: a policy
//! intercepting an [`Sshd`], the job's own key (which the server does NOT
//! authorize) and a known_hosts trusting only interlock's SSH CA, and the
//! OpenSSH clients run inside the scope cgroup.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Result, ensure};

use crate::{Daemon, DaemonSpec, Policy, Sshd, TestCgroup, interlock_bin, ssh_keygen, unique};

/// A daemon whose policy intercepts `sshd`, injects its authorized key and
/// pins its host key; `rm` is blocked, and `deploy` and sftp writes to
/// paths containing `approve-me` need approval.
/// `upstream_extra` is appended to the target's `upstream:` block (lines
/// indented by six spaces).
pub fn daemon(cg: &TestCgroup, sshd: &Sshd, upstream_extra: &str) -> Result<Daemon> {
    daemon_with_rules(cg, sshd, upstream_extra, "")
}

/// [`daemon`] with `extra_rules` (YAML list items indented by two spaces)
/// after the standard rules.
pub fn daemon_with_rules(
    cg: &TestCgroup,
    sshd: &Sshd,
    upstream_extra: &str,
    extra_rules: &str,
) -> Result<Daemon> {
    daemon_with_args(cg, sshd, upstream_extra, extra_rules, &[])
}

/// [`daemon_with_rules`] with `args` added to `interlock run`.
pub fn daemon_with_args(
    cg: &TestCgroup,
    sshd: &Sshd,
    upstream_extra: &str,
    extra_rules: &str,
    args: &[&str],
) -> Result<Daemon> {
    daemon_with_login(cg, sshd, "user: root", upstream_extra, extra_rules, args)
}

/// [`daemon_with_args`] whose upstream login is `login` (`user: NAME` or
/// `users: [...]`) instead of `user: root`.
pub fn daemon_with_login(
    cg: &TestCgroup,
    sshd: &Sshd,
    login: &str,
    upstream_extra: &str,
    extra_rules: &str,
    args: &[&str],
) -> Result<Daemon> {
    let policy = Policy::new()
        .ssh_login("deploy-host", sshd, login, upstream_extra)
        .rules(
            r"
  - name: no-rm
    match: {command: '^rm\s'}
    action: block
    message: deleting files from CI is not allowed
  - name: deploys-need-a-human
    match: {command: '^deploy'}
    action: require_approval
    approval: {approvers: {users: [daemon]}, timeout: 60s}
  - name: uploads-need-a-human
    match: {kind: [file_write], command: 'approve-me'}
    action: require_approval
    approval: {approvers: {users: [daemon]}, timeout: 60s}
",
        )
        .rules(extra_rules)
        .yaml();
    Daemon::start(DaemonSpec::with_policy(cg, &policy, args))
}

/// The job's key and known_hosts.
pub struct Job {
    pub dir: PathBuf,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
}

impl Job {
    /// A fresh job key; known_hosts holds `known_hosts_line`.
    pub fn with_known_hosts(known_hosts_line: &str) -> Result<Job> {
        let dir = std::env::temp_dir().join(unique("interlock-sshjob"));
        std::fs::create_dir_all(&dir)?;
        let key = dir.join("job_key");
        ssh_keygen(&key)?;
        let known_hosts = dir.join("known_hosts");
        std::fs::write(&known_hosts, format!("{}\n", known_hosts_line.trim()))?;
        Ok(Job {
            dir,
            key,
            known_hosts,
        })
    }

    /// A job trusting `d`'s SSH CA (`interlock ca export --ssh`).
    pub fn trusting_ca(d: &Daemon) -> Result<Job> {
        let out = Command::new(interlock_bin()?)
            .args(["ca", "export", "--ssh", "--state-dir"])
            .arg(&d.state_dir)
            .output()?;
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout)?;
        ensure!(line.starts_with("@cert-authority * ssh-ed25519 "), "{line}");
        Job::with_known_hosts(&line)
    }

    /// The client options: strict host key checking, batch mode, only the job key.
    pub fn options(&self) -> Vec<String> {
        [
            "-i",
            &self.key.display().to_string(),
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            &format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=20",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// `ssh -p PORT [options] [extra] root@IP [cmd]` inside `cg`.
    pub fn ssh(&self, cg: &TestCgroup, sshd: &Sshd, extra: &[&str], cmd: &str) -> Command {
        self.ssh_as(cg, sshd, "root", extra, cmd)
    }

    /// [`Job::ssh`] logging in as `user`.
    pub fn ssh_as(
        &self,
        cg: &TestCgroup,
        sshd: &Sshd,
        user: &str,
        extra: &[&str],
        cmd: &str,
    ) -> Command {
        let mut args = vec!["-p".to_string(), sshd.addr.port().to_string()];
        args.extend(self.options());
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(format!("{user}@{}", sshd.addr.ip()));
        if !cmd.is_empty() {
            args.push(cmd.to_string());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        without_locale(cg.command(Path::new("/usr/bin/ssh"), &refs))
    }

    /// `scp -P PORT [options] [extra] from.. to` inside `cg`.
    pub fn scp(&self, cg: &TestCgroup, sshd: &Sshd, extra: &[&str], paths: &[&str]) -> Command {
        let mut args = vec!["-P".to_string(), sshd.addr.port().to_string()];
        args.extend(self.options());
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(paths.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        without_locale(cg.command(Path::new("/usr/bin/scp"), &refs))
    }
}

/// `c` without the test runner's `LANG` and `LC_*`: Debian's ssh_config sends
/// them (`SendEnv LANG LC_*`), and each one the target does not list is a
/// refused `env` request recorded as `request_blocked`. Without them the
/// records a test sees do not depend on the runner's locale; a test that is
/// about env sends its variables with `-o SetEnv=...`.
fn without_locale(mut c: Command) -> Command {
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n == "LANG" || n.starts_with("LC_") {
            c.env_remove(&name);
        }
    }
    c
}

impl Drop for Job {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
