//! Socket options interlock sets on both legs of every intercepted
//! session (the accepted client socket and the upstream connect):
//! `--socket-buffer-bytes` caps each socket's kernel send and receive
//! buffers, to bound kernel memory per session on busy hosts (and, in the
//! tests, to make every leg's buffers tiny so flow control is exercised).

use std::{io, net::SocketAddr};

use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The kernel buffer sizes for session sockets; the default leaves the
/// kernel's own (autotuned) sizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketBuffers {
    bytes: Option<u32>,
}

impl SocketBuffers {
    /// SO_SNDBUF and SO_RCVBUF of `bytes` each (the kernel doubles the
    /// value and applies its minimum); `None`: the kernel's defaults.
    pub fn new(bytes: Option<u32>) -> SocketBuffers {
        SocketBuffers { bytes }
    }

    /// The configured size, if any.
    pub fn bytes(&self) -> Option<u32> {
        self.bytes
    }

    /// A listener on `addr` whose accepted sockets have the sizes. They
    /// are set before `listen`, so the handshake advertises a window that
    /// fits them: set on an accepted socket, a smaller buffer than the
    /// window already advertised makes the peer's segments (sized to half
    /// the largest window it saw) wait for the persist timer.
    ///
    /// # Errors
    /// Creating, binding or listening on the socket failed.
    pub fn listen(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let Some(b) = self.bytes else {
            let std = std::net::TcpListener::bind(addr)?;
            std.set_nonblocking(true)?;
            return TcpListener::from_std(std);
        };
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_send_buffer_size(b)?;
        socket.set_recv_buffer_size(b)?;
        socket.bind(addr)?;
        socket.listen(1024)
    }

    /// Connects to `addr` with the sizes set before the handshake (so the
    /// advertised window follows them), and TCP_NODELAY on.
    ///
    /// # Errors
    /// Creating the socket, setting its options, or connecting failed.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = match self.bytes {
            None => TcpStream::connect(addr).await?,
            Some(b) => {
                let socket = if addr.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket.set_send_buffer_size(b)?;
                socket.set_recv_buffer_size(b)?;
                socket.connect(addr).await?
            }
        };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_legs_get_the_sizes() {
        let small = SocketBuffers::new(Some(4096));
        let l = small.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let c = small.connect(l.local_addr().unwrap()).await.unwrap();
        let (a, _) = l.accept().await.unwrap();
        for s in [&c, &a] {
            let r = socket2::SockRef::from(s);
            // Linux doubles the value for its bookkeeping.
            assert_eq!(r.send_buffer_size().unwrap(), 8192);
            assert_eq!(r.recv_buffer_size().unwrap(), 8192);
        }
        let dflt = SocketBuffers::default();
        let l = dflt.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let c = dflt.connect(l.local_addr().unwrap()).await.unwrap();
        assert!(socket2::SockRef::from(&c).recv_buffer_size().unwrap() > 8192);
    }
}
