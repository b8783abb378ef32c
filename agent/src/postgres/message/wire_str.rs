//! A NUL-terminated string from a client message, kept as its bytes: a
//! client's text is in its client_encoding, not necessarily UTF-8.

use std::borrow::Cow;

use bytes::Bytes;

/// The bytes of one string field (without the terminating NUL). Compared
/// and hashed byte-wise, so statement and portal names in any encoding
/// stay distinct.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct WireStr(Bytes);

impl WireStr {
    /// A string from bytes without NUL (the decoder guarantees it).
    pub(crate) fn from_bytes(b: Bytes) -> WireStr {
        WireStr(b)
    }

    /// The bytes as sent.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The text if it is UTF-8, else with U+FFFD for what is not (for
    /// logs and names; statements are converted per client_encoding).
    pub fn lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    /// Whether the string is empty (the unnamed statement or portal).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for WireStr {
    fn from(s: &str) -> WireStr {
        WireStr(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for WireStr {
    fn from(s: String) -> WireStr {
        WireStr(Bytes::from(s))
    }
}

impl std::fmt::Debug for WireStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.lossy())
    }
}

impl std::fmt::Display for WireStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.lossy())
    }
}
