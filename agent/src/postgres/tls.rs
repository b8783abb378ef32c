//! The upstream leg: TCP connect, then TLS per the target's mode.

use std::sync::Arc;

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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

/// Connects to the target's server and sets up TLS as configured.
/// Errors: connect failures, a server refusing TLS under `require` or
/// `verify-full`, certificate or handshake failures.
pub async fn connect(target: &PgTarget) -> Result<BoxIo, PgError> {
    let mut tcp = target
        .socket_buffers
        .connect(target.upstream)
        .await
        .map_err(PgError::Connect)?;
    let config = match &target.tls {
        UpstreamTls::Disable => return Ok(Box::new(tcp)),
        UpstreamTls::Prefer | UpstreamTls::Require => no_verify_config()?,
        UpstreamTls::VerifyFull { ca_file } => verify_config(ca_file)?,
    };
    tcp.write_all(StartupPacket::Ssl.encode().raw()).await?;
    let answer = tcp.read_u8().await?;
    match answer {
        b'S' => {}
        b'N' if target.tls == UpstreamTls::Prefer => return Ok(Box::new(tcp)),
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
    Ok(Box::new(tls))
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
