//! The lab smoke suite, run as root inside a lab guest against its own
//! kernel (by `lab run`, or by the Vagrant provisioner): interlock installed
//! with `xtask install` as the systemd service and driven through real
//! clients. Each step depends on the ones before, so the first failure ends
//! the suite (after printing the service's journal and last events).

mod guest;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use self::guest::{
    Connect, POLICY, STATE_DIR, bpf_programs, connect, events, our_programs, sh, sh_ok, text,
    unit_property, wait_event, wait_for,
};
use crate::util::{self, Workspace};

/// Options of `xtask lab smoke`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The interlock binary to install.
    #[arg(long, default_value = "/lab/interlock")]
    binary: PathBuf,
}

/// The guest's PostgreSQL, intercepted as `127.0.0.1:5432`.
const PG: &str = "127.0.0.1:5432";
/// psql through interlock as the `lab` role (the password only matters
/// when nothing injects credentials).
const PSQL: &str =
    "PGPASSWORD=labpw PGCONNECT_TIMEOUT=30 psql -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -U lab -d lab";
/// The upstream ssh key interlock logs in to the guest's sshd with.
const SSH_KEY: &str = "/etc/interlock/lab-ssh.key";
/// The job's ssh options: interlock's SSH CA as the only trusted host key.
const SSH: &str = "ssh -F /dev/null -i /root/lab-client.key -o IdentitiesOnly=yes -o BatchMode=yes \
     -o UserKnownHostsFile=/root/lab-known-hosts -o StrictHostKeyChecking=yes -o ConnectTimeout=60";

/// What the steps learn and later steps need.
#[derive(Default)]
struct State {
    /// BPF program ids loaded before interlock was installed.
    before: BTreeSet<u64>,
    /// interlock's programs while it runs.
    ours: Vec<(u64, String)>,
}

type Step = fn(&mut State, &Args) -> Result<String>;

pub(crate) fn cmd(args: &Args, _ws: &Workspace) -> Result<ExitCode> {
    if !util::is_root() {
        bail!("the smoke suite runs as root inside a lab VM");
    }
    let init = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    if init.trim() != "systemd" {
        bail!(
            "the smoke suite needs systemd as PID 1 (it installs and drives the service): run it in a lab VM"
        );
    }
    let release = sh_ok("uname -r")?;
    println!(
        "smoke: Linux {release}, interlock {}",
        args.binary.display()
    );
    let steps: &[(&str, Step)] = &[
        ("install as a Type=notify systemd service", install),
        ("psql session relayed and recorded", relay_psql),
        ("systemctl reload puts a new policy in force", reload),
        ("blocked statement refused", blocked),
        ("held statement approved over the control socket", held),
        ("ssh exec through the proxy", ssh_exec),
        ("interlock audit verify", audit_verify),
        (
            "kill -9: refused while systemd restarts it, then relayed",
            kill_restart,
        ),
        (
            "systemctl stop + interlock detach leave nothing behind",
            stop_detach,
        ),
    ];
    let mut state = State::default();
    let mut results = Vec::new();
    let mut failed = false;
    for (name, step) in steps {
        println!("smoke: --- {name}");
        let started = Instant::now();
        let result = step(&mut state, args);
        let took = started.elapsed().as_secs_f64();
        match result {
            Ok(detail) => {
                println!("smoke: ok   {name} ({took:.1} s): {detail}");
                results.push((*name, true, took));
            }
            Err(e) => {
                println!("smoke: FAIL {name} ({took:.1} s): {e:#}");
                results.push((*name, false, took));
                failed = true;
                diagnose();
                break;
            }
        }
    }
    println!("smoke: summary on Linux {release}");
    for (name, ok, took) in &results {
        println!(
            "smoke:   {:<4} {took:>6.1} s  {name}",
            if *ok { "ok" } else { "FAIL" }
        );
    }
    for (name, _) in steps.iter().skip(results.len()) {
        println!("smoke:   skip           {name}");
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        println!("smoke: all {} steps passed on Linux {release}", steps.len());
        ExitCode::SUCCESS
    })
}

/// The service's journal and the last events, for a failed step.
fn diagnose() {
    if let Ok(out) = sh("journalctl -u interlock.service --no-pager -n 60 -o short-monotonic") {
        println!("smoke: journal of interlock.service:");
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    let evs = events();
    println!("smoke: last events:");
    for e in evs.iter().skip(evs.len().saturating_sub(15)) {
        println!("  {e}");
    }
}

/// `xtask install` (this very binary) of the bundled interlock: binary,
/// default policy, unit, state directory; `systemctl enable --now` returns
/// only after READY=1 for a Type=notify unit.
fn install(state: &mut State, args: &Args) -> Result<String> {
    state.before = bpf_programs()?.into_iter().map(|(id, _)| id).collect();
    let me = std::env::current_exe()?;
    let mut cmd = Command::new(me);
    cmd.arg("install").arg("--binary").arg(&args.binary);
    util::run(&mut cmd)?;
    let ty = unit_property("Type")?;
    let active = unit_property("ActiveState")?;
    let sub = unit_property("SubState")?;
    if ty != "notify" || active != "active" || sub != "running" {
        bail!("interlock.service is Type={ty} {active}/{sub}, want notify active/running");
    }
    let runtime = PathBuf::from(STATE_DIR).join("runtime.json");
    if !runtime.is_file() {
        bail!("the service is active but {} is missing", runtime.display());
    }
    state.ours = our_programs(&state.before)?;
    let kinds: BTreeSet<&str> = state.ours.iter().map(|(_, n)| n.as_str()).collect();
    if state.ours.is_empty() {
        bail!("no interlock BPF programs are loaded");
    }
    Ok(format!(
        "Type=notify, active after READY=1; programs: {}",
        kinds.into_iter().collect::<Vec<_>>().join(", ")
    ))
}

/// The default policy relays 5432 as `tcp`: psql works through it and the
/// session is recorded with psql as its process.
fn relay_psql(_: &mut State, _: &Args) -> Result<String> {
    sh_ok(
        "runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 \
         -c \"create role lab login password 'labpw'\" -c 'create database lab owner lab'",
    )?;
    sh_ok(
        "runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d lab -c \
         \"create table items (id int primary key, name text); \
          insert into items values (1, 'one'), (2, 'two'), (3, 'three'); \
          alter table items owner to lab;\"",
    )?;
    let skip = events().len();
    let count = sh_ok(&format!("{PSQL} -Atc 'select count(*) from items'"))?;
    if count != "3" {
        bail!("psql through interlock answered {count:?}, want 3");
    }
    let started = wait_event("session_started of psql", skip, |e| {
        text(e, "/type") == "session_started" && text(e, "/identity/process/exe").ends_with("/psql")
    })?;
    let id = text(&started, "/session_id").to_string();
    let ended = wait_event("session_ended of psql", skip, |e| {
        text(e, "/type") == "session_ended" && text(e, "/session_id") == id
    })?;
    Ok(format!(
        "target {}, exe {}, {} bytes down",
        text(&started, "/identity/target"),
        text(&started, "/identity/process/exe"),
        ended
            .pointer("/bytes_server_to_client")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    ))
}

/// The smoke policy: PostgreSQL proxied with injected credentials, drops
/// blocked, writes held for root; the guest's sshd proxied with an
/// injected key.
fn smoke_policy() -> Result<String> {
    let host_key = sh_ok("cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub")?;
    let mut p = String::new();
    writeln!(p, "version: 1")?;
    writeln!(p, "targets:")?;
    writeln!(p, "  - name: lab-db")?;
    writeln!(p, "    protocol: postgres")?;
    writeln!(p, "    match: [{{ address: 127.0.0.1, port: 5432 }}]")?;
    writeln!(p, "    upstream:")?;
    writeln!(p, "      user: lab")?;
    writeln!(
        p,
        "      password: {{ file: /etc/interlock/lab-db.password }}"
    )?;
    writeln!(p, "      database: lab")?;
    writeln!(p, "      tls: disable")?;
    writeln!(p, "  - name: lab-ssh")?;
    writeln!(p, "    protocol: ssh")?;
    writeln!(p, "    match: [{{ address: 127.0.0.1, port: 22 }}]")?;
    writeln!(p, "    upstream:")?;
    writeln!(p, "      user: labssh")?;
    writeln!(p, "      key: {{ file: {SSH_KEY} }}")?;
    writeln!(p, "      host_key: \"{host_key}\"")?;
    writeln!(p, "rules:")?;
    writeln!(p, "  - name: no-drops")?;
    writeln!(
        p,
        "    match: {{ target: [lab-db], statement: [drop_table] }}"
    )?;
    writeln!(p, "    action: block")?;
    writeln!(p, "    message: drops are not allowed in the lab")?;
    writeln!(p, "  - name: writes-need-root")?;
    writeln!(p, "    match: {{ target: [lab-db], statement: [write] }}")?;
    writeln!(p, "    action: require_approval")?;
    writeln!(
        p,
        "    approval: {{ approvers: {{ users: [root] }}, timeout: 3m }}"
    )?;
    Ok(p)
}

/// Accounts, keys and secrets the smoke policy refers to; then the policy
/// replaces the default one and `systemctl reload` (SIGHUP) loads it.
fn reload(_: &mut State, _: &Args) -> Result<String> {
    sh_ok(
        "printf labpw > /etc/interlock/lab-db.password && chmod 600 /etc/interlock/lab-db.password",
    )?;
    sh_ok("id labclient >/dev/null 2>&1 || useradd --create-home labclient")?;
    sh_ok("id labssh >/dev/null 2>&1 || useradd --create-home --shell /bin/sh labssh")?;
    for key in [SSH_KEY, "/root/lab-client.key"] {
        sh_ok(&format!(
            "test -f {key} || ssh-keygen -q -t ed25519 -N '' -C interlock-lab -f {key}"
        ))?;
    }
    sh_ok(&format!(
        "install -d -m 700 -o labssh -g labssh ~labssh/.ssh && \
         install -m 600 -o labssh -g labssh {SSH_KEY}.pub ~labssh/.ssh/authorized_keys"
    ))?;
    let policy = smoke_policy()?;
    let staged = format!("{POLICY}.new");
    std::fs::write(&staged, &policy)?;
    sh_ok(&format!("interlock policy check {staged}"))?;
    let skip = events().len();
    // A rename: the daemon also follows file changes and must never read half a file.
    std::fs::rename(&staged, POLICY)?;
    sh_ok("systemctl reload interlock.service")?;
    let reloaded = wait_event("policy_reloaded by SIGHUP", skip, |e| {
        text(e, "/type") == "policy_reloaded" && text(e, "/trigger") == "sighup"
    })?;
    let state = unit_property("ActiveState")?;
    if state != "active" {
        bail!("after the reload the unit is {state}");
    }
    Ok(format!(
        "policy_reloaded (trigger sighup): {} targets, {} rules",
        reloaded.pointer("/targets").cloned().unwrap_or_default(),
        reloaded.pointer("/rules").cloned().unwrap_or_default()
    ))
}

fn blocked(_: &mut State, _: &Args) -> Result<String> {
    let skip = events().len();
    let out = sh(&format!(
        "{PSQL} -v VERBOSITY=verbose -c 'drop table items'"
    ))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success()
        || !stderr.contains("42501")
        || !stderr.contains("not allowed in the lab")
    {
        bail!("drop table was not refused with 42501 and the rule's message: {stderr}");
    }
    sh_ok("runuser -u postgres -- psql -X -d lab -Atc 'select 1 from items limit 1'")
        .context("the table must still exist")?;
    let ev = wait_event("request_blocked", skip, |e| {
        text(e, "/type") == "request_blocked" && text(e, "/rule") == "no-drops"
    })?;
    Ok(format!(
        "{}; recorded: request_blocked by {}",
        stderr.lines().next().unwrap_or("").trim(),
        text(&ev, "/rule")
    ))
}

/// A write from another user in its own cgroup (a requester never
/// approves itself) waits until root approves it over the control socket.
fn held(_: &mut State, _: &Args) -> Result<String> {
    let skip = events().len();
    let client = Command::new("timeout")
        .args([
            "240",
            "systemd-run",
            "--scope",
            "--quiet",
            "--",
            "runuser",
            "-u",
            "labclient",
            "--",
        ])
        .args(["sh", "-c"])
        .arg(format!(
            "cd /tmp && {PSQL} -c \"update items set name = 'approved' where id = 1\""
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("systemd-run --scope")?;
    let requested = wait_event("approval_requested", skip, |e| {
        text(e, "/type") == "approval_requested"
    })?;
    let id = text(&requested, "/approval/id").to_string();
    let value =
        sh_ok("runuser -u postgres -- psql -X -d lab -Atc 'select name from items where id = 1'")?;
    if value != "one" {
        bail!("the held update ran before approval (name = {value:?})");
    }
    sh_ok(&format!(
        "interlock approvals approve {id} --reason 'lab smoke suite'"
    ))?;
    let out = client.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.contains("UPDATE 1") {
        bail!(
            "the held psql ended {}: {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let value =
        sh_ok("runuser -u postgres -- psql -X -d lab -Atc 'select name from items where id = 1'")?;
    if value != "approved" {
        bail!("after approval name = {value:?}, want approved");
    }
    wait_event("approval_decided", skip, |e| {
        text(e, "/type") == "approval_decided"
    })?;
    Ok(format!("approval {id} approved by root; UPDATE 1 ran"))
}

/// The job trusts interlock's SSH CA only; interlock logs in to the
/// guest's sshd with its own key.
fn ssh_exec(_: &mut State, _: &Args) -> Result<String> {
    sh_ok("interlock ca export --ssh --hosts 127.0.0.1 > /root/lab-known-hosts")?;
    let skip = events().len();
    let out = sh_ok(&format!(
        "{SSH} anyone@127.0.0.1 'echo interlock-lab-$((6*7)) $(id -un)'"
    ))?;
    if out != "interlock-lab-42 labssh" {
        bail!("ssh through interlock printed {out:?}");
    }
    let ev = wait_event("command event", skip, |e| {
        text(e, "/type") == "command" && text(e, "/text").contains("interlock-lab-")
    })?;
    Ok(format!(
        "{out:?}; recorded: {} {:?}",
        text(&ev, "/command_kind"),
        text(&ev, "/text")
    ))
}

fn audit_verify(_: &mut State, _: &Args) -> Result<String> {
    let out = sh_ok(&format!("interlock audit verify {STATE_DIR}"))?;
    Ok(out.lines().last().unwrap_or("").to_string())
}

/// SIGKILL the daemon: while systemd restarts it (RestartSec=1), connects
/// to the target are refused or reach interlock's listener — never the
/// server directly — and once it is up again (READY=1) psql is relayed.
fn kill_restart(_: &mut State, _: &Args) -> Result<String> {
    let pid: u32 = unit_property("MainPID")?.parse()?;
    let restarts: u32 = unit_property("NRestarts")?.parse().unwrap_or(0);
    let skip = events().len();
    sh_ok(&format!("kill -9 {pid}"))?;
    wait_for(
        "the killed daemon to be gone",
        Duration::from_secs(30),
        || Ok((!PathBuf::from(format!("/proc/{pid}")).exists()).then_some(())),
    )?;
    let first = connect(PG)?;
    if first != Connect::Refused {
        bail!("the first connect after the kill was not refused: {first:?}");
    }
    let (mut refused, mut redirected) = (1, 0);
    let up = wait_for("the restarted service", Duration::from_secs(240), || {
        match connect(PG)? {
            Connect::Refused => refused += 1,
            Connect::To(peer) if peer.port() == 5432 => {
                bail!("a connect reached the server directly ({peer}) while the daemon was down")
            }
            Connect::To(_) => redirected += 1,
        }
        let active = unit_property("ActiveState")?;
        let main: u32 = unit_property("MainPID")?.parse().unwrap_or(0);
        Ok((active == "active" && main != 0 && main != pid).then_some(main))
    })?;
    let now: u32 = unit_property("NRestarts")?.parse().unwrap_or(0);
    if now <= restarts {
        bail!("NRestarts stayed {now}");
    }
    let started = wait_event("daemon_started adopting the pins", skip, |e| {
        text(e, "/type") == "daemon_started"
    })?;
    let adopted = started
        .pointer("/adopted_pins")
        .cloned()
        .unwrap_or_default();
    let count = sh_ok(&format!("{PSQL} -Atc 'select count(*) from items'"))?;
    if count != "3" {
        bail!("psql after the restart answered {count:?}");
    }
    Ok(format!(
        "pid {pid} -> {up}; {refused} connects refused, {redirected} accepted by the new listener before READY, none direct; adopted_pins {adopted}; relayed again"
    ))
}

/// Stopping leaves the programs attached (connects refused); `interlock
/// detach` removes them and their pins, and connects go direct again.
fn stop_detach(state: &mut State, _: &Args) -> Result<String> {
    sh_ok("systemctl stop interlock.service")?;
    let after_stop = connect(PG)?;
    if after_stop != Connect::Refused {
        bail!("after systemctl stop a connect was not refused: {after_stop:?}");
    }
    let detached = sh_ok("interlock detach --instance default")?;
    // The kernel frees a program once its last link is gone, not always
    // before detach returns.
    let gone = wait_for(
        "interlock's programs to be unloaded",
        Duration::from_secs(20),
        || Ok(our_programs(&state.before)?.is_empty().then_some(())),
    );
    if gone.is_err() {
        bail!(
            "after detach these programs are still loaded: {:?}",
            our_programs(&state.before)?
        );
    }
    let still: Vec<_> = state
        .ours
        .iter()
        .filter(|(id, _)| bpf_programs().is_ok_and(|p| p.iter().any(|(i, _)| i == id)))
        .collect();
    if !still.is_empty() {
        bail!("programs interlock had loaded are still there: {still:?}");
    }
    let pins = PathBuf::from("/sys/fs/bpf/interlock/default");
    if pins.exists() {
        bail!("{} still exists", pins.display());
    }
    match connect(PG)? {
        Connect::To(peer) if peer.port() == 5432 => {}
        other => bail!("after detach a connect should go straight to PostgreSQL: {other:?}"),
    }
    let count = sh_ok(&format!("{PSQL} -Atc 'select count(*) from items'"))?;
    if count != "3" {
        bail!("direct psql after detach answered {count:?}");
    }
    Ok(format!(
        "{} programs gone, no pins; detach said: {}",
        state.ours.len(),
        detached.lines().next().unwrap_or("")
    ))
}
