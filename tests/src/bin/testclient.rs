//! A small TCP client the tests run inside a scope cgroup (the test process
//! itself stays outside). Prints one line per connection: `ok <reply>` or
//! `err <error kind> <message>`.
//!
//!   testclient echo ADDR MSG            one connection: send MSG, print the reply
//!   testclient loop ADDR N              N short connections, prints "done OK FAILED"
//!   testclient hold ADDR SECS MSG       one connection kept open SECS, sending MSG every 100 ms
//!   testclient read ADDR                one connection that sends nothing and reads until EOF
//!   testclient many ADDR N MSG          opens N connections at once and prints
//!                                       "opened K refused R <error kinds>"; after a line on
//!                                       stdin, exchanges MSG on each and prints "replies G"
//!   testclient pgstart ADDR USER DB     a PostgreSQL startup packet; prints the first reply:
//!                                       "auth <request code>" or "error <severity> <sqlstate> <message>"
//!   testclient send ADDR MSG            one connection: send MSG and close at once (no reply
//!                                       awaited); prints "sent"
//!   testclient churn ADDR N             the flow-table attack: N connects that fail after
//!                                       the kernel's connect hook ran (each socket bound to
//!                                       the client port of an open connection to the same
//!                                       place, so the 4-tuple is taken), each socket closed
//!                                       at once; prints "failed F <error kinds>"
//!                                       (without a first connection, plain connects)
//!   testclient hog ADDR N               the same N failing connects, every socket kept open;
//!                                       prints "failed F <error kinds>", then after a line
//!                                       on stdin exits (closing them)
//!   testclient forked ADDR MSG          the connect is made by a forked child that exits at
//!                                       once, on a socket the parent keeps: prints
//!                                       "connected <child pid>" once the child is reaped,
//!                                       then after a line on stdin exchanges MSG on the
//!                                       socket as `echo` does

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (cmd, addr) = match (args.get(1), args.get(2)) {
        (Some(c), Some(a)) => (c.as_str(), a.parse::<SocketAddr>()?),
        _ => anyhow::bail!("usage: testclient echo|loop|hold ADDR ..."),
    };
    match cmd {
        "echo" => {
            let msg = args.get(3).map(String::as_str).unwrap_or("hello");
            match exchange(addr, msg.as_bytes()) {
                Ok(reply) => println!("ok {reply}"),
                Err(e) => println!("err {:?} {e}", e.kind()),
            }
        }
        "loop" => {
            let n: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1000);
            let (mut ok, mut failed) = (0u64, 0u64);
            for _ in 0..n {
                match exchange(addr, b"x") {
                    Ok(_) => ok += 1,
                    Err(_) => failed += 1,
                }
            }
            println!("done {ok} {failed}");
        }
        "hold" => {
            let secs: f64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1.0);
            let msg = args.get(4).map(String::as_str).unwrap_or("tick");
            let mut s = TcpStream::connect(addr)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            let start = Instant::now();
            let mut rounds = 0u32;
            let mut buf = [0u8; 4096];
            while start.elapsed().as_secs_f64() < secs {
                s.write_all(msg.as_bytes())?;
                let n = s.read(&mut buf)?;
                if n == 0 {
                    println!("err closed after {rounds} rounds");
                    return Ok(());
                }
                rounds += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            println!("ok {rounds} rounds");
        }
        "read" => {
            let r = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                let mut out = String::new();
                s.read_to_string(&mut out)?;
                Ok(out)
            });
            match r {
                Ok(reply) => println!("ok {reply}"),
                Err(e) => println!("err {:?} {e}", e.kind()),
            }
        }
        "many" => {
            let n: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(10);
            let msg = args.get(4).map(String::as_str).unwrap_or("many");
            let mut open = Vec::new();
            let mut kinds = std::collections::BTreeSet::new();
            for _ in 0..n {
                match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                    Ok(s) => open.push(s),
                    Err(e) => {
                        kinds.insert(format!("{:?}", e.kind()));
                    }
                }
            }
            let kinds: Vec<String> = kinds.into_iter().collect();
            println!(
                "opened {} refused {} {}",
                open.len(),
                n - open.len(),
                kinds.join(",")
            );
            std::io::stdout().flush()?;
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            let mut good = 0usize;
            for mut s in open {
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                let ok = s.write_all(msg.as_bytes()).is_ok()
                    && s.shutdown(std::net::Shutdown::Write).is_ok()
                    && {
                        let mut out = String::new();
                        s.read_to_string(&mut out).is_ok() && out.ends_with(msg)
                    };
                good += usize::from(ok);
            }
            println!("replies {good}");
        }
        "pgstart" => {
            let user = args.get(3).map(String::as_str).unwrap_or("postgres");
            let db = args.get(4).map(String::as_str).unwrap_or(user);
            match pg_start(addr, user, db) {
                Ok(line) => println!("{line}"),
                Err(e) => println!("err {:?} {e}", e.kind()),
            }
        }
        "send" => {
            let msg = args.get(3).map(String::as_str).unwrap_or("fire");
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.write_all(msg.as_bytes())?;
            drop(s);
            println!("sent");
        }
        "churn" | "hog" => {
            let n: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1000);
            let keep = cmd == "hog";
            // One real connection, whose client port the others collide
            // with; if it fails (no daemon), the others fail plainly.
            let first = reusable()?;
            // From a source address no other test uses: an ephemeral port
            // another process holds on 127.0.0.1 (towards another peer,
            // without SO_REUSEADDR) would make the colliding binds below
            // fail with AddrInUse instead of reaching the connect hook.
            if addr.ip().is_loopback() && addr.is_ipv4() {
                let src: std::net::SocketAddr = "127.0.0.213:0".parse()?;
                first.bind(&src.into())?;
            }
            let local = match first.connect_timeout(&addr.into(), Duration::from_secs(5)) {
                Ok(()) => Some(first.local_addr()?),
                Err(_) => None,
            };
            let mut held = Vec::new();
            let mut kinds = std::collections::BTreeSet::new();
            let mut failed = 0usize;
            for _ in 0..n {
                let s = reusable()?;
                if let Some(local) = &local {
                    s.bind(local)?;
                }
                match s.connect_timeout(&addr.into(), Duration::from_secs(5)) {
                    Ok(()) => {}
                    Err(e) => {
                        failed += 1;
                        kinds.insert(format!("{:?}", e.kind()));
                    }
                }
                if keep {
                    held.push(s);
                }
            }
            let kinds: Vec<String> = kinds.into_iter().collect();
            println!("failed {failed} {}", kinds.join(","));
            std::io::stdout().flush()?;
            if keep {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
            }
            drop(held);
            drop(first);
        }
        "forked" => {
            let msg = args.get(3).map(String::as_str).unwrap_or("forked");
            let (socket, child) = connect_in_child(addr)?;
            println!("connected {child}");
            std::io::stdout().flush()?;
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            let mut s = TcpStream::from(socket);
            let r = (|| {
                s.set_read_timeout(Some(read_timeout()))?;
                s.write_all(msg.as_bytes())?;
                s.shutdown(std::net::Shutdown::Write)?;
                let mut out = String::new();
                s.read_to_string(&mut out)?;
                Ok::<_, std::io::Error>(out)
            })();
            match r {
                Ok(reply) => println!("ok {reply}"),
                Err(e) => println!("err {:?} {e}", e.kind()),
            }
        }
        other => anyhow::bail!("unknown command {other}"),
    }
    Ok(())
}

/// A socket connected to `addr` by a forked child that exited (and was
/// reaped) before this returns, with the child's pid: the kernel recorded the
/// child as the connecting process, and it is gone.
fn connect_in_child(addr: SocketAddr) -> anyhow::Result<(socket2::Socket, i32)> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    // SAFETY: this program is single-threaded; the child only connects and
    // leaves with _exit (no destructors, no stdio flush).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = i32::from(s.connect(&addr.into()).is_err());
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(code) };
    }
    anyhow::ensure!(pid > 0, "fork: {}", std::io::Error::last_os_error());
    let mut status = 0;
    // SAFETY: waits for our own child; status is a valid out pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    anyhow::ensure!(r == pid, "waitpid: {}", std::io::Error::last_os_error());
    anyhow::ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child's connect failed (status {status})"
    );
    Ok((s, pid))
}

/// A TCP socket that may share a bound address with others (SO_REUSEADDR).
fn reusable() -> std::io::Result<socket2::Socket> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    Ok(s)
}

/// How long a reply may take: 5 s, or `INTERLOCK_TEST_READ_SECS` (a test
/// whose connections wait for a human's decision sets it to the deadline).
fn read_timeout() -> Duration {
    std::env::var("INTERLOCK_TEST_READ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(5))
}

/// Connect, send, half-close, read the whole reply.
fn exchange(addr: SocketAddr, msg: &[u8]) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(read_timeout()))?;
    s.write_all(msg)?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Sends a protocol 3.0 startup packet and describes the server's first message.
fn pg_start(addr: SocketAddr, user: &str, db: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(read_timeout()))?;
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (k, v) in [("user", user), ("database", db)] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let len = u32::try_from(body.len() + 4).map_err(std::io::Error::other)?;
    s.write_all(&len.to_be_bytes())?;
    s.write_all(&body)?;
    let mut head = [0u8; 5];
    s.read_exact(&mut head)?;
    let [tag, l0, l1, l2, l3] = head;
    let len = u32::from_be_bytes([l0, l1, l2, l3]).saturating_sub(4);
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload)?;
    Ok(match tag {
        b'R' => format!(
            "auth {}",
            payload
                .get(..4)
                .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        ),
        b'E' => {
            let field = |code: u8| {
                payload
                    .split(|b| *b == 0)
                    .find(|f| f.first() == Some(&code))
                    .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
                    .unwrap_or_default()
            };
            format!("error {} {} {}", field(b'S'), field(b'C'), field(b'M'))
        }
        other => format!("message {}", other as char),
    })
}
