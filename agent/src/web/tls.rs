//! The approvals page's TLS: a certificate from PEM files (read again when either file
//! changes, so a renewed certificate is served without a restart), or one minted by
//! interlock's own CA (`interlock ca export`) for the names the policy gives, renewed by the
//! CA before it expires.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::SystemTime,
};

use rustls::{
    ServerConfig,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tracing::warn;

use super::error::WebError;
use crate::{policy::WebTls, postgres::PgCa};

/// The page's TLS server configuration (HTTP/1.1 over TLS 1.2 or 1.3).
///
/// # Errors
/// The certificate files cannot be read or do not match; the CA cannot be loaded.
pub(super) fn server_config(tls: &WebTls, state_dir: &Path) -> Result<Arc<ServerConfig>, WebError> {
    let resolver: Arc<dyn ResolvesServerCert> = match tls {
        WebTls::Files { cert, key } => Arc::new(FileCert::load(cert.clone(), key.clone())?),
        WebTls::Minted { names } => {
            let ca = PgCa::load_or_create(state_dir).map_err(|e| WebError::Tls(e.to_string()))?;
            // Minted now, so a bad name stops the start rather than every handshake.
            ca.server_config(names).map_err(|e| {
                WebError::Tls(format!("cannot mint a certificate for {names:?}: {e}"))
            })?;
            Arc::new(MintedCert {
                ca,
                names: names.clone(),
            })
        }
    };
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| WebError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A certificate chain and key from PEM files.
#[derive(Debug)]
struct FileCert {
    cert: PathBuf,
    key: PathBuf,
    /// The loaded pair and the files' modification times it was loaded at.
    current: Mutex<(Option<SystemTime>, Option<SystemTime>, Arc<CertifiedKey>)>,
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl FileCert {
    fn load(cert: PathBuf, key: PathBuf) -> Result<FileCert, WebError> {
        let (mc, mk) = (modified(&cert), modified(&key));
        let pair = read_pair(&cert, &key)?;
        Ok(FileCert {
            cert,
            key,
            current: Mutex::new((mc, mk, pair)),
        })
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, WebError> {
    let bad = |path: &Path, message: String| WebError::Certificate {
        path: path.to_owned(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(cert, "no CERTIFICATE in the file".into()));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e.to_string()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| bad(key, e.to_string()))?;
    let pair = CertifiedKey::new(chain, signer);
    pair.keys_match()
        .map_err(|e| bad(key, format!("does not belong to the certificate: {e}")))?;
    Ok(Arc::new(pair))
}

impl ResolvesServerCert for FileCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let (mc, mk) = (modified(&self.cert), modified(&self.key));
        let mut cur = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if (mc, mk) != (cur.0, cur.1) {
            match read_pair(&self.cert, &self.key) {
                Ok(pair) => *cur = (mc, mk, pair),
                // Half-written renewal: keep serving the old pair, try again next time.
                Err(e) => {
                    warn!(error = %e, "cannot reload the approvals page certificate; serving the previous one")
                }
            }
        }
        Some(Arc::clone(&cur.2))
    }
}

/// A certificate interlock's CA mints (and renews) for `names`.
#[derive(Debug)]
struct MintedCert {
    ca: PgCa,
    names: Vec<String>,
}

impl ResolvesServerCert for MintedCert {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match self.ca.server_config(&self.names) {
            Ok(c) => c.cert_resolver.resolve(hello),
            Err(e) => {
                warn!(error = %e, "cannot mint the approvals page certificate");
                None
            }
        }
    }
}
