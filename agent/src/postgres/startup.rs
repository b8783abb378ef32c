//! The client's side of startup: encryption negotiation (SSLRequest
//! answered 'S' and TLS terminated with a certificate from interlock's CA,
//! or 'N' when there is none; GSSENCRequest answered 'N'; PostgreSQL 17
//! direct TLS), then a StartupMessage or a CancelRequest.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use rustls::ServerConfig;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
};

use super::{
    ca::ALPN,
    error::{PgError, ProtocolError},
    legs::{Reader, read_err},
    message::{GSSENC_CODE, SSL_CODE, StartupPacket},
    tls::BoxIo,
};
use crate::gate::Side;

/// The first byte of a TLS handshake record. A startup packet begins with
/// its length, and one starting with 0x16 would be over 369 MB, so the two
/// cannot be confused.
const TLS_HANDSHAKE: u8 = 0x16;

/// What the client opened the connection for.
pub(crate) enum Hello {
    Startup {
        minor: u16,
        params: Vec<(String, String)>,
    },
    Cancel {
        pid: i32,
        secret: Bytes,
    },
}

/// How the client's leg ended up protected, for the session's records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientLeg {
    Plain,
    /// TLS after an SSLRequest.
    Tls,
    /// PostgreSQL 17 direct TLS (no SSLRequest, ALPN "postgresql").
    DirectTls,
}

/// Negotiates encryption with the client. `tls` is the configuration for
/// this target when interlock has a CA; without one SSLRequest gets 'N'
/// and direct TLS is refused. `Ok(None)`: the client left.
///
/// Reads the socket without buffering ahead, so nothing the client sent
/// in plaintext after an SSLRequest can be taken as if it had come through
/// TLS (CVE-2021-23214): such bytes reach the TLS layer and fail the
/// handshake.
pub(crate) async fn negotiate(
    mut client: TcpStream,
    tls: Option<Arc<ServerConfig>>,
) -> Result<Option<(BoxIo, ClientLeg)>, PgError> {
    let client_err = |m: String| PgError::protocol(Side::Client, ProtocolError::Unexpected(m));
    let mut first = [0u8; 1];
    if client.peek(&mut first).await? == 0 {
        return Ok(None);
    }
    if first == [TLS_HANDSHAKE] {
        let Some(config) = tls else {
            return Err(client_err(
                "direct TLS, but interlock has no CA for the client leg".into(),
            ));
        };
        let stream = accept(config, client).await?;
        if stream.get_ref().1.alpn_protocol() != Some(ALPN) {
            // As the server does: direct TLS without the ALPN is refused,
            // so a non-PostgreSQL TLS client cannot be confused with one.
            return Err(PgError::ClientTls(
                "direct TLS without ALPN \"postgresql\"".into(),
            ));
        }
        return Ok(Some((Box::new(stream), ClientLeg::DirectTls)));
    }
    // At most one GSSENCRequest and one SSLRequest come before the startup.
    let (mut gss_seen, mut ssl_seen) = (false, false);
    loop {
        let mut head = [0u8; 8];
        match client.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let [l0, l1, l2, l3, c0, c1, c2, c3] = head;
        let (len, code) = (
            u32::from_be_bytes([l0, l1, l2, l3]),
            i32::from_be_bytes([c0, c1, c2, c3]),
        );
        match (len, code) {
            (8, c) if (c == GSSENC_CODE && gss_seen) || (c == SSL_CODE && ssl_seen) => {
                return Err(client_err("repeated encryption requests".into()));
            }
            (8, GSSENC_CODE) => {
                gss_seen = true;
                client.write_all(b"N").await?;
            }
            (8, SSL_CODE) => match &tls {
                None => {
                    ssl_seen = true;
                    client.write_all(b"N").await?;
                }
                Some(config) => {
                    client.write_all(b"S").await?;
                    let stream = accept(config.clone(), client).await?;
                    return Ok(Some((Box::new(stream), ClientLeg::Tls)));
                }
            },
            // Anything else is the start of the startup (or cancel) packet.
            _ => {
                let io = Prefixed {
                    head,
                    used: 0,
                    inner: client,
                };
                return Ok(Some((Box::new(io), ClientLeg::Plain)));
            }
        }
    }
}

async fn accept(
    config: Arc<ServerConfig>,
    client: TcpStream,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, PgError> {
    tokio_rustls::TlsAcceptor::from(config)
        .accept(client)
        .await
        .map_err(|e| PgError::ClientTls(e.to_string()))
}

/// Reads the client's startup or cancel packet (after [`negotiate`]).
/// `Ok(None)` if the client left. Errors: a malformed packet, or an
/// encryption request where none may come (inside TLS, or a third one).
pub(crate) async fn read_hello(r: &mut Reader) -> Result<Option<Hello>, PgError> {
    let Some(frame) = r
        .read_startup()
        .await
        .map_err(|e| read_err(Side::Client, e))?
    else {
        return Ok(None);
    };
    match StartupPacket::decode(&frame).map_err(|e| PgError::protocol(Side::Client, e))? {
        StartupPacket::Ssl | StartupPacket::GssEnc => Err(PgError::protocol(
            Side::Client,
            ProtocolError::Unexpected("an encryption request after negotiation".into()),
        )),
        StartupPacket::Startup { minor, params } => Ok(Some(Hello::Startup { minor, params })),
        StartupPacket::Cancel { pid, secret } => Ok(Some(Hello::Cancel { pid, secret })),
    }
}

/// The client's plaintext stream with the 8 bytes negotiation read put
/// back in front.
struct Prefixed {
    head: [u8; 8],
    used: usize,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(rest) = this.head.get(this.used..)
            && !rest.is_empty()
        {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(rest.get(..n).unwrap_or_default());
            this.used += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
