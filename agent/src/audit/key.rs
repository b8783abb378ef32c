//! The host's ed25519 key: `<audit dir>/host.key`, created on first start
//! with mode 0600. The file holds the 32-byte secret seed as 64 hex digits
//! and a newline. Public keys are printed and given as 64 hex digits.

use std::{
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
};

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};

use super::LogError;

/// The file name of the host key in the audit directory.
pub(crate) const KEY_FILE: &str = "host.key";

/// The host's signing key.
pub(crate) struct HostKey {
    signing: SigningKey,
}

impl HostKey {
    /// Loads `path`, or creates it (mode 0600, fresh random seed) if absent.
    ///
    /// # Errors
    /// [`LogError::Key`] on I/O, randomness or format problems,
    /// [`LogError::KeyMode`] if an existing file is open to group or others.
    pub(crate) fn load_or_create(path: &Path) -> Result<HostKey, LogError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| key_err(path, format!("no randomness: {e}")))?;
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match created {
            Ok(mut f) => {
                f.write_all(format!("{}\n", hex::encode(seed)).as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(|e| key_err(path, e.to_string()))?;
                Ok(HostKey {
                    signing: SigningKey::from_bytes(&seed),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => HostKey::load(path),
            Err(e) => Err(key_err(path, e.to_string())),
        }
    }

    /// Loads an existing key file.
    ///
    /// # Errors
    /// As [`HostKey::load_or_create`]; a missing file is [`LogError::Key`].
    pub(crate) fn load(path: &Path) -> Result<HostKey, LogError> {
        let meta = std::fs::metadata(path).map_err(|e| key_err(path, e.to_string()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(LogError::KeyMode {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| key_err(path, e.to_string()))?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut seed)
            .map_err(|_| key_err(path, "not 64 hex digits".into()))?;
        Ok(HostKey {
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// The public key as 64 hex digits.
    pub(crate) fn public_hex(&self) -> String {
        hex::encode(self.signing.verifying_key().as_bytes())
    }

    /// The public key.
    pub(crate) fn public(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// Hex signature over `msg`.
    pub(crate) fn sign(&self, msg: &[u8]) -> String {
        hex::encode(self.signing.sign(msg).to_bytes())
    }
}

fn key_err(path: &Path, reason: String) -> LogError {
    LogError::Key {
        path: path.to_path_buf(),
        reason,
    }
}

/// Parses a hex public key.
///
/// # Errors
/// [`LogError::PublicKey`] if it is not 32 hex bytes of a valid point.
pub(crate) fn parse_public(text: &str) -> Result<VerifyingKey, LogError> {
    let mut b = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut b).map_err(|_| LogError::PublicKey(text.into()))?;
    VerifyingKey::from_bytes(&b).map_err(|_| LogError::PublicKey(text.into()))
}

/// Whether `sig_hex` is a valid signature of `msg` by `key`.
pub(crate) fn verify_signature(key: &VerifyingKey, msg: &[u8], sig_hex: &str) -> bool {
    let mut b = [0u8; 64];
    if hex::decode_to_slice(sig_hex, &mut b).is_err() {
        return false;
    }
    key.verify(msg, &Signature::from_bytes(&b)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_with_mode_0600_and_reloaded() {
        let dir = crate::test_dir::TestDir::new("key");
        let path = dir.join(KEY_FILE);
        let _ = std::fs::remove_file(&path);
        let k = HostKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = HostKey::load_or_create(&path).unwrap();
        assert_eq!(k.public_hex(), again.public_hex());
        let sig = k.sign(b"m");
        let pk = parse_public(&k.public_hex()).unwrap();
        assert!(verify_signature(&pk, b"m", &sig));
        assert!(!verify_signature(&pk, b"n", &sig));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            HostKey::load(&path),
            Err(LogError::KeyMode { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
