//! interlock's SSH certificate authority: an ed25519 key kept under the
//! state dir (mode 0600) that signs host certificates for the targets, so
//! a CI host trusts every proxied target with one `@cert-authority` line.

use std::{
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use russh::keys::{
    Algorithm, PrivateKey,
    ssh_key::{LineEnding, certificate},
};

use super::{HostIdentity, SshError};

/// File name of the CA key inside the state dir.
const CA_FILE: &str = "ssh_ca_ed25519";
/// Host certificates are valid from a little before minting (clock skew)...
const BACKDATE_SECS: u64 = 300;
/// ...for a week; mint again for longer-lived listeners.
const VALIDITY_SECS: u64 = 7 * 24 * 3600;

/// The SSH CA.
pub struct SshCa {
    key: PrivateKey,
    path: PathBuf,
}

impl std::fmt::Debug for SshCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshCa").field("path", &self.path).finish()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SshError + '_ {
    move |source| SshError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl SshCa {
    /// Loads the CA from `state_dir`, creating it (mode 0600) on first use.
    ///
    /// # Errors
    /// The directory or key file cannot be read or written, or the file
    /// does not hold an OpenSSH private key.
    pub fn load_or_create(state_dir: &Path) -> Result<SshCa, SshError> {
        let path = state_dir.join(CA_FILE);
        std::fs::create_dir_all(state_dir).map_err(io(state_dir))?;
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        match created {
            Ok(mut file) => {
                let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)?;
                let text = key.to_openssh(LineEnding::LF)?;
                file.write_all(text.as_bytes()).map_err(io(&path))?;
                file.sync_all().map_err(io(&path))?;
                Ok(SshCa { key, path })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read(&path).map_err(io(&path))?;
                let key = PrivateKey::from_openssh(&text)?;
                Ok(SshCa { key, path })
            }
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// The CA public key in OpenSSH format.
    pub fn public_key_openssh(&self) -> String {
        self.key.public_key().to_openssh().unwrap_or_default()
    }

    /// The known_hosts line that makes OpenSSH trust host certificates of
    /// this CA for hosts matching `patterns` (e.g. `*.internal`, `10.0.0.5`,
    /// `[10.0.0.5]:2222`).
    pub fn known_hosts_line(&self, patterns: &[&str]) -> String {
        format!(
            "@cert-authority {} {}",
            patterns.join(","),
            self.public_key_openssh()
        )
    }

    /// A fresh ed25519 host key with a host certificate for `principals`
    /// (the target's host names and addresses, as clients type them).
    ///
    /// # Errors
    /// Key generation or signing failed, or `principals` is empty.
    pub fn mint_host(&self, principals: &[&str]) -> Result<HostIdentity, SshError> {
        if principals.is_empty() {
            return Err(SshError::Key("a host certificate needs a principal".into()));
        }
        let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut rng = rand::rng();
        let mut b = certificate::Builder::new_with_random_nonce(
            &mut rng,
            key.public_key().key_data().clone(),
            now.saturating_sub(BACKDATE_SECS),
            now.saturating_add(VALIDITY_SECS),
        )?;
        b.serial(now)?;
        b.key_id(format!("interlock host {}", principals.join(",")))?;
        b.cert_type(certificate::CertType::Host)?;
        for p in principals {
            b.valid_principal(*p)?;
        }
        let cert = b.sign(&self.key)?;
        Ok(HostIdentity {
            key,
            certificate: Some(cert),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn ca_is_created_once_private_and_signs_host_certs() {
        let dir = crate::test_dir::TestDir::new("ssh-ca-test");
        let ca = SshCa::load_or_create(&dir).unwrap();
        let mode = std::fs::metadata(dir.join(CA_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = SshCa::load_or_create(&dir).unwrap();
        assert_eq!(ca.public_key_openssh(), again.public_key_openssh());
        let line = ca.known_hosts_line(&["10.0.0.5", "db.internal"]);
        assert!(line.starts_with("@cert-authority 10.0.0.5,db.internal ssh-ed25519 "));
        let id = ca.mint_host(&["10.0.0.5"]).unwrap();
        let cert = id.certificate.as_ref().unwrap();
        assert_eq!(cert.valid_principals(), ["10.0.0.5".to_string()]);
        assert_eq!(cert.cert_type(), certificate::CertType::Host);
        let ca_fp = ca.key.public_key().fingerprint(Default::default());
        cert.validate_at(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            [&ca_fp],
        )
        .unwrap();
        assert!(ca.mint_host(&[]).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
