//! Column identity for masking: table OID + attnum -> `schema.table.column`,
//! looked up on interlock's own extra upstream connection (so aliases in
//! the client's query cannot evade a column rule) and cached per session.

use std::collections::HashMap;

use postgres_protocol::authentication::sasl::ScramSha256;

use super::{
    auth::answer,
    error::{PgError, ProtocolError},
    frame::{FrameReader, FrameWriter},
    legs::{Reader, Writer, read_err},
    message::{AuthRequest, BackendMessage, FrontendMessage, StartupPacket},
    target::PgTarget,
    tls,
};
use crate::gate::Side;

/// The lazily opened catalog connection and its cache.
pub(crate) struct Catalog {
    target: PgTarget,
    params: Vec<(String, String)>,
    conn: Option<(Reader, Writer)>,
    cache: HashMap<(u32, i16), String>,
}

impl Catalog {
    /// A catalog for `target`, connecting with the session's user and database.
    pub(crate) fn new(target: PgTarget, params: Vec<(String, String)>) -> Catalog {
        let params = params
            .into_iter()
            .filter(|(k, _)| k == "user" || k == "database")
            .collect();
        Catalog {
            target,
            params,
            conn: None,
            cache: HashMap::new(),
        }
    }

    /// Names of the given (table OID, attnum) columns; `None` for computed
    /// columns. Errors: no injected credentials (passthrough sessions cannot
    /// open a second connection), connection or query failures.
    pub(crate) async fn resolve(
        &mut self,
        cols: &[(u32, i16)],
    ) -> Result<Vec<Option<String>>, PgError> {
        let missing: Vec<u32> = cols
            .iter()
            .filter(|(t, a)| *t != 0 && *a > 0 && !self.cache.contains_key(&(*t, *a)))
            .map(|(t, _)| *t)
            .collect();
        if !missing.is_empty() {
            self.load(&missing).await?;
        }
        Ok(cols.iter().map(|k| self.cache.get(k).cloned()).collect())
    }

    async fn load(&mut self, oids: &[u32]) -> Result<(), PgError> {
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
        }
        let Some((r, w)) = self.conn.as_mut() else {
            return Err(PgError::Auth("catalog connection unavailable".into()));
        };
        let list: Vec<String> = oids.iter().map(u32::to_string).collect();
        let sql = format!(
            "select c.oid, a.attnum, n.nspname || '.' || c.relname || '.' || a.attname \
             from pg_catalog.pg_attribute a join pg_catalog.pg_class c on c.oid = a.attrelid \
             join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
             where a.attnum > 0 and c.oid in ({})",
            list.join(",")
        );
        w.send(&FrontendMessage::Query { sql: sql.into() }.encode())
            .await?;
        loop {
            let frame = r
                .read_frame()
                .await
                .map_err(|e| read_err(Side::Server, e))?;
            let frame =
                frame.ok_or_else(|| PgError::Refused("catalog connection closed".into()))?;
            match BackendMessage::decode(&frame).map_err(|e| PgError::protocol(Side::Server, e))? {
                BackendMessage::DataRow(cols) => {
                    let text = |i: usize| {
                        cols.get(i)
                            .cloned()
                            .flatten()
                            .and_then(|b| String::from_utf8(b.to_vec()).ok())
                    };
                    if let (Some(oid), Some(att), Some(name)) = (text(0), text(1), text(2))
                        && let (Ok(oid), Ok(att)) = (oid.parse(), att.parse())
                    {
                        self.cache.insert((oid, att), name);
                    }
                }
                BackendMessage::ErrorResponse(f) => {
                    return Err(PgError::Refused(format!(
                        "catalog lookup failed: {}",
                        f.get(b'M').unwrap_or("")
                    )));
                }
                BackendMessage::ReadyForQuery { .. } => return Ok(()),
                _ => {}
            }
        }
    }

    async fn connect(&self) -> Result<(Reader, Writer), PgError> {
        let creds = self
            .target
            .credentials
            .as_ref()
            .ok_or_else(|| PgError::Auth("column masking needs injected credentials".into()))?;
        let mut params = self.params.clone();
        params.push(("application_name".into(), "interlock catalog".into()));
        let user = params
            .iter()
            .find(|(k, _)| k == "user")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let (r, w) = tokio::io::split(tls::connect(&self.target).await?);
        let (mut r, mut w) = (
            FrameReader::new(r, self.target.max_frame),
            FrameWriter::new(w),
        );
        w.send(&StartupPacket::Startup { minor: 0, params }.encode())
            .await?;
        let mut scram: Option<ScramSha256> = None;
        loop {
            let frame = r
                .read_frame()
                .await
                .map_err(|e| read_err(Side::Server, e))?;
            let frame =
                frame.ok_or_else(|| PgError::Refused("catalog connection closed".into()))?;
            match BackendMessage::decode(&frame).map_err(|e| PgError::protocol(Side::Server, e))? {
                BackendMessage::Authentication(AuthRequest::Ok) => {}
                BackendMessage::Authentication(req) => {
                    if let Some(reply) = answer(req, creds.password.expose(), &user, &mut scram)? {
                        w.send(&reply).await?;
                    }
                }
                BackendMessage::ErrorResponse(f) => {
                    return Err(PgError::Refused(format!(
                        "catalog connection refused: {}",
                        f.get(b'M').unwrap_or("")
                    )));
                }
                BackendMessage::ReadyForQuery { .. } => return Ok((r, w)),
                BackendMessage::ParameterStatus { .. }
                | BackendMessage::BackendKeyData { .. }
                | BackendMessage::NoticeResponse(_)
                | BackendMessage::NegotiateProtocolVersion { .. } => {}
                other => {
                    return Err(PgError::protocol(
                        Side::Server,
                        ProtocolError::Unexpected(format!("{other:?} on the catalog connection")),
                    ));
                }
            }
        }
    }
}
