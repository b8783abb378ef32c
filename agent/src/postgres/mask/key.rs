//! The host's masking key for the `hash` strategy: 32 random bytes in
//! `<state dir>/mask.key` (64 hex digits and a newline, mode 0600), created
//! at first start. Hashes are HMAC-SHA256 under it, so equal values stay
//! equal across sessions and restarts of this host, and nobody without the
//! file can confirm a guessed value.

use std::{
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// The key file's name in the state dir.
pub const MASK_KEY_FILE: &str = "mask.key";

/// Why the key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum MaskKeyError {
    #[error("masking key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("masking key {path} is open to others (mode {mode:o}); chmod 600 it")]
    Mode { path: PathBuf, mode: u32 },
}

/// The key. `Debug` never shows it.
pub struct MaskKey {
    key: [u8; 32],
}

impl std::fmt::Debug for MaskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MaskKey(***)")
    }
}

fn err(path: &Path, reason: impl std::fmt::Display) -> MaskKeyError {
    MaskKeyError::Key {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

impl MaskKey {
    /// Loads `<state_dir>/mask.key`, creating it (mode 0600, fresh random
    /// bytes) if absent.
    ///
    /// # Errors
    /// I/O, randomness or format problems; [`MaskKeyError::Mode`] if an
    /// existing file is readable by group or others.
    pub fn load_or_create(state_dir: &Path) -> Result<MaskKey, MaskKeyError> {
        let path = state_dir.join(MASK_KEY_FILE);
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| err(&path, format!("no randomness: {e}")))?;
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        match created {
            Ok(mut f) => {
                f.write_all(format!("{}\n", hex::encode(key)).as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(|e| err(&path, e))?;
                Ok(MaskKey { key })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => MaskKey::load(&path),
            Err(e) => Err(err(&path, e)),
        }
    }

    fn load(path: &Path) -> Result<MaskKey, MaskKeyError> {
        let mode = std::fs::metadata(path)
            .map_err(|e| err(path, e))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(MaskKeyError::Mode {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(path, e))?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut key).map_err(|_| err(path, "not 64 hex digits"))?;
        Ok(MaskKey { key })
    }

    /// A key from bytes (tests and tools).
    pub fn from_bytes(key: [u8; 32]) -> MaskKey {
        MaskKey { key }
    }

    /// `h:` and the first 16 hex digits of HMAC-SHA256(key, value).
    pub fn hash(&self, value: &[u8]) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            // HMAC takes keys of any length; unreachable, but never unmasked.
            return "h:????????????????".into();
        };
        mac.update(value);
        let out = mac.finalize().into_bytes();
        format!("h:{}", hex::encode(out.get(..8).unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_0600_reloaded_and_deterministic() {
        let dir = crate::test_dir::TestDir::new("mask-key");
        let k = MaskKey::load_or_create(&dir).unwrap();
        let path = dir.join(MASK_KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = MaskKey::load_or_create(&dir).unwrap();
        let h = k.hash(b"bob@example.com");
        assert_eq!(h, again.hash(b"bob@example.com"));
        assert_ne!(h, k.hash(b"eve@example.com"));
        assert_eq!(h.len(), 18);
        assert!(h.starts_with("h:") && h[2..].chars().all(|c| c.is_ascii_hexdigit()));
        // another host's key gives other hashes
        assert_ne!(h, MaskKey::from_bytes([7; 32]).hash(b"bob@example.com"));
        assert!(!format!("{k:?}").contains(&hex::encode(k.key)));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            MaskKey::load_or_create(&dir),
            Err(MaskKeyError::Mode { .. })
        ));
        std::fs::write(&path, "zz\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            MaskKey::load_or_create(&dir)
                .unwrap_err()
                .to_string()
                .contains("not 64 hex digits")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
