//! A webhook's spool as the audit log's [`AuditSink`].

use super::Spool;
use crate::audit::AuditSink;

impl AuditSink for Spool {
    fn label(&self) -> &str {
        Spool::label(self)
    }

    fn is_disabled(&self) -> bool {
        Spool::is_disabled(self)
    }

    fn is_fresh(&self) -> bool {
        Spool::is_fresh(self)
    }

    fn last_seq(&self) -> u64 {
        Spool::last_seq(self)
    }

    fn start_at(&self, seq: u64) -> Result<(), String> {
        Spool::start_at(self, seq).map_err(|e| e.to_string())
    }

    fn append(&self, id: &str, seq: u64, body: &[u8]) -> Result<u64, String> {
        Spool::append(self, id, seq, body).map_err(|e| e.to_string())
    }

    fn unreported(&self) -> (u64, u64) {
        Spool::unreported(self)
    }

    fn mark_reported(&self, n: u64) -> Result<(), String> {
        Spool::mark_reported(self, n).map_err(|e| e.to_string())
    }

    fn sync(&self) -> Result<(), String> {
        Spool::sync(self).map_err(|e| e.to_string())
    }
}
