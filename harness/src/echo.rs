//! A loopback echo server that tells each client who it saw.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener},
};

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use anyhow::{Context as _, Result};

/// A loopback TCP server that answers each connection with
/// `echo <peer> <data>` once the client half-closes (or after each read, in
/// `hold` mode when data does not end). Runs on threads until the test ends.
pub struct EchoServer {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl EchoServer {
    pub fn start(addr: &str) -> Result<EchoServer> {
        let listener = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                counter.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut s = stream;
                    let peer = s.peer_addr().map(|p| p.to_string()).unwrap_or_default();
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let reply = format!("echo {peer} {}", String::from_utf8_lossy(&buf[..n]));
                        if s.write_all(reply.as_bytes()).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Ok(EchoServer { addr, accepted })
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A loopback TCP server that sends every byte it reads straight back,
/// from sockets with kernel buffers of `buffer` bytes: a peer that stops
/// reading while its own writes are blocked, as real servers do.
pub struct ByteEcho {
    pub addr: SocketAddr,
}

impl ByteEcho {
    /// A byte echo with the kernel's default buffer sizes (the bench's echo servers).
    pub fn start_default(addr: &str) -> Result<ByteEcho> {
        let listener = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
        ByteEcho::serve(listener)
    }

    pub fn start(addr: &str, buffer: u32) -> Result<ByteEcho> {
        // Set before listen, so the handshake advertises a window they fit.
        let addr: SocketAddr = addr.parse().with_context(|| format!("address {addr}"))?;
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )?;
        socket.set_reuse_address(true)?;
        socket.set_send_buffer_size(buffer as usize)?;
        socket.set_recv_buffer_size(buffer as usize)?;
        socket
            .bind(&addr.into())
            .with_context(|| format!("bind {addr}"))?;
        socket.listen(1024)?;
        ByteEcho::serve(socket.into())
    }

    /// Echoes on `listener`, a thread per connection, until the process ends.
    fn serve(listener: TcpListener) -> Result<ByteEcho> {
        let addr = listener.local_addr()?;
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let Ok(mut w) = stream.try_clone() else {
                        return;
                    };
                    let mut r = stream;
                    if std::io::copy(&mut r, &mut w).is_ok() {
                        let _ = w.shutdown(std::net::Shutdown::Write);
                    }
                });
            }
        });
        Ok(ByteEcho { addr })
    }
}
