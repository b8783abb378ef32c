//! The session loop after startup: every client request passes the gate
//! before it goes upstream; server responses are relayed and matched to
//! statements for the audit records. A refused request is replaced upstream
//! by a statement that fails at the same point, so the server itself
//! discards to Sync and fails an open transaction exactly as it would have.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use bytes::Bytes;
use tokio::sync::watch;

use super::{
    catalog::Catalog,
    classify::{Classified, classify},
    decide::Decision,
    encoding::ClientEncoding,
    error::{PgError, ProtocolError},
    frame::Frame,
    legs::{Legs, proto, read_err},
    mask::{ColumnInfo, is_text_type},
    message::{BackendMessage, FrontendMessage, RowField, WireStr},
    pending::{Done, MaskCounts, OnError, Pending, StmtInfo},
};
use crate::gate::{Gate, Record, Side, StatementClass};

/// SQL that fails to parse on the server, sent in place of a refused
/// request; the server's syntax error for it is replaced by ours.
pub(crate) const INJECTED_SQL: &str = "interlock_refused";
/// The SQLSTATE recorded for a statement whose answer never came because
/// the session ended first (connection_failure: either side went away).
pub(crate) const INTERRUPTED: &str = "08006";

pub(crate) struct Relay<'a> {
    pub(crate) legs: &'a mut Legs,
    pub(crate) gate: Arc<dyn Gate>,
    pub(crate) cancel: watch::Receiver<u64>,
    /// Client messages read while a statement was held, processed next.
    pub(crate) deferred: VecDeque<Frame>,
    pending: Pending,
    statements: HashMap<WireStr, Option<StmtInfo>>,
    portals: HashMap<WireStr, WireStr>,
    /// Between the server's CopyInResponse and the client's CopyDone/CopyFail.
    copy_in: bool,
    catalog: Catalog,
    /// The session's client_encoding, for classifying what the client sends.
    pub(crate) encoding: ClientEncoding,
}

enum Event {
    Client(Option<Frame>),
    Server(Option<Frame>),
}

impl<'a> Relay<'a> {
    pub(crate) fn new(
        legs: &'a mut Legs,
        gate: Arc<dyn Gate>,
        cancel: watch::Receiver<u64>,
        catalog: Catalog,
    ) -> Relay<'a> {
        Relay {
            legs,
            catalog,
            gate,
            cancel,
            deferred: VecDeque::new(),
            pending: Pending::default(),
            statements: HashMap::new(),
            portals: HashMap::new(),
            copy_in: false,
            encoding: ClientEncoding::Utf8,
        }
    }

    /// Runs until either side closes or breaks the protocol. Statements
    /// still awaiting the server's answer then are recorded as
    /// interrupted. Errors: the server closing the connection (unless the
    /// client ended the session), protocol violations, I/O failures.
    pub(crate) async fn run(mut self) -> Result<(), PgError> {
        let result = self.relay().await;
        for done in self.pending.unanswered() {
            self.record(done, None, Some(INTERRUPTED.into())).await;
        }
        result
    }

    async fn relay(&mut self) -> Result<(), PgError> {
        loop {
            let event = match self.deferred.pop_front() {
                Some(f) => Event::Client(Some(f)),
                None => {
                    let legs = &mut *self.legs;
                    tokio::select! {
                        biased;
                        r = legs.server_r.read_frame() => Event::Server(r.map_err(|e| read_err(Side::Server, e))?),
                        r = legs.client_r.read_frame() => Event::Client(r.map_err(|e| read_err(Side::Client, e))?),
                    }
                }
            };
            match event {
                Event::Client(Some(f)) => {
                    if !self.on_client(f).await? {
                        return Ok(());
                    }
                }
                Event::Server(Some(f)) => self.on_server(f).await?,
                Event::Client(None) => return Ok(()),
                Event::Server(None) => return Err(PgError::UpstreamClosed),
            }
        }
    }

    /// Handles one client message; false when the session should end.
    /// Answers a refused simple query with `reply` while the server runs a
    /// statement that fails to parse at the same point, so its transaction
    /// state follows what the client sees.
    async fn refuse_query(&mut self, reply: Frame) -> Result<(), PgError> {
        self.pending.push_injected(reply);
        self.pending.push_boundary();
        let q = FrontendMessage::Query {
            sql: INJECTED_SQL.into(),
        };
        self.legs.server_w.send(&q.encode()).await?;
        Ok(())
    }

    /// Classifies SQL as the server will read it: converted from the
    /// client's encoding. Text that cannot be converted is one
    /// `unparseable` statement (policies decide; fail closed).
    fn classify(&self, sql: &WireStr) -> Vec<Classified> {
        match self.encoding.decode(sql.as_bytes()) {
            Some(text) => classify(&text),
            None => vec![Classified {
                text: sql.lossy().trim().to_string(),
                classes: vec![StatementClass::Unparseable],
            }],
        }
    }

    /// A statement's text for the records.
    fn text(&self, sql: &WireStr) -> String {
        match self.encoding.decode(sql.as_bytes()) {
            Some(text) => text.trim().to_string(),
            None => sql.lossy().trim().to_string(),
        }
    }

    async fn on_client(&mut self, frame: Frame) -> Result<bool, PgError> {
        match FrontendMessage::decode(&frame).map_err(proto(Side::Client))? {
            FrontendMessage::Query { sql } => {
                let stmts = self.classify(&sql);
                match self.decide_all(&stmts).await? {
                    Decision::Allowed(masks) => {
                        let mut masks = masks.into_iter();
                        for s in stmts {
                            self.pending.push_stmt(Some(StmtInfo {
                                text: s.text,
                                classes: s.classes,
                                mask: masks.next().unwrap_or_default(),
                                columns: None,
                            }));
                        }
                        self.pending.push_boundary();
                        self.legs.server_w.send(&frame).await?;
                    }
                    Decision::Refused(reply) => self.refuse_query(reply).await?,
                    Decision::ClientGone => return Ok(false),
                }
            }
            FrontendMessage::Parse { name, sql, .. } => {
                let stmts = self.classify(&sql);
                match self.decide_all(&stmts).await? {
                    Decision::Allowed(masks) => {
                        let mut classes: Vec<StatementClass> =
                            stmts.into_iter().flat_map(|s| s.classes).collect();
                        classes.sort();
                        classes.dedup();
                        let info = StmtInfo {
                            text: self.text(&sql),
                            classes,
                            mask: masks.into_iter().flatten().collect(),
                            columns: None,
                        };
                        self.statements.insert(name, Some(info));
                        self.legs.server_w.send(&frame).await?;
                    }
                    Decision::Refused(reply) => {
                        self.statements.remove(&name);
                        self.pending.push_injected(reply);
                        let p = FrontendMessage::Parse {
                            name,
                            sql: INJECTED_SQL.into(),
                            param_types: vec![],
                        };
                        self.legs.server_w.send(&p.encode()).await?;
                    }
                    Decision::ClientGone => return Ok(false),
                }
            }
            FrontendMessage::Bind {
                portal, statement, ..
            } => {
                self.portals.insert(portal, statement);
                self.legs.server_w.send(&frame).await?;
            }
            FrontendMessage::Execute { portal, .. } => {
                let info = self
                    .portals
                    .get(&portal)
                    .and_then(|s| self.statements.get(s))
                    .cloned()
                    .flatten();
                self.pending.push_stmt(info);
                self.legs.server_w.send(&frame).await?;
            }
            FrontendMessage::Sync => {
                // The server ignores Sync in copy-in mode.
                if !self.copy_in {
                    self.pending.push_sync();
                }
                self.legs.server_w.send(&frame).await?;
            }
            FrontendMessage::Close { kind, name } => {
                if kind == b'S' {
                    self.statements.remove(&name);
                } else {
                    self.portals.remove(&name);
                }
                self.legs.server_w.send(&frame).await?;
            }
            FrontendMessage::FunctionCall { oid, .. } => {
                let stmt = Classified {
                    text: format!("function call (oid {oid})"),
                    classes: vec![StatementClass::DangerousFunction],
                };
                let decision = self.decide_all(std::slice::from_ref(&stmt)).await?;
                match decision {
                    Decision::Allowed(_) => {
                        self.pending
                            .push_stmt(Some(StmtInfo::plain(stmt.text, stmt.classes)));
                        self.pending.push_boundary();
                        self.legs.server_w.send(&frame).await?;
                    }
                    Decision::Refused(reply) => self.refuse_query(reply).await?,
                    Decision::ClientGone => return Ok(false),
                }
            }
            FrontendMessage::Terminate => {
                self.legs.server_w.send(&frame).await?;
                return Ok(false);
            }
            FrontendMessage::Password(_) => {
                return Err(PgError::protocol(
                    Side::Client,
                    ProtocolError::Unexpected("password message after authentication".into()),
                ));
            }
            FrontendMessage::CopyDone | FrontendMessage::CopyFail { .. } => {
                self.copy_in = false;
                self.legs.server_w.send(&frame).await?;
            }
            FrontendMessage::Describe { kind, name } => {
                self.pending.push_describe((kind == b'S').then_some(name));
                self.legs.server_w.send(&frame).await?;
            }
            FrontendMessage::Flush | FrontendMessage::CopyData(_) => {
                self.legs.server_w.send(&frame).await?
            }
        }
        Ok(true)
    }

    /// Relays one server message, recording completed statements.
    pub(crate) async fn on_server(&mut self, frame: Frame) -> Result<(), PgError> {
        let msg = BackendMessage::decode(&frame).map_err(proto(Side::Server))?;
        match msg {
            BackendMessage::CommandComplete { tag } => {
                let rows = BackendMessage::rows_from_tag(&tag);
                self.completed(rows, None).await;
            }
            BackendMessage::EmptyQueryResponse
            | BackendMessage::PortalSuspended
            | BackendMessage::FunctionCallResponse(_) => self.completed(None, None).await,
            BackendMessage::CopyInResponse(_) | BackendMessage::CopyBothResponse(_) => {
                self.copy_in = true;
                self.pending.copy_in_started();
            }
            BackendMessage::ErrorResponse(f) => {
                // An error ends copy-in mode.
                self.copy_in = false;
                let ours = f.code() == Some("42601")
                    && f.get(b'M').is_some_and(|m| m.contains(INJECTED_SQL));
                match self.pending.error(ours) {
                    OnError::Replace(reply) => {
                        let reply = self.encoding.transcode(reply);
                        return Ok(self.legs.client_w.send(&reply).await?);
                    }
                    OnError::Record(done) => {
                        self.record(done, None, f.code().map(str::to_string)).await;
                    }
                    OnError::Forward => {}
                }
            }
            BackendMessage::ReadyForQuery { .. } => self.pending.ready(),
            BackendMessage::ParameterStatus { name, value } if name == "client_encoding" => {
                self.encoding = ClientEncoding::from_name(&value);
            }
            BackendMessage::RowDescription(body) => self.describe(body).await?,
            BackendMessage::NoData => {
                let _ = self.pending.described();
            }
            BackendMessage::DataRow(cols) => {
                if let Some((info, counts)) = self.pending.masking()
                    && let Some(masked) = mask_row(info, counts, cols)
                {
                    let row = BackendMessage::DataRow(masked).encode();
                    return Ok(self.legs.client_w.send(&row).await?);
                }
            }
            BackendMessage::CopyData(data) => {
                if let Some((info, counts)) = self.pending.masking() {
                    let mut data = data;
                    let mut changed = false;
                    for (plan, counts) in info.mask.iter().zip(counts.iter_mut()) {
                        if let Some(m) = plan.mask_value(&data, counts) {
                            data = m;
                            changed = true;
                        }
                    }
                    if changed {
                        let copy = BackendMessage::CopyData(data).encode();
                        return Ok(self.legs.client_w.send(&copy).await?);
                    }
                }
            }
            BackendMessage::Authentication(_) | BackendMessage::BackendKeyData { .. } => {
                return Err(PgError::protocol(
                    Side::Server,
                    ProtocolError::Unexpected(format!(
                        "{} after startup",
                        super::frame::tag_name(frame.tag())
                    )),
                ));
            }
            _ => {}
        }
        Ok(self.legs.client_w.send(&frame).await?)
    }

    async fn completed(&mut self, rows: Option<u64>, error: Option<String>) {
        if let Some(done) = self.pending.complete() {
            self.record(done, rows, error).await;
        }
    }

    async fn record(&self, done: Done, rows: Option<u64>, error: Option<String>) {
        let (info, started, counts) = done;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let record = Record::Statement {
            text: info.text,
            classes: info.classes,
            rows: if error.is_some() { None } else { rows },
            error,
            duration_ms,
        };
        self.gate.record(record).await;
        for (plan, counts) in info.mask.iter().zip(counts) {
            if !counts.is_empty() {
                let counts = counts.into_iter().collect();
                self.gate
                    .record(Record::Masked {
                        rule: plan.rule().to_string(),
                        counts,
                    })
                    .await;
            }
        }
    }
}

/// Applies every plan to a row; `None` if nothing was masked.
fn mask_row(
    info: &StmtInfo,
    counts: &mut MaskCounts,
    cols: Vec<Option<Bytes>>,
) -> Option<Vec<Option<Bytes>>> {
    let columns = info.columns.as_deref().map(Vec::as_slice);
    let mut row = cols;
    let mut changed = false;
    for (plan, counts) in info.mask.iter().zip(counts.iter_mut()) {
        if let Some(masked) = plan.mask_row(&row, columns, counts) {
            row = masked;
            changed = true;
        }
    }
    changed.then_some(row)
}

impl Relay<'_> {
    /// A RowDescription: when the described statement has column masking,
    /// resolves its columns through the catalog. A failed lookup leaves the
    /// columns unknown, which masks every value (fail closed).
    async fn describe(&mut self, body: Bytes) -> Result<(), PgError> {
        let named = match self.pending.described() {
            Some(Ok(name)) => match self.statements.get(&name) {
                Some(Some(info)) if info.needs_columns() => Some(name),
                _ => return Ok(()),
            },
            Some(Err(info)) if info.needs_columns() => None,
            _ => return Ok(()),
        };
        let fields = RowField::parse_all(body).map_err(proto(Side::Server))?;
        let keys: Vec<(u32, i16)> = fields.iter().map(|f| (f.table_oid, f.attnum)).collect();
        let columns = self.catalog.resolve(&keys).await.ok().map(|names| {
            let cols = names
                .into_iter()
                .zip(&fields)
                .map(|(name, f)| ColumnInfo {
                    name,
                    text: is_text_type(f.type_oid),
                })
                .collect();
            Arc::new(cols)
        });
        match named {
            Some(name) => {
                if let Some(Some(info)) = self.statements.get_mut(&name) {
                    info.columns = columns;
                }
            }
            None => {
                if let Some(Err(info)) = self.pending.described() {
                    info.columns = columns;
                }
            }
        }
        Ok(())
    }
}
