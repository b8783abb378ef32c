//! One chained record and its bytes.
//!
//! A record is one JSON object on one line: `seq`, `prev`, the event's own
//! fields, then `hash` as the last field. The *canonical bytes* are exactly
//! that line without `,"hash":"…"` (and without the newline): the object as
//! serialized with `hash` absent. `hash` is the lowercase hex SHA-256 of the
//! canonical bytes; `prev` is the previous record's `hash` (64 zeros for the
//! first record ever). The verifier recovers the canonical bytes by cutting
//! the fixed-size `hash` suffix off the line, so it never depends on how
//! JSON is re-serialized.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// `prev` of the first record ever.
pub(crate) const ZERO_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";
const HASH_FIELD: &[u8] = b",\"hash\":\"";
const HASH_HEX: usize = 64;
/// The record `type` of a checkpoint.
pub(crate) const CHECKPOINT: &str = "checkpoint";

/// Header fields in front of a record's body.
#[derive(Serialize)]
pub(crate) struct Chained<'a, B: Serialize> {
    pub seq: u64,
    pub prev: &'a str,
    #[serde(flatten)]
    pub body: &'a B,
}

/// The signed part of a checkpoint record (its `type` is `checkpoint`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// Seq of the last record covered (the record right before the checkpoint).
    pub covers_seq: u64,
    /// Hash of that record.
    pub covers_hash: String,
    /// Hex ed25519 public key of the signer (informational; verify uses a trusted key).
    pub key: String,
    /// Hex ed25519 signature over [`checkpoint_message`].
    pub signature: String,
}

/// The body of a checkpoint record.
#[derive(Serialize)]
pub(crate) struct CheckpointBody<'a> {
    pub id: String,
    pub time: &'a str,
    pub host: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(flatten)]
    pub checkpoint: &'a Checkpoint,
}

/// The bytes a checkpoint signs: `{seq, hash of the last record covered, time}`.
pub(crate) fn checkpoint_message(covers_seq: u64, covers_hash: &str, time: &str) -> Vec<u8> {
    format!("interlock-audit-checkpoint-v1\n{covers_seq}\n{covers_hash}\n{time}\n").into_bytes()
}

/// Lowercase hex SHA-256.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Serializes `seq`, `prev` and `body` to the full line (with `hash` and a
/// newline); returns the line and its hash.
///
/// # Errors
/// The body does not serialize to a JSON object.
pub(crate) fn encode<B: Serialize>(
    seq: u64,
    prev: &str,
    body: &B,
) -> Result<(Vec<u8>, String), serde_json::Error> {
    let canonical = serde_json::to_vec(&Chained { seq, prev, body })?;
    let hash = sha256_hex(&canonical);
    let open = canonical
        .strip_suffix(b"}")
        .ok_or_else(|| <serde_json::Error as serde::ser::Error>::custom("not an object"))?;
    let mut line = Vec::with_capacity(canonical.len() + HASH_FIELD.len() + HASH_HEX + 3);
    line.extend_from_slice(open);
    line.extend_from_slice(HASH_FIELD);
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}\n");
    Ok((line, hash))
}

/// A record read back from a line.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub seq: u64,
    pub prev: String,
    pub hash: String,
    /// The `type` field.
    pub kind: String,
    pub time: String,
    /// The whole object (for checkpoint fields).
    pub value: serde_json::Value,
}

/// The fields every record has.
#[derive(Deserialize)]
struct Header {
    seq: u64,
    prev: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    time: String,
}

/// Why a line is not a good record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LineError {
    /// Not JSON with the record fields and the `hash` suffix.
    Malformed,
    /// The stated hash is not the hash of the canonical bytes (the record's seq).
    HashMismatch(u64),
}

/// Parses one line (without its newline) and checks its own hash.
///
/// # Errors
/// [`LineError`] when the line is malformed or its hash does not match.
pub(crate) fn parse(line: &[u8]) -> Result<Parsed, LineError> {
    let start = line
        .len()
        .checked_sub(HASH_FIELD.len() + HASH_HEX + 2)
        .ok_or(LineError::Malformed)?;
    let (open, tail) = line.split_at_checked(start).ok_or(LineError::Malformed)?;
    let stated = tail
        .strip_prefix(HASH_FIELD)
        .and_then(|t| t.strip_suffix(b"\"}"))
        .and_then(|h| std::str::from_utf8(h).ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        .ok_or(LineError::Malformed)?;
    let mut canonical = open.to_vec();
    canonical.push(b'}');
    let value: serde_json::Value =
        serde_json::from_slice(&canonical).map_err(|_| LineError::Malformed)?;
    let Header {
        seq,
        prev,
        kind,
        time,
    } = Header::deserialize(&value).map_err(|_| LineError::Malformed)?;
    if sha256_hex(&canonical) != stated {
        return Err(LineError::HashMismatch(seq));
    }
    Ok(Parsed {
        seq,
        prev,
        hash: stated.to_string(),
        kind,
        time,
        value,
    })
}

impl Parsed {
    /// The checkpoint fields, if this is a well-formed checkpoint record.
    pub(crate) fn checkpoint(&self) -> Option<Checkpoint> {
        if self.kind != CHECKPOINT {
            return None;
        }
        serde_json::from_value(self.value.clone()).ok()
    }
}

/// `<audit dir>/checkpoint.json`: the latest checkpoint, rewritten
/// atomically after each checkpoint record is on disk. It lets the verifier
/// notice records cut away behind the last checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct CheckpointFile {
    /// Segment file holding the checkpoint record.
    pub segment: String,
    /// Seq of the checkpoint record itself.
    pub seq: u64,
    /// Hash of the checkpoint record.
    pub hash: String,
    pub time: String,
    #[serde(flatten)]
    pub checkpoint: Checkpoint,
}

/// The file name of [`CheckpointFile`] in the audit directory.
pub(crate) const CHECKPOINT_FILE: &str = "checkpoint.json";

impl CheckpointFile {
    /// Reads the checkpoint file; `Ok(None)` if there is none.
    ///
    /// # Errors
    /// It exists but cannot be read or parsed.
    pub(crate) fn read(dir: &std::path::Path) -> Result<Option<CheckpointFile>, String> {
        let path = dir.join(CHECKPOINT_FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Body {
        #[serde(rename = "type")]
        kind: &'static str,
        time: &'static str,
        text: &'static str,
    }

    #[test]
    fn canonical_hash_round_trip() {
        let body = Body {
            kind: "note",
            time: "2026-01-01T00:00:00.000Z",
            text: "quote \" and \\ and ünïcode",
        };
        let (line, hash) = encode(7, ZERO_HASH, &body).unwrap();
        assert!(line.ends_with(b"\"}\n"));
        let text = std::str::from_utf8(&line).unwrap();
        assert!(text.starts_with("{\"seq\":7,\"prev\":\"000"), "{text}");
        assert!(
            text.trim_end()
                .ends_with(&format!(",\"hash\":\"{hash}\"}}"))
        );
        // The canonical bytes are the line without the hash field.
        let canonical = serde_json::to_vec(&Chained {
            seq: 7,
            prev: ZERO_HASH,
            body: &body,
        })
        .unwrap();
        assert_eq!(sha256_hex(&canonical), hash);
        let p = parse(line.strip_suffix(b"\n").unwrap()).unwrap();
        assert_eq!(
            (p.seq, p.prev.as_str(), p.hash.as_str()),
            (7, ZERO_HASH, hash.as_str())
        );
        assert_eq!(p.kind, "note");
        let full: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            full["hash"],
            hash.as_str(),
            "the full line is valid JSON too"
        );
    }

    #[test]
    fn an_edit_is_a_hash_mismatch_and_garbage_is_malformed() {
        let body = Body {
            kind: "note",
            time: "t",
            text: "abc",
        };
        let (line, _) = encode(1, ZERO_HASH, &body).unwrap();
        let edited = String::from_utf8(line).unwrap().replace("abc", "abd");
        assert_eq!(
            parse(edited.trim_end().as_bytes()).unwrap_err(),
            LineError::HashMismatch(1)
        );
        for bad in ["", "{}", "not json", "{\"seq\":1,\"hash\":\"zz\"}"] {
            assert_eq!(
                parse(bad.as_bytes()).unwrap_err(),
                LineError::Malformed,
                "{bad}"
            );
        }
    }
}
