//! interlock's X.509 certificate authority for the client leg: a CA key and
//! certificate kept in one file under the state dir (mode 0600), created at
//! first start, that mints a server certificate per target (its host names
//! and the address the job dialled). A CI host trusts every proxied target
//! with one `sslrootcert` (`interlock ca export`), so jobs keep
//! `sslmode=verify-full`.

use std::{
    collections::HashMap,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// File name of the CA (certificate, then key, PEM) inside the state dir.
const CA_FILE: &str = "tls_ca.pem";
/// Leaf certificates are valid from a little before minting (clock skew)...
const BACKDATE: Duration = Duration::from_secs(300);
/// ...for a week, and minted again after a day so a long-running daemon
/// never presents one close to expiry.
const LEAF_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
const LEAF_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// The CA itself: ten years.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Most minted configurations kept; the cache is cleared when full (targets
/// are few; this only bounds a policy matching many addresses).
const CACHE_MAX: usize = 1024;
/// The ALPN protocol PostgreSQL 17 clients announce (required for direct TLS).
pub(crate) const ALPN: &[u8] = b"postgresql";

/// Why the CA could not be loaded, created or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not an interlock CA file ({why})")]
    Format { path: PathBuf, why: String },
    #[error("a server certificate needs at least one host name or address")]
    NoNames,
    #[error("minting a certificate: {0}")]
    Mint(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Minted configurations by sorted name set, with when they were minted.
type Minted = HashMap<Vec<String>, (Instant, Arc<ServerConfig>)>;

/// The client-leg CA.
pub struct PgCa {
    path: PathBuf,
    cert_pem: String,
    key: KeyPair,
    /// Parsed once: the subject and key identifier leaves name as issuer.
    issuer: Issuer<'static, KeyPair>,
    minted: Mutex<Minted>,
}

impl std::fmt::Debug for PgCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCa").field("path", &self.path).finish()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive and never zero-led, as RFC 5280 asks of serial numbers.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

impl PgCa {
    /// Loads the CA from `state_dir`, creating it (mode 0600) on first use.
    /// Creation publishes the file atomically, so a daemon and `interlock ca
    /// export` starting together agree on one CA.
    ///
    /// # Errors
    /// The directory or file cannot be read or written, or the file does
    /// not hold a certificate and key.
    pub fn load_or_create(state_dir: &Path) -> Result<PgCa, CaError> {
        let path = state_dir.join(CA_FILE);
        std::fs::create_dir_all(state_dir).map_err(io(state_dir))?;
        match std::fs::read_to_string(&path) {
            Ok(text) => return PgCa::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        let (cert_pem, key) = generate()?;
        let text = format!("{cert_pem}{}", key.serialize_pem());
        let tmp = state_dir.join(format!(".{CA_FILE}.{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        file.write_all(text.as_bytes()).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        // link() does not replace: whoever links first wins, the other
        // reads the winner's CA.
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => PgCa::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(&path).map_err(io(&path))?;
                PgCa::parse(path, &text)
            }
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn parse(path: PathBuf, text: &str) -> Result<PgCa, CaError> {
        let bad = |why: &str| CaError::Format {
            path: path.clone(),
            why: why.to_string(),
        };
        const END: &str = "-----END CERTIFICATE-----";
        let cut = text
            .find(END)
            .map(|i| i + END.len())
            .ok_or_else(|| bad("no certificate"))?;
        let cert_pem = format!("{}\n", text.get(..cut).unwrap_or_default().trim());
        let key_pem = text.get(cut..).unwrap_or_default();
        let key = KeyPair::from_pem(key_pem).map_err(|e| bad(&format!("key: {e}")))?;
        let signer = KeyPair::from_pem(key_pem).map_err(|e| bad(&format!("key: {e}")))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, signer)
            .map_err(|e| bad(&format!("certificate: {e}")))?;
        Ok(PgCa {
            path,
            cert_pem,
            key,
            issuer,
            minted: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate in PEM, for clients' `sslrootcert`.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Where the CA lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A TLS server configuration presenting a certificate for `names`
    /// (host names and IP addresses, as clients dial them). Minted on first
    /// use and cached per name set.
    ///
    /// # Errors
    /// `names` is empty or holds a name that is not a valid DNS name or IP
    /// address, or signing failed.
    pub fn server_config(&self, names: &[String]) -> Result<Arc<ServerConfig>, CaError> {
        let mut key: Vec<String> = names.to_vec();
        key.sort();
        key.dedup();
        if let Ok(cache) = self.minted.lock()
            && let Some((at, config)) = cache.get(&key)
            && at.elapsed() < LEAF_REFRESH
        {
            return Ok(config.clone());
        }
        let config = Arc::new(self.mint(&key)?);
        if let Ok(mut cache) = self.minted.lock() {
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(key, (Instant::now(), config.clone()));
        }
        Ok(config)
    }

    fn mint(&self, names: &[String]) -> Result<ServerConfig, CaError> {
        let first = names.first().ok_or(CaError::NoNames)?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let now = SystemTime::now();
        params.not_before = now.checked_sub(BACKDATE).unwrap_or(now).into();
        params.not_after = now.checked_add(LEAF_VALIDITY).unwrap_or(now).into();
        params.serial_number = Some(random_serial());
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, first.as_str());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let leaf_key = KeyPair::generate()?;
        let cert = params.signed_by(&leaf_key, &self.issuer)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(vec![CertificateDer::from(cert.der().to_vec())], key_der)?;
        // A client that offers ALPN must offer "postgresql" (as the server
        // itself insists); one that offers none (libpq before 17) is fine.
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// The CA's public key in PEM (tests compare it across loads).
    pub fn public_key_pem(&self) -> String {
        self.key.public_key_pem()
    }
}

/// A fresh self-signed CA: its certificate (PEM) and key.
fn generate() -> Result<(String, KeyPair), CaError> {
    let mut params = CertificateParams::default();
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "interlock");
    // The host name tells one runner's CA from another's in a trust store.
    dn.push(
        DnType::CommonName,
        format!("interlock client-leg CA ({})", host.trim()),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = SystemTime::now();
    params.not_before = now.checked_sub(BACKDATE).unwrap_or(now).into();
    params.not_after = now.checked_add(CA_VALIDITY).unwrap_or(now).into();
    params.serial_number = Some(random_serial());
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn ca_is_created_once_private_and_mints_cached_leaves() {
        let dir = crate::test_dir::TestDir::new("pg-ca-test");
        let ca = PgCa::load_or_create(&dir).unwrap();
        let mode = std::fs::metadata(dir.join(CA_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = PgCa::load_or_create(&dir).unwrap();
        assert_eq!(ca.cert_pem(), again.cert_pem());
        assert_eq!(ca.public_key_pem(), again.public_key_pem());
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!ca.cert_pem().contains("PRIVATE KEY"));

        let names = vec!["db.internal".to_string(), "127.0.0.2".to_string()];
        let a = ca.server_config(&names).unwrap();
        let b = ca
            .server_config(&["127.0.0.2".to_string(), "db.internal".to_string()])
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one mint per name set");
        assert_eq!(a.alpn_protocols, vec![ALPN.to_vec()]);
        assert!(ca.server_config(&[]).is_err());
        assert!(ca.server_config(&["bäd.example".to_string()]).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_damaged_ca_file_is_named() {
        let dir = crate::test_dir::TestDir::new("pg-ca-bad");
        std::fs::write(dir.join(CA_FILE), "garbage").unwrap();
        let err = PgCa::load_or_create(&dir).unwrap_err().to_string();
        assert!(
            err.contains(CA_FILE) && err.contains("no certificate"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
