//! An audit log that cannot be written refuses instead of losing. The
//! daemon's state directory is a small tmpfs the test fills to the brim
//! while real clients work through the real daemon: psql (a live session
//! and new ones), ssh (a new session and an exec on a live connection) and
//! a tcp relay. Statements and sessions are refused with SQLSTATE 53100,
//! ssh with a line naming the audit log, tcp with a reset; `interlock
//! status` shows it; once space is freed the daemon admits again by itself,
//! every record of what ran is in the chain (none of what was refused),
//! and `interlock audit verify` passes.

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use interlock_tests::{postgres::*, sshjob::Job, *};
use serde_json::Value;

/// A tmpfs mounted for the test; unmounted (lazily, should the daemon
/// still hold it) on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Result<Tmpfs> {
        std::fs::create_dir_all(path)?;
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0711"),
                "tmpfs",
            ])
            .arg(path)
            .status()?;
        ensure!(st.success(), "mount tmpfs on {}", path.display());
        Ok(Tmpfs {
            path: path.to_owned(),
        })
    }

    /// Writes a file until not one byte more fits; returns its path.
    fn fill(&self) -> Result<PathBuf> {
        let p = self.path.join("filler");
        let mut f = File::create(&p)?;
        for chunk in [1 << 16, 4096, 1] {
            let buf = vec![0u8; chunk];
            loop {
                match f.write(&buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(p)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A psql session kept open, driven line by line: each statement is
/// followed by `\echo` and `\warn` markers, so its output and errors are
/// known to be complete.
struct Psql {
    child: Child,
    stdin: ChildStdin,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
    n: u32,
}

impl Psql {
    fn start(cg: &TestCgroup, pg: &PgServer) -> Result<Psql> {
        let mut c = cg.command(
            Path::new("/usr/bin/psql"),
            &[
                "-X",
                "-At",
                "-v",
                "VERBOSITY=verbose",
                "-h",
                &pg.addr.ip().to_string(),
                "-p",
                &pg.addr.port().to_string(),
                "-U",
                ROLE,
                "-d",
                DATABASE,
            ],
        );
        c.env("PGPASSWORD", "not-the-password")
            .env("PGSSLMODE", "disable")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn()?;
        let stdin = child.stdin.take().context("stdin")?;
        let out = lines(child.stdout.take().context("stdout")?);
        let err = lines(child.stderr.take().context("stderr")?);
        Ok(Psql {
            child,
            stdin,
            out,
            err,
            n: 0,
        })
    }

    /// Runs `sql`; returns (stdout, stderr) it produced.
    fn run(&mut self, sql: &str) -> Result<(String, String)> {
        self.n += 1;
        let mark = format!("END-{}", self.n);
        writeln!(self.stdin, "{sql}\n\\echo {mark}\n\\warn {mark}")?;
        self.stdin.flush()?;
        Ok((until(&self.out, &mark)?, until(&self.err, &mark)?))
    }
}

impl Drop for Psql {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// Lines up to `mark` (at most 60 s).
fn until(rx: &mpsc::Receiver<String>, mark: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut text = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let l = rx
            .recv_timeout(left)
            .with_context(|| format!("no {mark} from psql; so far: {text}"))?;
        if l == mark {
            return Ok(text);
        }
        text.push_str(&l);
        text.push('\n');
    }
}

/// Waits (at most 30 s) until `interlock status --json` says the audit log
/// is `writable` or not; returns the status.
fn wait_writable(d: &Daemon, writable: bool) -> Result<Value> {
    let sock = d.socket().display().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = d.cli(&["status", "--json", "--socket", &sock])?;
        let v: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
        if v["audit"]["writable"] == writable {
            ensure!(out.ok == writable, "status exit code: {out:?}");
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!(
                "audit never became writable={writable}: {out:?}\n{}",
                d.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_full_disk_refuses_new_work_loses_nothing_and_recovers_by_itself() -> Result<()> {
    if !privileged() || !PgServer::available() || !Sshd::available() {
        return Ok(());
    }
    let pg = PgServer::start("127.0.0.41")?;
    let sshd = Sshd::start("127.0.0.42")?;
    let echo = EchoServer::start("127.0.0.43:0")?;
    let cg = TestCgroup::new("audit-full")?;
    let pw = pg.password_file()?;
    let policy = format!(
        "version: 1
targets:
  - name: db
    protocol: postgres
    match: [{{address: {pg_ip}, port: {pg_port}}}]
    upstream: {{user: {ROLE}, password: {{file: {pw}}}, tls: disable}}
  - name: host
    protocol: ssh
    match: [{{address: {ssh_ip}, port: {ssh_port}}}]
    upstream:
      user: root
      key: {{file: {key}}}
      host_key: \"{host_key}\"
  - name: svc
    protocol: tcp
    match: [{{address: {echo_ip}, port: {echo_port}}}]
rules: []
",
        pg_ip = pg.addr.ip(),
        pg_port = pg.addr.port(),
        pw = pw.display(),
        ssh_ip = sshd.addr.ip(),
        ssh_port = sshd.addr.port(),
        key = sshd.client_key.display(),
        host_key = sshd.host_public_key.trim(),
        echo_ip = echo.addr.ip(),
        echo_port = echo.addr.port(),
    );
    let mut d = Daemon::prepare(DaemonSpec::with_policy(&cg, &policy, &[]))?;
    let disk = Tmpfs::mount(&d.state_dir, "2m")?;
    d.spawn()?;
    let job = Job::trusting_ca(&d)?;
    let echo_addr = echo.addr.to_string();
    let ssh = |extra: &[&str], cmd: &str| job.ssh(&cg, &sshd, extra, cmd).output();
    let new_psql = |sql: &str| psql_in(&cg, &pg, sql).output();
    let pgstart = || client_in(&cg, &["pgstart", &pg.addr.to_string(), ROLE, DATABASE], &[]);

    // Everything works, and is recorded, before the disk fills.
    let out = new_psql("SELECT 'before-full'")?;
    ensure!(out.status.success(), "{out:?}\n{}", d.log());
    let out = ssh(&[], "echo before-full")?;
    ensure!(out.status.success(), "{out:?}\n{}", d.log());
    let reply = client_in(&cg, &["echo", &echo_addr, "x"], &[])?;
    ensure!(
        reply.starts_with("ok echo ") && reply.ends_with(" x"),
        "{reply}"
    );
    let mut session = Psql::start(&cg, &pg)?;
    let (o, e) = session.run("SELECT 'live-before';")?;
    ensure!(o.trim() == "live-before", "{o} {e}");
    let ctl = job.dir.join("ctl");
    let ctl_arg = ctl.display().to_string();
    let mut master = job
        .ssh(
            &cg,
            &sshd,
            &["-M", "-S", &ctl_arg, "-N", "-o", "ControlPersist=no"],
            "",
        )
        .stdin(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ctl.exists() {
        ensure!(Instant::now() < deadline, "no ssh master: {}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let muxed = |cmd: &str| ssh(&["-S", &ctl_arg, "-o", "ControlMaster=no"], cmd);
    ensure!(muxed("echo via-master")?.status.success());

    // Fill the disk. The statements that still run have their records
    // written now or held until there is space; the first refused one
    // gets 53100 naming the audit log.
    let filler = disk.fill()?;
    let mut ran = Vec::new();
    let mut refused = None;
    for i in 0..500 {
        let probe = format!("probe-{i}");
        let (o, e) = session.run(&format!("SELECT '{probe}';"))?;
        if e.contains("53100") {
            ensure!(e.contains("audit log cannot be written"), "{e}");
            ensure!(e.contains("No space left on device"), "{e}");
            refused = Some(probe);
            break;
        }
        ensure!(o.trim() == probe, "{o} {e}");
        ran.push(probe);
    }
    let refused = refused.context("no statement was refused on a full disk")?;

    // While full: new work of every kind is refused, and said so.
    let (o, e) = session.run("SELECT 'refused-again';")?;
    ensure!(o.is_empty() && e.contains("53100"), "{o} {e}");
    let line = pgstart()?;
    ensure!(
        line.starts_with("error FATAL 53100 interlock: the audit log cannot be written"),
        "{line}"
    );
    let out = new_psql("SELECT 'refused-new-session'")?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("audit log cannot be written"),
        "{err}"
    );
    let out = muxed("echo refused-exec")?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("audit log cannot be written"),
        "exec on a live connection: {out:?}"
    );
    let out = ssh(&[], "echo refused-session")?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("audit log cannot be written"),
        "new ssh session: {out:?}"
    );
    let reply = client_in(&cg, &["echo", &echo_addr, "x"], &[])?;
    ensure!(reply.starts_with("err ConnectionReset"), "tcp: {reply}");
    let status = wait_writable(&d, false)?;
    ensure!(
        status["audit"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("No space left on device")),
        "{status}"
    );
    ensure!(
        status["audit"]["refused_sessions"].as_u64() >= Some(4),
        "{status}"
    );
    ensure!(
        status["audit"]["refused_requests"].as_u64() >= Some(3),
        "{status}"
    );
    let sock = d.socket().display().to_string();
    let text = d.cli(&["status", "--socket", &sock])?;
    ensure!(
        !text.ok && text.stdout.contains("audit:     CANNOT BE WRITTEN"),
        "{text:?}"
    );

    // Space again: the daemon admits by itself, the live session included.
    std::fs::remove_file(&filler)?;
    wait_writable(&d, true)?;
    let (o, e) = session.run("SELECT 'live-after';")?;
    ensure!(o.trim() == "live-after", "{o} {e}");
    let out = new_psql("SELECT 'after-full'")?;
    ensure!(out.status.success(), "{out:?}");
    let out = muxed("echo after-full")?;
    ensure!(out.status.success(), "{out:?}");
    let reply = client_in(&cg, &["echo", &echo_addr, "y"], &[])?;
    ensure!(
        reply.starts_with("ok echo ") && reply.ends_with(" y"),
        "{reply}"
    );
    let text = d.cli(&["status", "--socket", &sock])?;
    ensure!(
        text.ok && text.stdout.contains("audit:     writable"),
        "{text:?}"
    );

    drop(session);
    let _ = master.kill();
    let _ = master.wait();
    d.signal_and_wait(libc::SIGTERM)?;
    let verify = d.cli(&["audit", "verify", &d.state_dir.display().to_string()])?;
    ensure!(verify.ok, "{verify:?}");

    // Everything that ran is in the chain; nothing refused is.
    let chain = d.audit_events();
    let texts: Vec<&str> = of_type(&chain, "statement")
        .iter()
        .filter_map(|e| e["text"].as_str())
        .collect();
    for want in ["before-full", "live-before", "live-after", "after-full"]
        .iter()
        .copied()
        .chain(ran.iter().map(String::as_str))
    {
        ensure!(
            texts.iter().any(|t| t.contains(&format!("'{want}'"))),
            "{want} ran but is not in the audit log: {texts:?}"
        );
    }
    for not in [refused.as_str(), "refused-again", "refused-new-session"] {
        ensure!(
            !texts.iter().any(|t| t.contains(&format!("'{not}'"))),
            "{not} was refused but recorded"
        );
    }
    let commands: Vec<&str> = of_type(&chain, "command")
        .iter()
        .filter_map(|e| e["text"].as_str())
        .collect();
    ensure!(commands.contains(&"echo after-full"), "{commands:?}");
    ensure!(
        !commands.iter().any(|c| c.contains("refused")),
        "{commands:?}"
    );
    let outage = of_type(&chain, "audit_write_failed");
    ensure!(outage.len() == 1, "{outage:?}");
    eprintln!(
        "{} statements ran on the full disk before {refused} was refused; the outage: {}",
        ran.len(),
        outage[0]
    );
    ensure!(
        outage[0]["refused_sessions"].as_u64() >= Some(4),
        "{outage:?}"
    );
    // Every session that started also ended in the log.
    let started = of_type(&chain, "session_started").len();
    let ended = of_type(&chain, "session_ended").len();
    ensure!(started == ended, "{started} started, {ended} ended");
    // The JSONL sink was caught up: the same events, the same seqs.
    let seqs =
        |evs: &[Value]| -> Vec<u64> { evs.iter().filter_map(|e| e["seq"].as_u64()).collect() };
    ensure!(
        seqs(&d.events()) == seqs(&chain),
        "events.jsonl differs from the chain"
    );
    drop(disk);
    Ok(())
}
