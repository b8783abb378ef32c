//! A real HTTP/1.1 webhook receiver on a loopback address, and the checks
//! of what it received: signatures by our own HMAC and by the independent
//! Python `standardwebhooks`, OCSF bodies by the Python `pydantic-ocsf`
//! models of OCSF 1.3.0.

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
use serde_json::Value;
use sha2::Sha256;

use crate::{Daemon, DaemonSpec, EchoServer, TestCgroup, client_in};

/// How the receiver answers.
#[derive(Clone, Debug)]
pub enum Mode {
    /// 200 after a pause.
    Slow(Duration),
    /// This status, no extra header.
    Status(u16),
    /// This status with a `Retry-After` header of this value.
    RetryAfter(u16, String),
    /// This status with a `Retry-After` HTTP-date this many seconds after
    /// the answer.
    RetryAt(u16, u64),
}

/// One request as received, and what was answered.
#[derive(Clone, Debug)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
    pub status: u16,
    pub at: Instant,
}

impl Received {
    /// The body's events (one, or the elements of a batch).
    pub fn events(&self) -> Vec<Value> {
        match serde_json::from_str::<Value>(&self.body) {
            Ok(Value::Array(a)) => a,
            Ok(one) => vec![one],
            Err(_) => Vec::new(),
        }
    }
}

/// A minimal receiver; `modes` are used one per request, the last one
/// for every request after.
pub struct Receiver {
    pub addr: std::net::SocketAddr,
    modes: Arc<Mutex<Vec<Mode>>>,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    /// A free port on `ip`, closed again (the receiver is down).
    pub fn reserve(ip: &str) -> Result<u16> {
        Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
    }

    /// Listens on `ip:port` (a port from [`Receiver::reserve`]).
    pub fn start(ip: &str, port: u16, modes: Vec<Mode>) -> Result<Receiver> {
        let listener = TcpListener::bind((ip, port)).context("bind the webhook receiver")?;
        let r = Receiver {
            addr: listener.local_addr()?,
            modes: Arc::new(Mutex::new(modes)),
            got: Arc::default(),
        };
        let (m, g) = (r.modes.clone(), r.got.clone());
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

    /// The endpoint URL with `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers every request from now on with `mode`.
    pub fn set(&self, mode: Mode) {
        *self.modes.lock().unwrap() = vec![mode];
    }

    /// Everything received so far.
    pub fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Ids of the events in bodies answered 2xx, first arrival order, once each.
    pub fn delivered_ids(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in self.got().iter().filter(|r| (200..300).contains(&r.status)) {
            for e in r.events() {
                if let Some(id) = event_id(&e)
                    && !out.contains(&id)
                {
                    out.push(id);
                }
            }
        }
        out
    }

    /// Waits (up to `within`) until every id in `want` was delivered.
    pub fn wait_delivered(&self, want: &[String], within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.delivered_ids();
            let missing: Vec<&String> = want.iter().filter(|id| !got.contains(id)).collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} of {} events not delivered, e.g. {:?}",
                    missing.len(),
                    want.len(),
                    missing.first()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The interlock event id of a delivered body (OCSF `metadata.uid`).
pub fn event_id(e: &Value) -> Option<String> {
    e["metadata"]["uid"].as_str().map(String::from)
}

fn serve(s: TcpStream, modes: &Mutex<Vec<Mode>>, got: &Mutex<Vec<Received>>) -> Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    let mut s = s;
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(());
    }
    let mut len = 0usize;
    let mut rec = Received {
        id: String::new(),
        timestamp: String::new(),
        signature: String::new(),
        body: String::new(),
        status: 0,
        at: Instant::now(),
    };
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
    let mode = {
        let mut m = modes.lock().unwrap();
        if m.len() > 1 {
            m.remove(0)
        } else {
            m[0].clone()
        }
    };
    let (status, extra) = match mode {
        Mode::Slow(d) => {
            std::thread::sleep(d);
            (200, String::new())
        }
        Mode::Status(c) => (c, String::new()),
        Mode::RetryAfter(c, v) => (c, format!("retry-after: {v}\r\n")),
        Mode::RetryAt(c, secs) => {
            let at = std::time::SystemTime::now() + Duration::from_secs(secs);
            (
                c,
                format!("retry-after: {}\r\n", httpdate::fmt_http_date(at)),
            )
        }
    };
    rec.status = status;
    got.lock().unwrap().push(rec);
    write!(
        s,
        "HTTP/1.1 {status} X\r\n{extra}content-length: 2\r\nconnection: close\r\n\r\nok"
    )?;
    Ok(())
}

/// Runs `n` echo sessions through the daemon from `cg`.
pub fn echo_sessions(cg: &TestCgroup, echo: &EchoServer, n: usize) -> Result<()> {
    let dst = format!("127.0.0.2:{}", echo.addr.port());
    for i in 0..n {
        let reply = client_in(cg, &["echo", &dst, &format!("m{i}")], &[])?;
        anyhow::ensure!(reply.starts_with("ok echo "), "{reply}");
    }
    Ok(())
}

/// Ids of the events the daemon's audit log holds, in log order.
pub fn logged_ids(d: &Daemon) -> Vec<String> {
    d.audit_events()
        .iter()
        .filter_map(|e| e["id"].as_str().map(String::from))
        .collect()
}

/// A daemon relaying tcp to `echo`, from `cg`, with `--webhook` for each
/// of `webhooks`, `secrets` as `--webhook-secret-file`, and `extra` args.
pub fn webhook_daemon(
    cg: &TestCgroup,
    echo: &EchoServer,
    webhooks: &[String],
    secrets: &Path,
    extra: &[&str],
) -> Result<Daemon> {
    let mut args: Vec<&str> = Vec::new();
    for w in webhooks {
        args.extend(["--webhook", w.as_str()]);
    }
    args.extend([
        "--webhook-secret-file",
        secrets.to_str().context("secret path")?,
    ]);
    args.extend_from_slice(extra);
    Daemon::start(DaemonSpec::tcp(cg, &[echo.addr.port()], &args))
}

/// Writes `secrets` (one a line) to `<dir>/<name>`.
pub fn secret_file(dir: &Path, name: &str, secrets: &[&str]) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let f = dir.join(name);
    std::fs::write(&f, secrets.join("\n"))?;
    Ok(f)
}

/// Checks that every request carries a valid `v1,` signature for each of
/// `secrets`, with our own HMAC.
pub fn verify_rust(got: &[Received], secrets: &[&str]) {
    for r in got {
        for s in secrets {
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

/// Runs `script` with one JSON line per item on stdin; returns its stdout.
fn python(script: &str, lines: &[Value], what: &str) -> Result<String> {
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    {
        let mut stdin = child.stdin.take().context("stdin")?;
        for l in lines {
            writeln!(stdin, "{l}")?;
        }
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{what} (run `cargo xtask setup` if it is missing): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Verifies every request with the Python `standardwebhooks` package, once
/// per secret; `Err` if any signature fails.
pub fn verify_python(got: &[Received], secrets: &[&str]) -> Result<()> {
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
    let mut lines = Vec::new();
    for r in got {
        for s in secrets {
            lines.push(
                serde_json::json!({"secret": s, "id": r.id, "ts": r.timestamp,
                "sig": r.signature, "body": r.body}),
            );
        }
    }
    let n = python(SCRIPT, &lines, "standardwebhooks rejected a request")?;
    assert_eq!(n, lines.len().to_string());
    Ok(())
}

/// Validates each OCSF event with the `pydantic-ocsf` model of its class
/// (OCSF 1.3.0: required attributes, types, enum values) and checks that
/// `type_uid` and `category_uid` agree with the class; returns the
/// `class_uid`s seen.
pub fn verify_ocsf(events: &[Value]) -> Result<Vec<u64>> {
    const SCRIPT: &str = r#"
import json, sys
from ocsf.v1_3_0 import events as E
classes = {1007: E.ProcessActivity, 1008: E.EventLog, 3003: E.AuthorizeSession,
           4001: E.NetworkActivity, 4007: E.SshActivity, 6002: E.ApplicationLifecycle,
           6005: E.DatastoreActivity}
seen = []
for line in sys.stdin:
    e = json.loads(line)
    c = e["class_uid"]
    assert e["category_uid"] == c // 1000, e
    assert e["type_uid"] == c * 100 + e["activity_id"], e
    assert e["metadata"]["version"] == "1.3.0", e
    assert isinstance(e["time"], int) and e["time"] > 0, e
    classes[c].model_validate(e)
    seen.append(c)
print(json.dumps(sorted(set(seen))))
"#;
    let out = python(SCRIPT, events, "an OCSF body does not validate")?;
    Ok(serde_json::from_str(&out)?)
}
