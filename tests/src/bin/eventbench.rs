//! The audit and webhook paths for `cargo xtask bench`: emits N `statement` events and
//! measures until they are all durable (append modes) or delivered to a loopback receiver
//! (delivery modes). Prints one JSON line: count, total seconds, events/s.
//!
//!   eventbench plain   N DIR   baseline: the same events serialized as JSON lines by a
//!                              writer thread behind a bounded channel, appended to one file,
//!                              flush + fdatasync every 100 ms and at the end
//!   eventbench audit   N DIR   interlock's EventLog with the default AuditOptions (hash
//!                              chain, signed checkpoints, events.jsonl; fdatasync every
//!                              100 ms), until its thread has written the final checkpoint
//!   eventbench post    N DIR   baseline: the same events in batches of 10 (JSON arrays),
//!                              signed and POSTed one request at a time with one HTTP client
//!   eventbench webhook N DIR   the EventLog with a webhook endpoint (default batch 10, spool
//!                              under DIR) until the receiver has every event

use std::{
    fs::File,
    io::{BufWriter, Write as _},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use interlock::{
    audit::{AuditOptions, DecisionView, Disposition, Event, EventKind, EventLog, Rotation},
    gate::StatementClass,
    sinks::{Secrets, WebhookOptions, WebhookSpec, Webhooks, client, parse_url, post},
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{Notify, mpsc},
};
use tokio_util::sync::CancellationToken;

const HOST: &str = "bench-host";
/// The daemon's default `--webhook-batch`.
const BATCH: usize = 10;
const SYNC_EVERY: Duration = Duration::from_millis(100);
/// A base64 key (32 bytes) for signing; the receiver does not check signatures.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw/VKDxJ84j7M=";

fn statement(i: u64) -> EventKind {
    EventKind::Statement {
        session_id: "0192f7a0-0000-7000-8000-000000000000".into(),
        target: "bench-pg".into(),
        text: Some(format!(
            "SELECT abalance FROM pgbench_accounts WHERE aid = {i}"
        )),
        params: None,
        classes: vec![StatementClass::Read],
        opaque: None,
        decision: DecisionView {
            action: Disposition::Allowed,
            rule: None,
        },
        rows: Some(1),
        error: None,
        duration_ms: 0,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, count, dir] = &args[..] else {
        eprintln!("usage: eventbench plain|audit|post|webhook N DIR");
        return ExitCode::from(2);
    };
    let Ok(count) = count.parse::<u64>() else {
        eprintln!("eventbench: bad count {count:?}");
        return ExitCode::from(2);
    };
    let dir = PathBuf::from(dir);
    let result = match mode.as_str() {
        "plain" => plain(count, &dir).await,
        "audit" => audit(count, &dir).await,
        "post" => direct_post(count, &dir).await,
        "webhook" => webhook(count, &dir).await,
        other => Err(format!("unknown mode {other:?}")),
    };
    match result {
        Ok(secs) => {
            #[allow(clippy::cast_precision_loss)]
            let rate = count as f64 / secs;
            println!(
                "{}",
                json!({ "mode": mode, "count": count, "total_secs": secs, "rate_per_sec": rate })
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("eventbench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Seconds until `count` plain lines are written and synced.
async fn plain(count: u64, dir: &Path) -> Result<f64, String> {
    let file = File::create(dir.join("plain.jsonl")).map_err(|e| e.to_string())?;
    let (tx, mut rx) = mpsc::channel::<Event>(4096);
    let started = Instant::now();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut out = BufWriter::new(file);
        let mut last_sync = Instant::now();
        let mut seq = 0u64;
        while let Some(ev) = rx.blocking_recv() {
            seq += 1;
            let mut line = serde_json::to_vec(&json!({ "seq": seq, "event": &ev }))?;
            line.push(b'\n');
            out.write_all(&line)?;
            if last_sync.elapsed() >= SYNC_EVERY {
                out.flush()?;
                out.get_ref().sync_data()?;
                last_sync = Instant::now();
            }
        }
        out.flush()?;
        out.get_ref().sync_data()
    });
    for i in 0..count {
        tx.send(Event::now(HOST, statement(i)))
            .await
            .map_err(|e| e.to_string())?;
    }
    drop(tx);
    writer
        .join()
        .map_err(|_| "writer panicked".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(started.elapsed().as_secs_f64())
}

/// Seconds until the EventLog thread has written, synced and checkpointed `count` events.
async fn audit(count: u64, dir: &Path) -> Result<f64, String> {
    let (log, sink) = EventLog::open(dir, HOST, AuditOptions::default(), Rotation::default())
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let thread = log.spawn_thread().map_err(|e| e.to_string())?;
    for i in 0..count {
        sink.emit(statement(i)).await.map_err(|e| e.to_string())?;
    }
    drop(sink);
    thread.join().map_err(|_| "log thread panicked")?;
    Ok(started.elapsed().as_secs_f64())
}

/// Seconds until `count` events, POSTed directly in batches, were all accepted.
async fn direct_post(count: u64, dir: &Path) -> Result<f64, String> {
    let receiver = Receiver::start().await?;
    let secrets = secrets(dir)?;
    let client = client().map_err(|e| e.to_string())?;
    let url = parse_url(&receiver.url).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut i = 0;
    while i < count {
        let n = (count - i).min(BATCH as u64);
        let bodies: Vec<Value> = (i..i + n)
            .map(|k| json!(Event::now(HOST, statement(k))))
            .collect();
        let id = format!("batch-{i}");
        let body = serde_json::to_vec(&bodies).map_err(|e| e.to_string())?;
        let resp = post(&client, &url, Some(&secrets), &id, body)
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("receiver answered {}", resp.status()));
        }
        i += n;
    }
    receiver.wait_for(count).await;
    Ok(started.elapsed().as_secs_f64())
}

/// Seconds until the receiver has all `count` events emitted into the EventLog.
async fn webhook(count: u64, dir: &Path) -> Result<f64, String> {
    let receiver = Receiver::start().await?;
    secrets(dir)?;
    let opts = WebhookOptions {
        endpoints: vec![WebhookSpec {
            url: parse_url(&receiver.url).map_err(|e| e.to_string())?,
            secret_file: None,
        }],
        secret_file: Some(dir.join("webhook.secret")),
        batch: BATCH,
        spool_bytes: 256 << 20,
    };
    let (spools, deliveries, _) = Webhooks::open(&opts, dir)
        .map_err(|e| e.to_string())?
        .into_parts();
    let (mut log, sink) = EventLog::open(dir, HOST, AuditOptions::default(), Rotation::default())
        .map_err(|e| e.to_string())?;
    log.add_spools(spools);
    let stop = CancellationToken::new();
    let started = Instant::now();
    let thread = log.spawn_thread().map_err(|e| e.to_string())?;
    let tasks: Vec<_> = deliveries
        .into_iter()
        .map(|d| tokio::spawn(d.run(sink.clone(), stop.clone())))
        .collect();
    for i in 0..count {
        sink.emit(statement(i)).await.map_err(|e| e.to_string())?;
    }
    receiver.wait_for(count).await;
    let secs = started.elapsed().as_secs_f64();
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    drop(sink);
    thread.join().map_err(|_| "log thread panicked")?;
    Ok(secs)
}

fn secrets(dir: &Path) -> Result<Secrets, String> {
    let path = dir.join("webhook.secret");
    std::fs::write(&path, format!("{SECRET}\n")).map_err(|e| e.to_string())?;
    Secrets::load(&path).map_err(|e| e.to_string())
}

/// A loopback HTTP/1.1 receiver answering 204 to every POST and counting the `statement`
/// events in the bodies (one event or a JSON array of them).
struct Receiver {
    url: String,
    received: Arc<AtomicU64>,
    arrived: Arc<Notify>,
}

impl Receiver {
    async fn start() -> Result<Receiver, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let received = Arc::new(AtomicU64::new(0));
        let arrived = Arc::new(Notify::new());
        let (r, a) = (received.clone(), arrived.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, r.clone(), a.clone()));
            }
        });
        Ok(Receiver {
            url: format!("http://{addr}/events"),
            received,
            arrived,
        })
    }

    async fn wait_for(&self, count: u64) {
        loop {
            let notified = self.arrived.notified();
            if self.received.load(Ordering::SeqCst) >= count {
                return;
            }
            notified.await;
        }
    }
}

/// One keep-alive connection: requests with a Content-Length body, each answered 204.
async fn serve(mut stream: TcpStream, received: Arc<AtomicU64>, arrived: Arc<Notify>) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            }
        };
        let head = String::from_utf8_lossy(buf.get(..head_end).unwrap_or_default()).to_string();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < head_end + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            }
        }
        let body: Vec<u8> = buf.drain(..head_end + length).skip(head_end).collect();
        let events = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Array(items)) => items.iter().filter(|e| is_statement(e)).count(),
            Ok(one) if is_statement(&one) => 1,
            _ => 0,
        };
        if stream
            .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        received.fetch_add(events as u64, Ordering::SeqCst);
        arrived.notify_waiters();
    }
}

/// A statement event: interlock's own form, or an OCSF body carrying it under `unmapped`.
fn is_statement(e: &Value) -> bool {
    e["type"] == "statement" || e["unmapped"]["type"] == "statement"
}
