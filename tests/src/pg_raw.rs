//! A raw PostgreSQL wire client for protocol-abuse tests: what real client
//! libraries cannot be made to send.

use std::{net::SocketAddr, sync::Arc};

use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::client::TlsStream;

/// A stream a raw client speaks over (plain TCP or TLS).
pub trait Wire: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Wire for T {}

/// The SSLRequest packet.
pub const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A StartupMessage for protocol 3.`minor` as [`ROLE`](crate::postgres::ROLE).
pub fn startup(minor: i32) -> Vec<u8> {
    let mut body = ((3 << 16) | minor).to_be_bytes().to_vec();
    for (k, v) in [
        ("user", crate::postgres::ROLE),
        ("database", crate::postgres::DATABASE),
    ] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut m = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    m.extend(body);
    m
}

/// Sends one tagged message.
pub async fn send(s: &mut impl Wire, tag: u8, body: &[u8]) {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    s.write_all(&m).await.unwrap();
    s.flush().await.unwrap();
}

/// Reads one tagged message; `None` at EOF. Any reader will do (a read
/// half too, while another task writes).
pub async fn recv(s: &mut (impl AsyncRead + Unpin)) -> Option<(u8, Vec<u8>)> {
    let tag = s.read_u8().await.ok()?;
    let len = s.read_u32().await.ok()? as usize;
    let mut body = vec![0; len - 4];
    s.read_exact(&mut body).await.ok()?;
    Some((tag, body))
}

/// Reads messages up to ReadyForQuery, returning them all. A request for
/// a cleartext or md5 password (interlock asks as the server would, and
/// discards the answer) is answered with a wrong one.
pub async fn until_ready(s: &mut impl Wire) -> Vec<(u8, Vec<u8>)> {
    let mut all = Vec::new();
    while let Some(m) = recv(s).await {
        let done = m.0 == b'Z';
        if m.0 == b'R' && matches!(m.1.get(..4), Some([0, 0, 0, 3] | [0, 0, 0, 5])) {
            send(s, b'p', b"not-the-password\0").await;
        }
        all.push(m);
        if done {
            break;
        }
    }
    all
}

/// Connects, starts up with protocol 3.`minor` and reads to ReadyForQuery.
pub async fn connect(addr: SocketAddr, minor: i32) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&startup(minor)).await.unwrap();
    let msgs = until_ready(&mut s).await;
    assert_eq!(msgs.last().map(|m| m.0), Some(b'Z'), "{msgs:?}");
    s
}

/// An ErrorResponse body's fields as (code, value).
pub fn fields(body: &[u8]) -> Vec<(u8, String)> {
    body.split(|b| *b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| (f[0], String::from_utf8_lossy(&f[1..]).into_owned()))
        .collect()
}

/// The value of field `code` in an ErrorResponse body.
pub fn field(body: &[u8], code: u8) -> String {
    fields(body)
        .into_iter()
        .find(|f| f.0 == code)
        .map(|f| f.1)
        .unwrap_or_default()
}

/// A body of NUL-terminated strings (Query, Parse without types, Describe...).
pub fn cstrs(parts: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    for p in parts {
        b.extend_from_slice(p.as_bytes());
        b.push(0);
    }
    b
}

/// A Bind body: no parameters, the given result formats.
pub fn bind(portal: &str, statement: &str, result_formats: &[i16]) -> Vec<u8> {
    let mut b = cstrs(&[portal, statement]);
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(result_formats.len() as i16).to_be_bytes());
    for f in result_formats {
        b.extend_from_slice(&f.to_be_bytes());
    }
    b
}

/// An Execute body for `portal`, all rows.
pub fn execute(portal: &str) -> Vec<u8> {
    let mut b = cstrs(&[portal]);
    b.extend_from_slice(&0i32.to_be_bytes());
    b
}

/// The values of every DataRow among `msgs`.
pub fn data_rows(msgs: &[(u8, Vec<u8>)]) -> Vec<Vec<Option<Vec<u8>>>> {
    msgs.iter()
        .filter(|m| m.0 == b'D')
        .map(|(_, body)| {
            let n = i16::from_be_bytes([body[0], body[1]]) as usize;
            let mut at = 2;
            let mut row = Vec::with_capacity(n);
            for _ in 0..n {
                let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
                at += 4;
                if len < 0 {
                    row.push(None);
                } else {
                    row.push(Some(body[at..at + len as usize].to_vec()));
                    at += len as usize;
                }
            }
            row
        })
        .collect()
}

/// A TLS handshake on `tcp` trusting only the CA in `ca_pem`, for
/// `server_name`, offering `alpn` (none if empty).
pub async fn tls(
    tcp: TcpStream,
    ca_pem: &str,
    server_name: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// Starts up on `s` with protocol 3.0 and reads to ReadyForQuery.
pub async fn start_up(s: &mut impl Wire) -> Vec<(u8, Vec<u8>)> {
    s.write_all(&startup(0)).await.unwrap();
    s.flush().await.unwrap();
    until_ready(s).await
}
