//! The job must not choose the server that receives an injected password
//! (issue 15 item 2). A target matching a whole range with an injected
//! password: a job runs fake servers on other addresses of the range that
//! ask for the password in cleartext or as md5. `policy check` refuses the
//! target until `upstream.servers` pins where the password goes; then the
//! daemon never dials an unlisted address, a listed server asking for
//! cleartext or md5 gets nothing (SCRAM only, by default), and the real
//! server still works. Real psql in a scope cgroup, the kernel redirect,
//! PostgreSQL on 127.0.0.81, fakes on 127.0.0.82-84.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Command, Output},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Result;
use interlock_tests::{postgres::*, *};

/// What a fake server asks for once a client has started up.
#[derive(Clone, Copy)]
enum Ask {
    Cleartext,
    Md5,
}

/// A server that answers 'N' to SSLRequest, asks for a password and keeps
/// whatever it is sent after that.
struct FakeServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeServer {
    fn start(addr: SocketAddr, ask: Ask) -> Result<FakeServer> {
        let listener = TcpListener::bind(addr)?;
        let connections = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, r, s) = (connections.clone(), received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let got = serve_fake(conn, ask);
                r.lock().unwrap().extend_from_slice(&got);
            }
        });
        Ok(FakeServer {
            addr,
            connections,
            received,
            stop,
            thread: Some(thread),
        })
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn received(&self) -> Vec<u8> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection: startup (refusing TLS), the password request, then
/// everything the client sends until it closes (or 5 s pass).
fn serve_fake(mut s: TcpStream, ask: Ask) -> Vec<u8> {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    loop {
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).is_err() {
            return vec![];
        }
        let len = u32::from_be_bytes(len) as usize;
        let mut body = vec![0u8; len.saturating_sub(4).min(10_000)];
        if s.read_exact(&mut body).is_err() {
            return vec![];
        }
        let code = body
            .get(..4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
        // SSLRequest, GSSENCRequest: no.
        if code == Some(80877103) || code == Some(80877104) {
            let _ = s.write_all(b"N");
            continue;
        }
        break;
    }
    let request: Vec<u8> = match ask {
        Ask::Cleartext => [&b"R"[..], &8u32.to_be_bytes(), &3u32.to_be_bytes()].concat(),
        Ask::Md5 => [
            &b"R"[..],
            &12u32.to_be_bytes(),
            &5u32.to_be_bytes(),
            &[1, 2, 3, 4],
        ]
        .concat(),
    };
    let _ = s.write_all(&request);
    let mut got = vec![];
    let _ = s.read_to_end(&mut got);
    got
}

fn psql(cg: &TestCgroup, addr: SocketAddr) -> Command {
    let (host, port) = (addr.ip().to_string(), addr.port().to_string());
    let mut c = cg.command(
        std::path::Path::new("/usr/bin/psql"),
        &[
            "-X",
            "-At",
            "-h",
            &host,
            "-p",
            &port,
            "-U",
            ROLE,
            "-d",
            DATABASE,
            "-c",
            "select current_user",
        ],
    );
    c.env("PGPASSWORD", "not-the-password")
        .env("PGSSLMODE", "disable")
        .env("PGCONNECT_TIMEOUT", "20");
    c
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn a_job_cannot_pick_the_server_that_gets_the_injected_password() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let pg = PgServer::start("127.0.0.81")?;
    let port = pg.addr.port();
    let at = |ip: &str| SocketAddr::new(ip.parse().unwrap(), port);
    let secret = pg.password_file()?;
    let target = |servers: &str| {
        format!(
            "version: 1
targets:
  - name: app-db
    protocol: postgres
    match: [{{address: 127.0.0.0/8, port: {port}}}]
    upstream: {{user: {ROLE}, password: {{file: {pw}}}, tls: disable{servers}}}
",
            pw = secret.display()
        )
    };

    // The range with an injected password and nothing pinning it is refused,
    // naming the target and the way out.
    let dir = std::env::temp_dir().join(unique("il-pin"));
    std::fs::create_dir_all(&dir)?;
    let unpinned = dir.join("unpinned.yaml");
    std::fs::write(&unpinned, target(""))?;
    let out = Command::new(interlock_bin()?)
        .args(["policy", "check"])
        .arg(&unpinned)
        .output()?;
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("target `app-db`: an injected password with match 127.0.0.0/8")
            && stderr.contains("upstream.servers"),
        "{stderr}"
    );
    // Pinned, it passes, with a warning that the server is not verified.
    let pinned = dir.join("pinned.yaml");
    std::fs::write(
        &pinned,
        target(", servers: [127.0.0.81, 127.0.0.83, 127.0.0.84]"),
    )?;
    let out = Command::new(interlock_bin()?)
        .args(["policy", "check"])
        .arg(&pinned)
        .output()?;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("ok (1 targets"), "{stdout}");
    assert!(
        stderr.contains("warning: target `app-db`: the injected password is sent without checking the server's certificate (tls: disable)"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    // The job's fakes: one on an unlisted address, two on listed ones (a
    // job that can listen on a listed address while the real server is
    // down is what password_auth guards against).
    let unlisted = FakeServer::start(at("127.0.0.82"), Ask::Cleartext)?;
    let listed_md5 = FakeServer::start(at("127.0.0.83"), Ask::Md5)?;
    let listed_clear = FakeServer::start(at("127.0.0.84"), Ask::Cleartext)?;

    let cg = TestCgroup::new("pg-pin")?;
    let d = Daemon::start(DaemonSpec::with_policy(
        &cg,
        &target(", servers: [127.0.0.81, 127.0.0.83, 127.0.0.84]"),
        &[],
    ))?;

    // Unlisted: interlock never dials it; the client is told why.
    let out = psql(&cg, unlisted.addr).output()?;
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("127.0.0.82 is not one of `upstream.servers`"),
        "{stderr}\n{}",
        d.log()
    );
    assert_eq!(
        unlisted.connections(),
        0,
        "interlock dialled the job's server"
    );

    // Listed, but asking for md5 or cleartext: dialled, nothing sent.
    for (fake, how) in [(&listed_md5, "as md5"), (&listed_clear, "in cleartext")] {
        let out = psql(&cg, fake.addr).output()?;
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("the server asked for the password {how}"))
                && stderr.contains("`upstream.password_auth`"),
            "{stderr}\n{}",
            d.log()
        );
        assert_eq!(fake.connections(), 1);
    }
    for fake in [&unlisted, &listed_md5, &listed_clear] {
        let got = fake.received();
        assert!(
            got.is_empty(),
            "{} received {:?}",
            fake.addr,
            String::from_utf8_lossy(&got)
        );
    }

    // The real server in the same range still works, with SCRAM.
    let out = psql(&cg, pg.addr).output()?;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}\n{}", d.log());
    assert_eq!(stdout, ROLE);

    // Each refused attempt is recorded with who made it and why.
    let ev = d.wait_events("four ends", |e| of_type(e, "session_ended").len() == 4)?;
    let ended = of_type(&ev, "session_ended");
    let errors: Vec<&str> = ended.iter().filter_map(|e| e["error"].as_str()).collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("127.0.0.82 is not one of `upstream.servers`")),
        "{errors:?}"
    );
    assert_eq!(
        errors
            .iter()
            .filter(|e| e.contains("upstream.password_auth"))
            .count(),
        2,
        "{errors:?}"
    );
    let started = of_type(&ev, "session_started");
    assert_eq!(started.len(), 4);
    assert!(started.iter().all(|s| {
        s["identity"]["process"]["exe"]
            .as_str()
            .unwrap_or_default()
            .ends_with("/psql")
    }));
    assert!(!d.events_text().contains(PASSWORD));
    Ok(())
}
