//! The session loop after startup: every client request passes the gate
//! before it goes upstream; server responses are relayed, masked and
//! matched to statements for the audit records. A refused request is
//! replaced upstream by a statement that fails at the same point, so the
//! server itself discards to Sync and fails an open transaction exactly as
//! it would have.

use std::{collections::VecDeque, sync::Arc};

use tokio::sync::watch;

use super::{
    catalog::Catalog,
    classify::{
        Classified, ClassifyBudget, ClassifyCache, Reads, SessionClassifier, classify_with,
    },
    decide::Decision,
    encoding::ClientEncoding,
    error::{PgError, ProtocolError},
    executions::Executions,
    frame::Frame,
    legs::{Input, Legs, fatal, proto},
    mask::{MaskKey, Masks, ResultColumns},
    message::{BackendMessage, BindParams, FrontendMessage, WireStr, parameter_types},
    names::{Names, PortalDef},
    pending::{Described, OnError, Pending, Running, StmtInfo},
};
use crate::gate::{Gate, Side, StatementClass};

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
    pub(super) pending: Pending,
    pub(super) names: Names,
    /// Between the server's CopyInResponse and the client's CopyDone/CopyFail.
    copy_in: bool,
    pub(super) catalog: Catalog,
    /// For the `hash` strategy; `None` refuses statements masked by hash.
    pub(super) key: Option<Arc<MaskKey>>,
    /// The session's client_encoding, for classifying what the client sends.
    pub(crate) encoding: ClientEncoding,
    /// Recently classified SQL, by the client's bytes.
    classified: ClassifyCache,
    /// Long texts are classified off the runtime, within this budget.
    budget: ClassifyBudget,
    classifier: SessionClassifier,
    /// The session's standard_conforming_strings (off: backslashes escape
    /// in every string literal, and the grammar must read them so).
    standard_strings: bool,
    /// Approved prepared statements and their one execution.
    pub(super) executions: Executions,
}

fn fallback(gate: &dyn Gate, key: &Option<Arc<MaskKey>>) -> Masks {
    Masks::new(gate.possible_masks(), key.clone())
}

/// What interlock records and masks for something it did not see defined.
fn unknown(gate: &dyn Gate, key: &Option<Arc<MaskKey>>, text: String) -> StmtInfo {
    StmtInfo {
        masks: fallback(gate, key),
        ..StmtInfo::plain(text, vec![])
    }
}

/// The recorded text of a statement prepared outside interlock's view.
fn unprepared(name: &WireStr) -> String {
    let name = name.lossy();
    format!("execute prepared statement \"{name}\" (not prepared through interlock)")
}

/// The recorded text of a portal bound outside interlock's view.
fn unbound(name: &WireStr) -> String {
    let name = name.lossy();
    format!("execute portal \"{name}\" (not bound through interlock)")
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
            key: catalog.mask_key(),
            budget: catalog.target().classify.clone(),
            classifier: SessionClassifier::default(),
            catalog,
            gate,
            cancel,
            deferred: VecDeque::new(),
            pending: Pending::default(),
            names: Names::default(),
            copy_in: false,
            encoding: ClientEncoding::Utf8,
            classified: ClassifyCache::default(),
            standard_strings: true,
            executions: Executions::default(),
        }
    }

    /// Runs until either side closes or breaks the protocol. Statements
    /// still awaiting the server's answer then are recorded as
    /// interrupted. Errors: the server closing the connection (unless the
    /// client ended the session), protocol violations, I/O failures.
    pub(crate) async fn run(mut self) -> Result<(), PgError> {
        let result = self.relay().await;
        for done in self.pending.unanswered() {
            self.record(Box::new(done), None, Some(INTERRUPTED.into()))
                .await;
        }
        result
    }

    /// The loop: every wait is [`Legs::next`], which keeps both sides
    /// moving (see `legs` for why this cannot deadlock).
    async fn relay(&mut self) -> Result<(), PgError> {
        loop {
            // Messages read during a hold go first, while the server's
            // queue has room; the client is not read until they are gone.
            if !self.deferred.is_empty() && self.legs.server_has_room() {
                if let Some(f) = self.deferred.pop_front()
                    && !self.on_client(f).await?
                {
                    return Ok(());
                }
                continue;
            }
            match self.legs.next(self.deferred.is_empty()).await? {
                Input::Client(Some(f)) => {
                    if !self.on_client(f).await? {
                        return Ok(());
                    }
                }
                Input::Server(Some(f)) => self.on_server(f).await?,
                Input::Client(None) => return Ok(()),
                Input::Server(None) => return Err(PgError::UpstreamClosed),
                Input::Wrote => {}
            }
        }
    }

    /// Answers a refused simple query with `reply` while the server runs a
    /// statement that fails to parse at the same point, so its transaction
    /// state follows what the client sees.
    fn refuse_query(&mut self, reply: Frame) {
        self.pending.push_injected(reply);
        self.pending.push_boundary(self.names.next_id());
        let q = FrontendMessage::Query {
            sql: INJECTED_SQL.into(),
        };
        self.legs.server_w.push(&q.encode());
    }

    /// The masking for results interlock cannot tie to a statement it
    /// decided: every mask rule that could apply (fail closed).
    pub(super) fn fallback(&self) -> Masks {
        fallback(&*self.gate, &self.key)
    }

    /// One allowed statement of a simple query: queued for its results.
    fn push_statement(&mut self, s: Classified, masks: Masks) {
        if let Some(change) = &s.names {
            self.names.apply(change);
        }
        let masks = if s.indirect {
            masks.union(&self.fallback())
        } else {
            masks
        };
        self.pending.push_stmt(Running::new(StmtInfo {
            masks,
            reads: s.reads,
            opaque: s.opaque,
            ..StmtInfo::plain(s.text, s.classes)
        }));
    }

    /// The statements of one Parse as one prepared statement.
    fn prepared(&mut self, stmts: Vec<Classified>, masks: Vec<Masks>) -> StmtInfo {
        let mut merged = Masks::default();
        for m in &masks {
            merged = merged.union(m);
        }
        let mut classes: Vec<StatementClass> = Vec::new();
        let mut texts = Vec::new();
        let mut reads = Reads::Named(vec![]);
        let mut opaque = None;
        for s in stmts {
            if opaque.is_none() {
                opaque = s.opaque;
            }
            if let Some(change) = &s.names {
                self.names.apply(change);
            }
            if s.indirect {
                merged = merged.union(&self.fallback());
            }
            reads = match (reads, s.reads) {
                (Reads::Named(mut a), Reads::Named(b)) => {
                    a.extend(b);
                    Reads::Named(a)
                }
                _ => Reads::Any,
            };
            classes.extend(s.classes);
            texts.push(s.text);
        }
        classes.sort();
        classes.dedup();
        StmtInfo {
            masks: merged,
            reads,
            opaque,
            ..StmtInfo::plain(texts.join("; "), classes)
        }
    }

    /// Classifies SQL as the server will read it: converted from the
    /// client's encoding. Text that cannot be converted, or over the
    /// classification budget, is one `unparseable` statement (policies
    /// decide; fail closed).
    async fn classify(&mut self, sql: &WireStr) -> Vec<Classified> {
        if let Some(hit) = self.classified.lookup(sql.as_bytes()) {
            return hit;
        }
        let (encoding, standard) = (self.encoding, self.standard_strings);
        let bytes = sql.as_bytes().to_vec();
        let len = bytes.len();
        let fresh = self
            .classifier
            .run(&self.budget, len, move || match encoding.decode(&bytes) {
                Some(text) => classify_with(&text, standard),
                None => vec![Classified::other(
                    String::from_utf8_lossy(&bytes).trim().to_string(),
                    vec![StatementClass::Unparseable],
                )],
            })
            .await;
        self.classified.store(sql.as_bytes(), &fresh);
        fresh
    }

    /// Adds what the functions each statement calls do (looked up in the
    /// catalog, cached per session).
    async fn resolve_calls(&mut self, stmts: &mut [Classified]) {
        for s in stmts.iter_mut() {
            self.catalog.resolve_calls(s).await;
        }
    }

    /// After allowed statements: forget looked-up functions if any may
    /// have changed them, and remember functions the session defined.
    fn functions_may_change(&mut self, stmts: &[Classified]) {
        use StatementClass as C;
        let changes = |s: &&Classified| {
            s.classes.iter().any(|c| {
                matches!(
                    c,
                    C::Ddl | C::CreateFunction | C::DoBlock | C::Opaque | C::RoleChange
                )
            })
        };
        if stmts.iter().any(|s| changes(&s)) {
            self.catalog.functions.forget();
        }
        for s in stmts {
            if let Some(name) = &s.defines {
                self.catalog
                    .functions
                    .define(name, super::functions::FnFacts::of_definition(s));
            }
        }
    }

    /// Handles one client message; false when the session should end.
    async fn on_client(&mut self, frame: Frame) -> Result<bool, PgError> {
        match FrontendMessage::decode(&frame).map_err(proto(Side::Client))? {
            FrontendMessage::Query { sql } => {
                let mut stmts = self.classify(&sql).await;
                self.resolve_calls(&mut stmts).await;
                match self.decide_all(&stmts).await? {
                    Decision::Allowed(masks) => {
                        self.functions_may_change(&stmts);
                        let mut masks = masks.into_iter();
                        for s in stmts {
                            self.push_statement(s, masks.next().unwrap_or_default());
                        }
                        self.pending.push_boundary(self.names.next_id());
                        self.legs.server_w.push(&frame);
                    }
                    Decision::Refused(reply) => self.refuse_query(reply),
                    Decision::ClientGone => return Ok(false),
                }
            }
            FrontendMessage::Parse {
                name,
                sql,
                param_types,
            } => {
                let mut stmts = self.classify(&sql).await;
                self.resolve_calls(&mut stmts).await;
                match self.decide_parse(&name, &stmts).await? {
                    Decision::Allowed(masks) => {
                        self.functions_may_change(&stmts);
                        let info = self.prepared(stmts, masks);
                        let types = param_types.iter().map(|t| *t as u32).collect();
                        let undo = self.names.parse(name, info, types);
                        self.pending.push_define(undo);
                        self.legs.server_w.push(&frame);
                    }
                    Decision::Refused(reply) => {
                        self.names.close(b'S', &name);
                        self.pending.push_injected(reply);
                        let p = FrontendMessage::Parse {
                            name,
                            sql: INJECTED_SQL.into(),
                            param_types: vec![],
                        };
                        self.legs.server_w.push(&p.encode());
                    }
                    Decision::ClientGone => return Ok(false),
                }
            }
            FrontendMessage::Bind {
                portal,
                statement,
                rest,
            } => {
                match self.decide_bind(&statement).await? {
                    Decision::Allowed(_) => {}
                    Decision::Refused(reply) => {
                        // The server fails a Bind of a statement that does not exist at the
                        // same point; its error is replaced by ours.
                        self.names.close(b'P', &portal);
                        self.pending.push_injected(reply);
                        let b = FrontendMessage::Bind {
                            portal,
                            statement: self.executions.refused_name().into(),
                            rest,
                        };
                        self.legs.server_w.push(&b.encode());
                        return Ok(true);
                    }
                    Decision::ClientGone => return Ok(false),
                }
                let bind = BindParams::parse(rest).map_err(proto(Side::Client))?;
                let known = self.names.statement_mut(&statement).map(|def| {
                    let info = def.info.clone();
                    let types = def.param_types.clone();
                    (info, types, def.bound(&bind.result_formats))
                });
                let (mut info, types, (columns, plan)) = match known {
                    Some(k) => k,
                    None => {
                        let info = unknown(&*self.gate, &self.key, unprepared(&statement));
                        let cols = ResultColumns::undescribed(&bind.result_formats);
                        let plan =
                            (!info.masks.is_empty()).then(|| Arc::new(info.masks.plan(&cols)));
                        (info, vec![], (cols, plan))
                    }
                };
                info.params = super::results::params(&info.masks, &bind, &types);
                let def = PortalDef {
                    id: 0,
                    info,
                    columns,
                    plan,
                };
                let undo = self.names.bind(portal, def);
                self.pending.push_define(undo);
                self.legs.server_w.push(&frame);
            }
            FrontendMessage::Execute { portal, .. } => {
                let running = match self.names.portal(&portal) {
                    Some(def) => Running {
                        portal: Some(def.id),
                        columns: Some(def.columns.clone()),
                        plan: def.plan.clone(),
                        ..Running::new(def.info.clone())
                    },
                    None => Running::new(unknown(&*self.gate, &self.key, unbound(&portal))),
                };
                self.pending.push_stmt(running);
                self.legs.server_w.push(&frame);
            }
            FrontendMessage::Sync => {
                // The server ignores Sync in copy-in mode.
                if !self.copy_in {
                    self.pending.push_sync(self.names.next_id());
                }
                self.legs.server_w.push(&frame);
            }
            FrontendMessage::Close { kind, name } => {
                self.names.close(kind, &name);
                self.legs.server_w.push(&frame);
            }
            FrontendMessage::FunctionCall { oid, rest } => {
                let (args, result_format) =
                    BindParams::parse_call(rest).map_err(proto(Side::Client))?;
                let stmt = Classified::other(
                    format!("function call (oid {oid})"),
                    vec![StatementClass::DangerousFunction],
                );
                self.catalog.functions.forget();
                let decision = self.decide_all(std::slice::from_ref(&stmt)).await?;
                match decision {
                    Decision::Allowed(masks) => {
                        let masks = masks.into_iter().next().unwrap_or_default();
                        let info = StmtInfo {
                            params: super::results::params(&masks, &args, &[]),
                            masks,
                            ..StmtInfo::plain(stmt.text, stmt.classes)
                        };
                        self.pending.push_stmt(Running {
                            columns: Some(ResultColumns::undescribed(&[result_format])),
                            ..Running::new(info)
                        });
                        self.pending.push_boundary(self.names.next_id());
                        self.legs.server_w.push(&frame);
                    }
                    Decision::Refused(reply) => self.refuse_query(reply),
                    Decision::ClientGone => return Ok(false),
                }
            }
            FrontendMessage::Terminate => {
                self.legs.server_w.push(&frame);
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
                self.legs.server_w.push(&frame);
            }
            FrontendMessage::Describe { kind, name } => {
                let (gate, key) = (&*self.gate, &self.key);
                let described = if kind == b'S' {
                    let u = || unknown(gate, key, unprepared(&name));
                    Described::Statement(name.clone(), self.names.statement_id(name.clone(), u))
                } else {
                    let u = || unknown(gate, key, unbound(&name));
                    Described::Portal(name.clone(), self.names.portal_id(name.clone(), u))
                };
                self.pending.push_describe(described);
                self.legs.server_w.push(&frame);
            }
            FrontendMessage::Flush | FrontendMessage::CopyData(_) => {
                self.legs.server_w.push(&frame)
            }
        }
        Ok(true)
    }

    /// Relays one server message, masking values and recording completed
    /// statements.
    pub(crate) async fn on_server(&mut self, frame: Frame) -> Result<(), PgError> {
        // Rows of unmasked statements pass without being decoded.
        if frame.tag() == b'D' && self.pending.masking().is_none() {
            self.legs.client_w.push(&frame);
            return Ok(());
        }
        let msg = BackendMessage::decode(&frame).map_err(proto(Side::Server))?;
        let replaced = match msg {
            BackendMessage::CommandComplete { tag } => {
                let rows = BackendMessage::rows_from_tag(&tag);
                self.completed(rows).await;
                None
            }
            BackendMessage::EmptyQueryResponse | BackendMessage::PortalSuspended => {
                self.completed(None).await;
                None
            }
            BackendMessage::FunctionCallResponse(value) => {
                let masked = self.mask_call_result(value);
                self.completed(None).await;
                masked
            }
            BackendMessage::CopyInResponse(_) | BackendMessage::CopyBothResponse(_) => {
                self.copy_in = true;
                self.pending.copy_in_started();
                None
            }
            BackendMessage::CopyOutResponse(body) => {
                if body.first() == Some(&1)
                    && let Some(r) = self.pending.masking()
                {
                    // Refused before it ran; should one get here anyway,
                    // nothing of it reaches the client.
                    let rule = r.info.masks.rules().first().map(|m| m.rule.clone());
                    let msg = format!(
                        "interlock: binary COPY output cannot be masked (rule \"{}\"); closing the connection",
                        rule.unwrap_or_default()
                    );
                    self.legs.client_w.push(&fatal("42501", &msg));
                    return Err(PgError::Refused(msg));
                }
                None
            }
            BackendMessage::ErrorResponse(f) => {
                // An error ends copy-in mode.
                self.copy_in = false;
                let ours = (f.code() == Some("42601")
                    && f.get(b'M').is_some_and(|m| m.contains(INJECTED_SQL)))
                    // A refused Bind: its statement name is a secret of this session.
                    || (f.code() == Some("26000")
                        && f
                            .get(b'M')
                            .is_some_and(|m| m.contains(self.executions.refused_name())));
                let (out, undo) = self.pending.error(ours);
                self.names.undo(undo);
                match out {
                    OnError::Replace(reply) => Some(self.encoding.transcode(reply)),
                    OnError::Record(mut r) => {
                        let code = f.code().map(str::to_string);
                        let masked = super::results::mask_fields(f, &r.info.masks, &mut r.counts)
                            .map(|f| f.error_frame());
                        self.record(r, None, code).await;
                        masked
                    }
                    OnError::Forward => None,
                }
            }
            BackendMessage::NoticeResponse(f) => match self.pending.masking() {
                Some(r) => super::results::mask_fields(f, &r.info.masks, &mut r.counts)
                    .map(|f| f.notice_frame()),
                None => None,
            },
            BackendMessage::NotificationResponse {
                pid,
                channel,
                payload,
            } => self.mask_notification(pid, channel, payload).await,
            BackendMessage::ReadyForQuery { status } => {
                if let Some(mark) = self.pending.ready()
                    && status == b'I'
                {
                    self.names.transaction_ended(mark);
                }
                None
            }
            BackendMessage::ParameterStatus { name, value } if name == "client_encoding" => {
                self.encoding = ClientEncoding::from_name(&value);
                self.classified.clear();
                None
            }
            BackendMessage::ParameterStatus { name, value }
                if name == "standard_conforming_strings" =>
            {
                self.standard_strings = value != "off";
                self.classified.clear();
                None
            }
            BackendMessage::RowDescription(body) => {
                self.describe(body).await?;
                None
            }
            BackendMessage::NoData => {
                let _ = self.pending.described();
                None
            }
            BackendMessage::ParameterDescription(body) => {
                if let Some(Described::Statement(name, id)) = self.pending.describing()
                    && let Some(def) = self.names.statement_def(name, *id)
                {
                    def.param_types = parameter_types(body).map_err(proto(Side::Server))?;
                }
                None
            }
            BackendMessage::ParseComplete | BackendMessage::BindComplete => {
                self.pending.defined();
                None
            }
            BackendMessage::DataRow(cols) => self.mask_row(&cols),
            BackendMessage::CopyData(data) => self.mask_copy(&data),
            BackendMessage::Authentication(_) | BackendMessage::BackendKeyData { .. } => {
                return Err(PgError::protocol(
                    Side::Server,
                    ProtocolError::Unexpected(format!(
                        "{} after startup",
                        super::frame::tag_name(frame.tag())
                    )),
                ));
            }
            _ => None,
        };
        self.legs.client_w.push(replaced.as_ref().unwrap_or(&frame));
        Ok(())
    }
}
