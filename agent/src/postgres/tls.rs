//! The upstream leg: TCP connect, then TLS per the target's mode.

use std::sync::Arc;

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

use super::{
    error::PgError,
    message::StartupPacket,
    target::{PgTarget, UpstreamTls},
};

/// A byte stream of either leg (plain TCP or TLS).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// A boxed stream.
pub type BoxIo = Box<dyn Io>;

/// An upstream leg: the stream and, on TLS, the `tls-server-end-point`
/// channel binding data of the server's certificate (RFC 5929), so SCRAM
/// can bind the exchange to this TLS session.
pub struct Upstream {
    pub io: BoxIo,
    pub channel_binding: Option<Vec<u8>>,
}

impl Upstream {
    fn plain(tcp: TcpStream) -> Upstream {
        Upstream {
            io: Box::new(tcp),
            channel_binding: None,
        }
    }
}

/// Connects to the target's server and sets up TLS as configured.
/// Errors: connect failures, a server refusing TLS under `require` or
/// `verify-full`, certificate or handshake failures.
pub async fn connect(target: &PgTarget) -> Result<Upstream, PgError> {
    let mut tcp = target
        .socket_buffers
        .connect(target.upstream)
        .await
        .map_err(PgError::Connect)?;
    let config = match &target.tls {
        UpstreamTls::Disable => return Ok(Upstream::plain(tcp)),
        UpstreamTls::Prefer | UpstreamTls::Require => no_verify_config()?,
        UpstreamTls::VerifyFull { ca_file } => verify_config(ca_file)?,
    };
    tcp.write_all(StartupPacket::Ssl.encode().raw()).await?;
    let answer = tcp.read_u8().await?;
    match answer {
        b'S' => {}
        b'N' if target.tls == UpstreamTls::Prefer => return Ok(Upstream::plain(tcp)),
        b'N' => return Err(PgError::Tls("the server does not support TLS".into())),
        other => {
            return Err(PgError::Tls(format!(
                "unexpected answer 0x{other:02x} to SSLRequest"
            )));
        }
    }
    let name = ServerName::try_from(target.server_name.clone())
        .map_err(|e| PgError::Tls(format!("bad server name {}: {e}", target.server_name)))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| PgError::Tls(e.to_string()))?;
    let channel_binding = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| end_point_hash(c));
    Ok(Upstream {
        io: Box::new(tls),
        channel_binding,
    })
}

/// RFC 5929 `tls-server-end-point`: the certificate hashed with its
/// signature's hash function, SHA-256 for MD5, SHA-1 and anything else
/// (as PostgreSQL's server computes it). `None`: not a certificate.
fn end_point_hash(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    use sha2::Digest;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let der: &[u8] = cert.as_ref();
    Some(
        match parsed.signature_algorithm.algorithm.to_id_string().as_str() {
            // sha384WithRSAEncryption, ecdsa-with-SHA384
            "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => sha2::Sha384::digest(der).to_vec(),
            // sha512WithRSAEncryption, ecdsa-with-SHA512
            "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => sha2::Sha512::digest(der).to_vec(),
            _ => sha2::Sha256::digest(der).to_vec(),
        },
    )
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn verify_config(ca_file: &std::path::Path) -> Result<ClientConfig, PgError> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| PgError::Tls(format!("reading {}: {e}", ca_file.display())))?;
    for cert in certs {
        let cert = cert.map_err(|e| PgError::Tls(format!("reading {}: {e}", ca_file.display())))?;
        roots
            .add(cert)
            .map_err(|e| PgError::Tls(format!("CA certificate in {}: {e}", ca_file.display())))?;
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn no_verify_config() -> Result<ClientConfig, PgError> {
    let provider = provider();
    Ok(ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth())
}

/// libpq's `require`/`prefer`: encrypt, do not authenticate the server.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
