//! Full-duplex load through a relay, from a socket with tiny kernel
//! buffers, for the tests that force flow control (`relay_flow.rs`). Run
//! inside a scope cgroup, so the connects are intercepted. Prints one JSON
//! line: sessions that finished, failures (with the first error), bytes
//! each way.
//!
//!   pipeclient pg  ADDR USER DATABASE --sessions N --queries Q --size BYTES --buffer B
//!       N sessions at once (tokio-postgres, no TLS, password from PGPASSWORD);
//!       each pipelines Q `select $1::text` with BYTES-long values before
//!       reading any result, and checks every value comes back unchanged.
//!   pipeclient tcp ADDR --sessions N --size BYTES --buffer B
//!       N connections at once, each writing BYTES while reading them back
//!       from an echo server, checking every byte.
//!   pipeclient stream --sessions N --size BYTES -- PROGRAM ARGS...
//!       N copies of PROGRAM at once (e.g. `ssh host cat`), each fed BYTES on
//!       stdin while its stdout is read and checked to be the same bytes.
//!   (tcp and stream) --stall-ms MS: after the first MiB came back, stop
//!       reading for MS while writing on: a consumer slower than its producer.
//!   pipeclient pipe ADDR --buffer B
//!       stdin to a tiny-buffer connection to ADDR and the connection to
//!       stdout (an ssh ProxyCommand), until both ends closed.

use std::{net::SocketAddr, process::ExitCode};

use futures_util::future::try_join_all;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpSocket, TcpStream},
    task::JoinSet,
};
use tokio_postgres::{Config, NoTls};

struct Opts {
    sessions: usize,
    queries: usize,
    size: usize,
    buffer: u32,
    /// Milliseconds the reader stops reading after the first MiB came back
    /// (a slow consumer), while the writer goes on.
    stall_ms: u64,
}

fn parse_opts(rest: &[String]) -> Result<(Vec<String>, Opts), String> {
    let mut o = Opts {
        sessions: 1,
        queries: 16,
        size: 1 << 20,
        buffer: 4096,
        stall_ms: 0,
    };
    let mut positional = Vec::new();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<usize, String> {
            let v = it.next().ok_or(format!("{name} needs a number"))?;
            v.parse().map_err(|_| format!("bad {name} {v:?}"))
        };
        match a.as_str() {
            "--sessions" => o.sessions = num("--sessions")?,
            "--queries" => o.queries = num("--queries")?,
            "--size" => o.size = num("--size")?,
            "--buffer" => o.buffer = u32::try_from(num("--buffer")?).map_err(|e| e.to_string())?,
            "--stall-ms" => o.stall_ms = num("--stall-ms")? as u64,
            f if f.starts_with("--") => return Err(format!("unknown option {f}")),
            w => positional.push(w.to_string()),
        }
    }
    Ok((positional, o))
}

/// A connected socket whose send and receive buffers were made small
/// before the handshake.
async fn tiny(addr: SocketAddr, buffer: u32) -> std::io::Result<TcpStream> {
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_send_buffer_size(buffer)?;
    s.set_recv_buffer_size(buffer)?;
    s.connect(addr).await
}

/// Value `i` of a session: distinct per query so a mix-up shows.
fn value(i: usize, size: usize) -> String {
    let mut v = format!("{i:08}:");
    let fill = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut k = i;
    while v.len() < size {
        v.push(char::from(fill[k % fill.len()]));
        k += 7;
    }
    v.truncate(size);
    v
}

async fn pg_session(addr: SocketAddr, cfg: Config, o: &Opts) -> Result<u64, String> {
    let stream = tiny(addr, o.buffer)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (client, conn) = cfg
        .connect_raw(stream, NoTls)
        .await
        .map_err(|e| format!("startup: {e}"))?;
    let driver = tokio::spawn(conn);
    let stmt = client
        .prepare("select $1::text")
        .await
        .map_err(|e| format!("prepare: {e}"))?;
    let values: Vec<String> = (0..o.queries).map(|i| value(i, o.size)).collect();
    // All sent before any result is read: tokio-postgres writes requests
    // while it reads responses.
    let (c, st) = (&client, &stmt);
    let rows = try_join_all(
        values
            .iter()
            .map(|v| async move { c.query_one(st, &[v]).await }),
    )
    .await
    .map_err(|e| format!("query: {e}"))?;
    for (i, (row, sent)) in rows.iter().zip(&values).enumerate() {
        let got: &str = row.get(0);
        if got != sent {
            return Err(format!("query {i}: a different value came back"));
        }
    }
    drop(client);
    let _ = driver.await;
    Ok((o.queries * o.size) as u64)
}

/// The byte at `offset` of every stream these tests send.
fn pattern(offset: usize) -> u8 {
    (offset % 65536 % 251) as u8
}

/// Writes `size` pattern bytes to `w` and closes it, while reading `r` to
/// its end and checking it returns exactly those bytes.
async fn both_ways(
    mut r: impl tokio::io::AsyncRead + Unpin,
    mut w: impl tokio::io::AsyncWrite + Unpin,
    size: usize,
    stall_ms: u64,
) -> Result<u64, String> {
    let writer = async move {
        let chunk: Vec<u8> = (0..65536).map(pattern).collect();
        let mut sent = 0;
        while sent < size {
            let n = chunk.len().min(size - sent);
            w.write_all(&chunk[..n]).await?;
            sent += n;
        }
        w.shutdown().await
    };
    let reader = async move {
        let mut buf = vec![0u8; 65536];
        let mut got = 0usize;
        let mut stalled = stall_ms == 0;
        loop {
            if !stalled && got >= 1 << 20 {
                stalled = true;
                tokio::time::sleep(std::time::Duration::from_millis(stall_ms)).await;
            }
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(got);
            }
            for (k, b) in buf[..n].iter().enumerate() {
                if *b != pattern(got + k) {
                    return Err(std::io::Error::other(format!("byte {} differs", got + k)));
                }
            }
            got += n;
        }
    };
    let (w, r) = tokio::join!(writer, reader);
    w.map_err(|e| format!("write: {e}"))?;
    let got = r.map_err(|e| format!("read: {e}"))?;
    if got != size {
        return Err(format!("{got} of {size} bytes came back"));
    }
    Ok(size as u64)
}

async fn stream_session(program: &[String], o: &Opts) -> Result<u64, String> {
    let (prog, args) = program.split_first().ok_or("no program")?;
    let mut child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{prog}: {e}"))?;
    let (Some(w), Some(r)) = (child.stdin.take(), child.stdout.take()) else {
        return Err("no pipes".into());
    };
    let moved = both_ways(r, w, o.size, o.stall_ms).await;
    let status = child.wait().await.map_err(|e| e.to_string())?;
    let moved = moved?;
    if !status.success() {
        return Err(format!("{prog} exited with {status}"));
    }
    Ok(moved)
}

/// `pipe` mode: a ProxyCommand with a tiny-buffer socket.
async fn pipe(addr: SocketAddr, buffer: u32) -> ExitCode {
    let stream = match tiny(addr, buffer).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pipeclient pipe: connect {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (mut r, mut w) = stream.into_split();
    let up = async {
        let mut stdin = tokio::io::stdin();
        tokio::io::copy(&mut stdin, &mut w).await?;
        w.shutdown().await
    };
    let down = async {
        let mut stdout = tokio::io::stdout();
        tokio::io::copy(&mut r, &mut stdout).await?;
        stdout.flush().await
    };
    match tokio::try_join!(up, down) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pipeclient pipe: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn tcp_session(addr: SocketAddr, o: &Opts) -> Result<u64, String> {
    let stream = tiny(addr, o.buffer)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (r, w) = stream.into_split();
    both_ways(r, w, o.size, o.stall_ms).await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: pipeclient pg ADDR USER DATABASE [opts] | tcp ADDR [opts] \
                 | stream [opts] -- PROGRAM ARGS... | pipe ADDR --buffer B";
    let program = match args.iter().position(|a| a == "--") {
        Some(i) => args.split_off(i).split_off(1),
        None => Vec::new(),
    };
    let Some((mode, rest)) = args.split_first() else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let (pos, opts) = match parse_opts(rest) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("pipeclient: {e}\n{usage}");
            return ExitCode::from(2);
        }
    };
    let addr = pos.first().and_then(|a| a.parse::<SocketAddr>().ok());
    let addr = match (mode.as_str(), addr) {
        ("stream", _) => SocketAddr::from(([0, 0, 0, 0], 0)),
        (_, Some(a)) => a,
        (_, None) => {
            eprintln!("pipeclient: no address\n{usage}");
            return ExitCode::from(2);
        }
    };
    if mode == "pipe" {
        return pipe(addr, opts.buffer).await;
    }
    let program = std::sync::Arc::new(program);
    let opts = std::sync::Arc::new(opts);
    let mut set = JoinSet::new();
    for _ in 0..opts.sessions {
        let o = opts.clone();
        match mode.as_str() {
            "pg" => {
                let (Some(user), Some(db)) = (pos.get(1), pos.get(2)) else {
                    eprintln!("{usage}");
                    return ExitCode::from(2);
                };
                let mut cfg = Config::new();
                cfg.user(user)
                    .dbname(db)
                    .password(std::env::var("PGPASSWORD").unwrap_or_default());
                set.spawn(async move { pg_session(addr, cfg, &o).await });
            }
            "tcp" => {
                set.spawn(async move { tcp_session(addr, &o).await });
            }
            "stream" => {
                let program = program.clone();
                set.spawn(async move { stream_session(&program, &o).await });
            }
            other => {
                eprintln!("pipeclient: unknown mode {other}\n{usage}");
                return ExitCode::from(2);
            }
        }
    }
    let (mut ok, mut failed, mut bytes, mut first) = (0u64, 0u64, 0u64, None);
    while let Some(r) = set.join_next().await {
        match r.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(b) => {
                ok += 1;
                bytes += b;
            }
            Err(e) => {
                failed += 1;
                first.get_or_insert(e);
            }
        }
    }
    println!(
        "{}",
        json!({"ok": ok, "failed": failed, "bytes_each_way": bytes, "first_error": first})
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
