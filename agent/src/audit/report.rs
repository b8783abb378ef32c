//! What `interlock audit verify` found, and how it is printed.

use std::fmt;

/// What kind of damage the first bad record shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tamper {
    /// Its content does not match its hash (or it is not a record at all).
    Edited,
    /// Records are missing before it (seq gap, broken link).
    Deleted,
    /// It (or the record before it) is not part of the chain.
    Inserted,
    /// It stands where another seq belongs, and that seq comes later.
    Reordered,
    /// Records were cut away behind the latest checkpoint.
    Truncated,
    /// A checkpoint's signature does not verify with the trusted key.
    BadSignature,
}

impl fmt::Display for Tamper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tamper::Edited => "edited",
            Tamper::Deleted => "deleted",
            Tamper::Inserted => "inserted",
            Tamper::Reordered => "reordered",
            Tamper::Truncated => "truncated",
            Tamper::BadSignature => "bad signature",
        })
    }
}

/// The first bad record.
#[derive(Clone, Debug)]
pub struct Problem {
    pub kind: Tamper,
    /// File name inside the audit directory.
    pub file: String,
    /// Line number from 1.
    pub line: usize,
    pub seq: Option<u64>,
    pub detail: String,
}

/// What [`verify`] found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Good records before the first problem (all of them if none).
    pub records: u64,
    pub segments: usize,
    pub checkpoints: u64,
    pub last_seq: u64,
    /// Hex public key the signatures were checked against, and where it came from.
    pub key: String,
    pub key_source: String,
    /// Records after the last checkpoint (intact, but not signed yet).
    pub unsealed: u64,
    /// `(file, bytes)` of an incomplete last line (a crash mid-write).
    pub partial: Option<(String, usize)>,
    pub problem: Option<Problem>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.problem {
            write!(f, "CORRUPT: {} at {} line {}", p.kind, p.file, p.line)?;
            if let Some(seq) = p.seq {
                write!(f, " (seq {seq})")?;
            }
            writeln!(f, ": {}", p.detail)?;
            return write!(
                f,
                "checked before it: {} records, {} checkpoints; key {} from {}",
                self.records, self.checkpoints, self.key, self.key_source
            );
        }
        write!(
            f,
            "ok: {} records in {} segments, {} checkpoints, last seq {}, signed by {} (key from {})",
            self.records, self.segments, self.checkpoints, self.last_seq, self.key, self.key_source
        )?;
        if self.unsealed > 0 {
            write!(
                f,
                "\nunsealed: {} records after the last checkpoint (seq {}..{}); the daemon seals them when it next starts",
                self.unsealed,
                self.last_seq + 1 - self.unsealed,
                self.last_seq
            )?;
        }
        if let Some((file, bytes)) = &self.partial {
            write!(
                f,
                "\npartial: the last line of {file} is incomplete ({bytes} bytes, written when the daemon died); the daemon drops it when it next starts"
            )?;
        }
        Ok(())
    }
}
