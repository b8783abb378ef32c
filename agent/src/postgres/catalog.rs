//! Column identity for masking: table OID + attnum -> `schema.table.column`
//! (and, for a view column, every column the view reads, through the
//! view's dependencies), and relation names -> what they read, looked up on
//! interlock's own extra upstream connection (so aliases in the client's
//! query cannot evade a column rule) and cached per session. The same
//! connection looks up the functions statements call (`functions.rs`).

use std::{collections::HashMap, sync::Arc};

use postgres_protocol::authentication::sasl::ScramSha256;

use super::{
    auth::answer,
    classify::RelName,
    error::{PgError, ProtocolError},
    frame::{FrameReader, FrameWriter},
    functions::Functions,
    legs::{Reader, Writer, read_err},
    mask::{BaseRef, MaskKey, Source},
    message::{AuthRequest, BackendMessage, FrontendMessage, StartupPacket},
    target::PgTarget,
    tls,
};
use crate::gate::Side;

/// The lazily opened catalog connection and its caches.
pub(crate) struct Catalog {
    target: PgTarget,
    params: Vec<(String, String)>,
    conn: Option<(Reader, Writer)>,
    columns: HashMap<(u32, i16), Source>,
    names: HashMap<RelName, Arc<[BaseRef]>>,
    /// Functions looked up for statements' calls.
    pub(super) functions: Functions,
}

/// What a view (or a relation name) reads, recursively through views:
/// (root, schema, relation, column or NULL for the whole relation).
const READS: &str = "\
    with recursive r(root, rel, att) as ( \
      select w.ev_class, d.refobjid, d.refobjsubid from pg_catalog.pg_rewrite w \
      join pg_catalog.pg_depend d on d.objid = w.oid \
        and d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass \
        and d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass and d.refobjid <> w.ev_class \
      where w.ev_class in ({roots}) \
      union \
      select r.root, d.refobjid, d.refobjsubid from r \
      join pg_catalog.pg_rewrite w on w.ev_class = r.rel \
      join pg_catalog.pg_depend d on d.objid = w.oid \
        and d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass \
        and d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass and d.refobjid <> w.ev_class) \
    select r.root, n.nspname, c.relname, a.attname from r \
    join pg_catalog.pg_class c on c.oid = r.rel \
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
    left join pg_catalog.pg_attribute a on a.attrelid = r.rel and a.attnum = r.att and r.att > 0";

/// A string literal that means the same whatever standard_conforming_strings is.
fn literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

type Rows = Vec<Vec<Option<String>>>;

fn cell(row: &[Option<String>], i: usize) -> Option<&str> {
    row.get(i).and_then(Option::as_deref)
}

/// A `(root, schema, relation, column)` row of [`READS`] as a reference.
fn read_ref(row: &[Option<String>]) -> Option<(String, BaseRef)> {
    let (root, schema, rel) = (cell(row, 0)?, cell(row, 1)?, cell(row, 2)?);
    let r = match cell(row, 3) {
        Some(col) => BaseRef::column(schema, rel, col),
        None => BaseRef::relation(schema, rel),
    };
    Some((root.to_string(), r))
}

impl Catalog {
    /// The target the session serves.
    pub(crate) fn target(&self) -> &PgTarget {
        &self.target
    }

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
            columns: HashMap::new(),
            names: HashMap::new(),
            functions: Functions::default(),
        }
    }

    /// The key for the hash strategy, from the target.
    pub(crate) fn mask_key(&self) -> Option<Arc<MaskKey>> {
        self.target.mask_key.clone()
    }

    /// Where the given (table OID, attnum) columns come from: computed for
    /// OID 0 or attnum <= 0, unknown when the catalog has no such column.
    /// Errors: no injected credentials (passthrough sessions cannot open a
    /// second connection), connection or query failures.
    pub(crate) async fn resolve(&mut self, cols: &[(u32, i16)]) -> Result<Vec<Source>, PgError> {
        let mut missing: Vec<u32> = cols
            .iter()
            .filter(|(t, a)| *t != 0 && *a > 0 && !self.columns.contains_key(&(*t, *a)))
            .map(|(t, _)| *t)
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            self.load(&missing).await?;
        }
        Ok(cols
            .iter()
            .map(|&(t, a)| match (t, a) {
                (0, _) | (_, ..=0) => Source::Computed,
                k => self.columns.get(&k).cloned().unwrap_or(Source::Unknown),
            })
            .collect())
    }

    async fn load(&mut self, oids: &[u32]) -> Result<(), PgError> {
        let list: Vec<String> = oids.iter().map(u32::to_string).collect();
        let rows = self
            .rows(format!(
                "select c.oid, a.attnum, n.nspname, c.relname, a.attname, c.relkind \
                 from pg_catalog.pg_attribute a join pg_catalog.pg_class c on c.oid = a.attrelid \
                 join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
                 where a.attnum > 0 and c.oid in ({})",
                list.join(",")
            ))
            .await?;
        let views: Vec<&str> = rows
            .iter()
            .filter(|r| matches!(cell(r, 5), Some("v" | "m")))
            .filter_map(|r| cell(r, 0))
            .collect();
        let mut reads: HashMap<String, Vec<BaseRef>> = HashMap::new();
        if !views.is_empty() {
            let mut roots = views.clone();
            roots.sort_unstable();
            roots.dedup();
            let deps = self
                .rows(READS.replace("{roots}", &roots.join(",")))
                .await?;
            for (root, r) in deps.iter().filter_map(|d| read_ref(d)) {
                reads.entry(root).or_default().push(r);
            }
        }
        let mut shared: HashMap<String, Arc<[BaseRef]>> = HashMap::new();
        for r in &rows {
            let (Some(oid), Some(att), Some(schema), Some(rel), Some(col)) =
                (cell(r, 0), cell(r, 1), cell(r, 2), cell(r, 3), cell(r, 4))
            else {
                continue;
            };
            let (Ok(o), Ok(a)) = (oid.parse(), att.parse()) else {
                continue;
            };
            let via = shared
                .entry(oid.to_string())
                .or_insert_with(|| reads.remove(oid).unwrap_or_default().into())
                .clone();
            self.columns.insert(
                (o, a),
                Source::Column {
                    name: format!("{schema}.{rel}.{col}"),
                    reads: via,
                },
            );
        }
        Ok(())
    }

    /// What relations named in a statement read: each name's relations
    /// (in any schema, for a name written without one) and, for views,
    /// everything behind them. A name the catalog does not know (a CTE)
    /// stands for itself. Errors as for [`Catalog::resolve`].
    pub(crate) async fn reads(&mut self, names: &[RelName]) -> Result<Vec<BaseRef>, PgError> {
        let missing: Vec<&RelName> = names
            .iter()
            .filter(|n| !self.names.contains_key(*n))
            .collect();
        if !missing.is_empty() {
            let mut lits: Vec<String> = missing.iter().map(|n| literal(&n.name)).collect();
            lits.sort();
            lits.dedup();
            let roots = format!(
                "select c.oid from pg_catalog.pg_class c where c.relname in ({})",
                lits.join(",")
            );
            let sql = format!(
                "select c.relname, n.nspname, c.oid from pg_catalog.pg_class c \
                 join pg_catalog.pg_namespace n on n.oid = c.relnamespace where c.oid in ({roots}); {}",
                READS.replace("{roots}", &roots)
            );
            let rows = self.rows(sql).await?;
            // Rows of the first query have 3 cells, those of READS 4.
            let mut behind: HashMap<String, Vec<BaseRef>> = HashMap::new();
            for (root, r) in rows
                .iter()
                .filter(|r| r.len() == 4)
                .filter_map(|r| read_ref(r))
            {
                behind.entry(root).or_default().push(r);
            }
            let found: Vec<(&str, &str, &str)> = rows
                .iter()
                .filter(|r| r.len() == 3)
                .filter_map(|r| Some((cell(r, 0)?, cell(r, 1)?, cell(r, 2)?)))
                .collect();
            for n in missing {
                let mut refs: Vec<BaseRef> = Vec::new();
                for (rel, schema, oid) in &found {
                    if *rel == n.name && n.schema.as_deref().is_none_or(|s| s == *schema) {
                        refs.push(BaseRef::relation(schema, rel));
                        refs.extend(behind.get(*oid).into_iter().flatten().cloned());
                    }
                }
                if refs.is_empty() {
                    refs.push(match &n.schema {
                        Some(s) => BaseRef::relation(s, &n.name),
                        None => BaseRef::unqualified(&n.name),
                    });
                }
                self.names.insert(n.clone(), refs.into());
            }
        }
        Ok(names
            .iter()
            .filter_map(|n| self.names.get(n))
            .flat_map(|r| r.iter().cloned())
            .collect())
    }

    /// Runs `sql` (simple protocol) and returns every DataRow as text.
    pub(super) async fn rows(&mut self, sql: String) -> Result<Rows, PgError> {
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
        }
        let Some((r, w)) = self.conn.as_mut() else {
            return Err(PgError::Auth("catalog connection unavailable".into()));
        };
        w.send(&FrontendMessage::Query { sql: sql.into() }.encode())
            .await?;
        let mut rows = Vec::new();
        let mut failed = None;
        loop {
            let frame = r
                .read_frame()
                .await
                .map_err(|e| read_err(Side::Server, e))?;
            let frame =
                frame.ok_or_else(|| PgError::Refused("catalog connection closed".into()))?;
            match BackendMessage::decode(&frame).map_err(|e| PgError::protocol(Side::Server, e))? {
                BackendMessage::DataRow(cols) => rows.push(
                    cols.into_iter()
                        .map(|c| c.and_then(|b| String::from_utf8(b.to_vec()).ok()))
                        .collect(),
                ),
                BackendMessage::ErrorResponse(f) => {
                    failed = Some(format!(
                        "catalog lookup failed: {}",
                        f.get(b'M').unwrap_or("")
                    ));
                }
                BackendMessage::ReadyForQuery { .. } => {
                    return match failed {
                        Some(e) => Err(PgError::Refused(e)),
                        None => Ok(rows),
                    };
                }
                _ => {}
            }
        }
    }

    async fn connect(&self) -> Result<(Reader, Writer), PgError> {
        let creds = self.target.credentials.as_ref().ok_or_else(|| {
            PgError::Auth(
                "catalog lookups (column masking, function calls) need injected credentials".into(),
            )
        })?;
        let mut params = self.params.clone();
        params.push(("application_name".into(), "interlock catalog".into()));
        let user = params
            .iter()
            .find(|(k, _)| k == "user")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let upstream = tls::connect(&self.target).await?;
        let binding = upstream.channel_binding;
        let (r, w) = tokio::io::split(upstream.io);
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
                    let methods = self.target.password_methods;
                    let cb = binding.as_deref();
                    if let Some(reply) =
                        answer(req, creds.password.expose(), &user, methods, cb, &mut scram)?
                    {
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
