//! Webhook delivery through receiver outages, slowness, errors, a SIGKILL,
//! and 410 Gone: every event arrives, signed (checked here and by the
//! independent Python `standardwebhooks`), in event order.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac as _};
use interlock_tests::*;
use serde_json::Value;
use sha2::Sha256;

const SECRETS: [&str; 2] = [
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "whsec_c2Vjb25kLWtleS1mb3Itcm90YXRpb24=",
];

/// How the receiver answers.
#[derive(Clone, Copy)]
enum Mode {
    Slow(Duration),
    Status(u16),
}

/// One request as received, and what we answered.
#[derive(Clone, Debug)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    status: u16,
}

/// A minimal HTTP/1.1 receiver on a fixed loopback port.
struct Receiver {
    mode: Arc<Mutex<Mode>>,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    /// A free loopback port, closed again (the receiver is down).
    fn reserve() -> Result<u16> {
        Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
    }

    fn start(port: u16, mode: Mode) -> Result<Receiver> {
        let listener = TcpListener::bind(("127.0.0.1", port)).context("rebind receiver port")?;
        let r = Receiver {
            mode: Arc::new(Mutex::new(mode)),
            got: Arc::default(),
        };
        let (m, g) = (r.mode.clone(), r.got.clone());
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let (m, g) = (m.clone(), g.clone());
                std::thread::spawn(move || {
                    let _ = serve(s, &m, &g);
                });
            }
        });
        Ok(r)
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

fn serve(s: TcpStream, mode: &Mutex<Mode>, got: &Mutex<Vec<Received>>) -> Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    let mut s = s;
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(());
    }
    let (mut len, mut rec) = (
        0usize,
        Received {
            id: String::new(),
            timestamp: String::new(),
            signature: String::new(),
            body: String::new(),
            status: 0,
        },
    );
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').context("header")?;
        let v = v.trim().to_string();
        match k.to_ascii_lowercase().as_str() {
            "content-length" => len = v.parse()?,
            "webhook-id" => rec.id = v,
            "webhook-timestamp" => rec.timestamp = v,
            "webhook-signature" => rec.signature = v,
            _ => {}
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    rec.body = String::from_utf8(body)?;
    let m = *mode.lock().unwrap();
    let status = match m {
        Mode::Slow(d) => {
            std::thread::sleep(d);
            200
        }
        Mode::Status(c) => c,
    };
    rec.status = status;
    got.lock().unwrap().push(rec);
    write!(
        s,
        "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
    )?;
    Ok(())
}

fn secret_file(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let f = dir.join("webhook.secrets");
    std::fs::write(&f, SECRETS.join("\n"))?;
    Ok(f)
}

/// Checks every signature of every request with our own HMAC: each secret's
/// `v1,` signature is present.
fn verify_rust(got: &[Received]) {
    for r in got {
        for s in SECRETS {
            let key = STANDARD.decode(s.trim_start_matches("whsec_")).unwrap();
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
            mac.update(format!("{}.{}.{}", r.id, r.timestamp, r.body).as_bytes());
            let want = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
            assert!(
                r.signature.split(' ').any(|p| p == want),
                "bad signature: {r:?}"
            );
        }
    }
}

/// Checks every request with the Python `standardwebhooks` package, once per secret.
fn verify_python(got: &[Received]) -> Result<()> {
    const SCRIPT: &str = r#"
import json, sys
from standardwebhooks import Webhook
n = 0
for line in sys.stdin:
    r = json.loads(line)
    Webhook(r["secret"]).verify(r["body"], {
        "webhook-id": r["id"], "webhook-timestamp": r["ts"], "webhook-signature": r["sig"]})
    n += 1
print(n)
"#;
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    {
        let mut stdin = child.stdin.take().context("stdin")?;
        for r in got {
            for s in SECRETS {
                let line = serde_json::json!({"secret": s, "id": r.id, "ts": r.timestamp,
                    "sig": r.signature, "body": r.body});
                writeln!(stdin, "{line}")?;
            }
        }
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "standardwebhooks rejected a request (run `cargo xtask setup` if it is missing): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        (got.len() * SECRETS.len()).to_string()
    );
    Ok(())
}

/// Waits until every logged event was delivered (answered 2xx), then checks
/// the delivered order is the log's order.
fn wait_all_delivered(d: &Daemon, rx: &Receiver, within: Duration) -> Result<Vec<Value>> {
    let deadline = Instant::now() + within;
    loop {
        let events = d.events();
        let mut delivered: Vec<String> = Vec::new();
        for r in rx.got().iter().filter(|r| r.status == 200) {
            if !delivered.contains(&r.id) {
                delivered.push(r.id.clone());
            }
        }
        let logged: Vec<String> = events
            .iter()
            .filter_map(|e| e["id"].as_str().map(String::from))
            .collect();
        if logged.iter().all(|id| delivered.contains(id)) {
            let order: Vec<&String> = delivered.iter().filter(|id| logged.contains(id)).collect();
            let want: Vec<&String> = logged.iter().collect();
            assert_eq!(order, want, "delivery order differs from the log's");
            return Ok(events);
        }
        if Instant::now() > deadline {
            bail!(
                "not every event was delivered: logged {}, delivered {}\nlog:\n{}",
                logged.len(),
                delivered.len(),
                d.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sessions(cg: &TestCgroup, echo: &EchoServer, n: usize) -> Result<()> {
    let dst = format!("127.0.0.2:{}", echo.addr.port());
    for i in 0..n {
        let reply = client_in(cg, &["echo", &dst, &format!("m{i}")], &[])?;
        assert!(reply.starts_with("ok echo "), "{reply}");
    }
    Ok(())
}

fn webhook_daemon(cg: &TestCgroup, echo: &EchoServer, port: u16, tag: &str) -> Result<Daemon> {
    let secrets = secret_file(&std::env::temp_dir().join(unique(tag)))?;
    let url = format!("http://127.0.0.1:{port}/hook");
    Daemon::start(DaemonSpec::tcp(
        cg,
        &[echo.addr.port()],
        &[
            "--webhook",
            &url,
            "--webhook-secret-file",
            secrets.to_str().context("path")?,
        ],
    ))
}

#[test]
fn every_event_arrives_through_down_slow_500_and_up() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let cg = TestCgroup::new("whoutage")?;
    let echo = EchoServer::start("127.0.0.2:0")?;
    let port = Receiver::reserve()?;
    let d = webhook_daemon(&cg, &echo, port, "whoutage")?;
    sessions(&cg, &echo, 3)?; // down
    std::thread::sleep(Duration::from_secs(2));
    let rx = Receiver::start(port, Mode::Slow(Duration::from_millis(1500)))?;
    sessions(&cg, &echo, 3)?;
    std::thread::sleep(Duration::from_secs(3));
    rx.set(Mode::Status(500));
    sessions(&cg, &echo, 3)?;
    std::thread::sleep(Duration::from_secs(3));
    rx.set(Mode::Status(200));
    sessions(&cg, &echo, 3)?;
    let events = wait_all_delivered(&d, &rx, Duration::from_secs(120))?;
    assert_eq!(of_type(&events, "session_ended").len(), 12);
    let got = rx.got();
    assert!(
        got.iter().any(|r| r.status == 500),
        "no request saw the 500 phase"
    );
    // Each body is the logged event itself.
    for r in got.iter().filter(|r| r.status == 200) {
        let body: Value = serde_json::from_str(&r.body)?;
        assert_eq!(body["id"].as_str(), Some(r.id.as_str()));
    }
    verify_rust(&got);
    verify_python(&got)
}

#[test]
fn spooled_events_survive_sigkill() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let cg = TestCgroup::new("whkill")?;
    let echo = EchoServer::start("127.0.0.2:0")?;
    let port = Receiver::reserve()?;
    let mut d = webhook_daemon(&cg, &echo, port, "whkill")?;
    sessions(&cg, &echo, 5)?;
    d.wait_events("five ended sessions", |e| {
        of_type(e, "session_ended").len() == 5
    })?;
    let before: Vec<String> = d
        .events()
        .iter()
        .filter_map(|e| e["id"].as_str().map(String::from))
        .collect();
    d.signal_and_wait(libc::SIGKILL)?;
    let rx = Receiver::start(port, Mode::Status(200))?;
    d.spawn()?;
    // The restarted daemon's own first event must be logged (within 100 ms)
    // before "everything logged was delivered" means anything new.
    d.wait_events("the restart", |e| of_type(e, "daemon_started").len() == 2)?;
    let events = wait_all_delivered(&d, &rx, Duration::from_secs(60))?;
    assert!(events.len() > before.len());
    let got = rx.got();
    for id in &before {
        assert!(got.iter().any(|r| &r.id == id), "{id} lost across SIGKILL");
    }
    verify_rust(&got);
    Ok(())
}

#[test]
fn gone_disables_the_endpoint_for_good() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let cg = TestCgroup::new("whgone")?;
    let echo = EchoServer::start("127.0.0.2:0")?;
    let port = Receiver::reserve()?;
    let rx = Receiver::start(port, Mode::Status(410))?;
    let mut d = webhook_daemon(&cg, &echo, port, "whgone")?;
    let ev = d.wait_events("webhook_disabled", |e| {
        !of_type(e, "webhook_disabled").is_empty()
    })?;
    let dis = of_type(&ev, "webhook_disabled")[0];
    assert_eq!(dis["status"], 410);
    assert_eq!(dis["endpoint"], format!("http://127.0.0.1:{port}/hook"));
    assert_eq!(rx.got().len(), 1);
    // Kept across a restart: nothing more is sent.
    d.signal_and_wait(libc::SIGTERM)?;
    d.spawn()?;
    sessions(&cg, &echo, 2)?;
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(rx.got().len(), 1, "a disabled endpoint got requests");
    assert!(d.log().contains("disabled"), "{}", d.log());
    Ok(())
}
