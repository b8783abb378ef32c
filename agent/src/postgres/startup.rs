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
    legs::{Reader, fatal, read_err},
    message::{GSSENC_CODE, SSL_CODE, StartupPacket},
    target::ClientTls,
    tls::BoxIo,
};
use crate::gate::{ClientLeg, Side};

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

/// What interlock offers a client that asks for TLS.
pub(crate) enum Offer<'a> {
    /// A certificate from interlock's CA (minted on the first request).
    Tls(&'a ClientTls),
    /// 'N', for this reason (`None`: client TLS is off).
    Refuse(Option<&'static str>),
}

/// The client's stream after negotiation, how it is protected and, when
/// the client asked for TLS and got 'N', why.
pub(crate) struct Negotiated {
    pub(crate) io: BoxIo,
    pub(crate) leg: ClientLeg,
    pub(crate) tls_unavailable: Option<String>,
}

/// Negotiates encryption with the client. `Ok(None)`: the client left.
///
/// Reads the socket without buffering ahead, and refuses bytes that
/// arrived with an SSLRequest before its answer (CVE-2021-23214): nothing
/// the client sent in plaintext can be taken as if it had come through
/// TLS; bytes sent later reach the TLS layer and fail the handshake.
pub(crate) async fn negotiate(
    mut client: TcpStream,
    offer: Offer<'_>,
) -> Result<Option<Negotiated>, PgError> {
    let client_err = |m: String| PgError::protocol(Side::Client, ProtocolError::Unexpected(m));
    let mut first = [0u8; 1];
    if client.peek(&mut first).await? == 0 {
        return Ok(None);
    }
    if first == [TLS_HANDSHAKE] {
        let config = match offer {
            Offer::Tls(tls) => tls
                .config()
                .map_err(|e| PgError::ClientTls(format!("no certificate for direct TLS: {e}")))?,
            Offer::Refuse(why) => {
                return Err(client_err(format!(
                    "direct TLS, but {}",
                    why.unwrap_or("client TLS is off")
                )));
            }
        };
        let stream = accept(config, client).await?;
        if stream.get_ref().1.alpn_protocol() != Some(ALPN) {
            // As the server does: direct TLS without the ALPN is refused,
            // so a non-PostgreSQL TLS client cannot be confused with one.
            return Err(PgError::ClientTls(
                "direct TLS without ALPN \"postgresql\"".into(),
            ));
        }
        return Ok(Some(Negotiated {
            io: Box::new(stream),
            leg: ClientLeg::DirectTls,
            tls_unavailable: None,
        }));
    }
    // At most one GSSENCRequest and one SSLRequest come before the startup.
    let (mut gss_seen, mut ssl_seen) = (false, false);
    let mut tls_unavailable = None;
    loop {
        // The length first, judged before anything else is awaited, as
        // the server does: a client that sent something else (a Terminate
        // before any startup packet) and waits is closed at once, silently.
        let mut len = [0u8; 4];
        match client.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_be_bytes(len);
        if !(8..=MAX_STARTUP_PACKET).contains(&len) {
            // What already arrived is read (as the server's buffered read
            // would), so the close is a FIN, not a reset that could destroy
            // the client's view of it.
            let mut rest = [0u8; 4096];
            for _ in 0..16 {
                if !matches!(client.try_read(&mut rest), Ok(n) if n > 0) {
                    break;
                }
            }
            return Err(PgError::protocol(Side::Client, bad_length(len)));
        }
        let mut code = [0u8; 4];
        match client.read_exact(&mut code).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(PgError::protocol(
                    Side::Client,
                    ProtocolError::Truncated(format!("startup packet, {} bytes received", 4)),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        let code_value = i32::from_be_bytes(code);
        let [l0, l1, l2, l3] = len.to_be_bytes();
        let [c0, c1, c2, c3] = code;
        let head = [l0, l1, l2, l3, c0, c1, c2, c3];
        let code = code_value;
        match (len, code) {
            (8, c) if (c == GSSENC_CODE && gss_seen) || (c == SSL_CODE && ssl_seen) => {
                return Err(refuse(&mut client, "repeated encryption requests").await);
            }
            (8, GSSENC_CODE) => {
                gss_seen = true;
                client.write_all(b"N").await?;
            }
            (8, SSL_CODE) => {
                ssl_seen = true;
                if sent_ahead(&client) {
                    let why = "unencrypted data after SSLRequest (before its answer)";
                    return Err(refuse(&mut client, why).await);
                }
                let config = match &offer {
                    Offer::Tls(tls) => tls.config().map_err(|e| e.to_string()),
                    Offer::Refuse(why) => Err(why.unwrap_or_default().to_string()),
                };
                match config {
                    Ok(config) => {
                        client.write_all(b"S").await?;
                        let stream = accept(config, client).await?;
                        return Ok(Some(Negotiated {
                            io: Box::new(stream),
                            leg: ClientLeg::Tls,
                            tls_unavailable: None,
                        }));
                    }
                    Err(why) => {
                        if !why.is_empty() {
                            tracing::warn!(reason = %why, "client asked for TLS; answered 'N'");
                            tls_unavailable = Some(why);
                        }
                        client.write_all(b"N").await?;
                    }
                }
            }
            // Anything else is the start of the startup (or cancel) packet.
            _ => {
                let io = Prefixed {
                    head,
                    used: 0,
                    inner: client,
                };
                return Ok(Some(Negotiated {
                    io: Box::new(io),
                    leg: ClientLeg::Plain,
                    tls_unavailable,
                }));
            }
        }
    }
}

/// The largest startup packet the server accepts (PostgreSQL's
/// `MAX_STARTUP_PACKET_LENGTH`).
pub(crate) const MAX_STARTUP_PACKET: u32 = 10_000;

/// The error for a startup packet declaring `len` bytes.
fn bad_length(len: u32) -> ProtocolError {
    let tag = "startup packet".to_string();
    if len < 8 {
        ProtocolError::TooShort { tag, len, min: 8 }
    } else {
        ProtocolError::TooLong {
            tag,
            len,
            max: MAX_STARTUP_PACKET as usize,
        }
    }
}

/// Whether the server would close the connection on `e` without a word:
/// a startup packet of an impossible length or cut off by the client
/// closing (PostgreSQL logs these as COMMERROR and sends nothing). The
/// client gets the same silent close; the error is still recorded.
pub(crate) fn closed_silently(e: &PgError) -> bool {
    matches!(
        e,
        PgError::Protocol {
            side: Side::Client,
            source: ProtocolError::Truncated(_)
                | ProtocolError::TooLong { .. }
                | ProtocolError::TooShort { .. },
        }
    )
}

/// Tells a plaintext client (FATAL 08P01) why its connection ends.
async fn refuse(client: &mut TcpStream, why: &str) -> PgError {
    let source = ProtocolError::Unexpected(why.into());
    let msg = format!("interlock: protocol violation by the client: {source}");
    let _ = client.write_all(fatal("08P01", &msg).raw()).await;
    PgError::protocol(Side::Client, source)
}

/// Whether bytes already wait behind the 8 read (a client must wait for
/// the answer to an SSLRequest before sending anything).
fn sent_ahead(client: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    // WouldBlock: nothing waiting. EOF (Ok(0)) is noticed by the next read.
    matches!(client.try_read(&mut probe), Ok(n) if n > 0)
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
