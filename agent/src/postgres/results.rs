//! What comes back for a statement, masked before the client sees it:
//! result descriptions (resolved through the catalog), rows, COPY data,
//! function call results, error and notice texts, notifications; and the
//! records of finished statements with their (masked) parameters.

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use regex::Regex;

use super::{
    classify::Reads,
    error::PgError,
    frame::Frame,
    legs::proto,
    mask::{ColumnInfo, Format, MaskCounts, Masks, ResultColumns, Source, Touches, text_of},
    message::{BackendMessage, BindParams, ErrorFields, RowField},
    pending::{DescribeTarget, Described, Running},
    relay::Relay,
};
use crate::gate::{Record, Side};

/// Recorded parameters longer than this are cut (after masking).
const PARAM_CLIP: usize = 1024;

/// Error and notice fields that may quote data: message, detail, hint,
/// context, internal query.
const TEXT_FIELDS: [u8; 5] = [b'M', b'D', b'H', b'W', b'q'];

/// What replaces error details while column masking is active: the server
/// quotes values there (`Key (email)=(...)`, `Failing row contains (...)`).
const WITHHELD: &str = "interlock: withheld (column masking is active for this statement)";

/// Double-quoted parts of an error message (`invalid input syntax for type
/// integer: "bob@example.com"`).
static QUOTED: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r#""[^"]*""#).ok());

/// A statement's Bind parameters as recorded, through the detectors
/// (column rules do not apply to parameters): text values, and binary ones
/// of types (`types`, from Parse or the statement's ParameterDescription)
/// whose binary form is text or decodes to it; other binary values by size.
pub(super) fn params(masks: &Masks, bind: &BindParams, types: &[u32]) -> Vec<Option<String>> {
    let mut counts = masks.counters();
    bind.params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let p = p.as_ref()?;
            let format = Format::from_code(bind.param_format(i));
            let ty = types.get(i).copied().filter(|t| *t != 0);
            let Some(text) = text_of(ty, format, p) else {
                return Some(format!("<binary {} bytes>", p.len()));
            };
            let masked = masks.mask_text(&text, &mut counts);
            let shown = String::from_utf8_lossy(masked.as_deref().unwrap_or(&text)).into_owned();
            Some(clip(shown))
        })
        .collect()
}

fn clip(mut s: String) -> String {
    if s.len() <= PARAM_CLIP {
        return s;
    }
    let n = s.len();
    let mut cut = PARAM_CLIP;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s.push_str(&format!("... ({n} bytes)"));
    s
}

/// Masks an error's or notice's texts; `None` if nothing changed. With
/// column rules, quoted values in the message are redacted and details
/// withheld; detectors apply to all of them.
pub(super) fn mask_fields(
    mut f: ErrorFields,
    masks: &Masks,
    counts: &mut MaskCounts,
) -> Option<ErrorFields> {
    if masks.is_empty() {
        return None;
    }
    let columns = masks.has_columns();
    let changed = f.rewrite(|code, value| {
        if !TEXT_FIELDS.contains(&code) {
            return None;
        }
        let mut v = std::borrow::Cow::Borrowed(value);
        if columns {
            if code == b'M' {
                if let Some(re) = QUOTED.as_ref()
                    && re.is_match(&v)
                {
                    v = re.replace_all(&v, "\"****\"").into_owned().into();
                }
            } else {
                v = WITHHELD.into();
            }
        }
        if let Some(m) = masks.mask_text(v.as_bytes(), counts) {
            v = String::from_utf8_lossy(&m).into_owned().into();
        }
        (v != value).then(|| v.into_owned())
    });
    changed.then_some(f)
}

impl Relay<'_> {
    /// A RowDescription: resolves the columns of what it describes when
    /// masking applies there. A failed lookup leaves the columns unknown,
    /// which masks every value (fail closed).
    pub(super) async fn describe(&mut self, body: Bytes) -> Result<(), PgError> {
        let (masks, reads, named) = match self.pending.described() {
            None => return Ok(()),
            Some(DescribeTarget::Running(r)) => (r.info.masks.clone(), r.info.reads.clone(), None),
            Some(DescribeTarget::Named(d)) => {
                let info = match &d {
                    Described::Statement(n, id) => {
                        self.names.statement_def(n, *id).map(|s| &s.info)
                    }
                    Described::Portal(n, id) => self.names.portal_def(n, *id).map(|p| &p.info),
                };
                match info {
                    Some(i) => (i.masks.clone(), i.reads.clone(), Some(d)),
                    None => return Ok(()),
                }
            }
        };
        if masks.is_empty() {
            return Ok(());
        }
        let cols = self.columns(body, &masks, &reads).await?;
        let plan = Arc::new(masks.plan(&cols));
        match named {
            None => {
                if let Some(DescribeTarget::Running(r)) = self.pending.described() {
                    r.columns = Some(cols);
                    r.plan = Some(plan);
                }
            }
            Some(Described::Statement(n, id)) => {
                if let Some(s) = self.names.statement_def(&n, id) {
                    s.describe(cols);
                }
            }
            Some(Described::Portal(n, id)) => {
                for r in self.pending.executions_of(id) {
                    r.columns = Some(cols.clone());
                    r.plan = Some(Arc::clone(&plan));
                }
                if let Some(p) = self.names.portal_def(&n, id) {
                    p.columns = cols;
                    p.plan = Some(plan);
                }
            }
        }
        Ok(())
    }

    async fn columns(
        &mut self,
        body: Bytes,
        masks: &Masks,
        reads: &Reads,
    ) -> Result<ResultColumns, PgError> {
        let fields = RowField::parse_all(body).map_err(proto(Side::Server))?;
        let unknown = || vec![Source::Unknown; fields.len()];
        let (sources, touches) = if masks.has_columns() {
            let keys: Vec<(u32, i16)> = fields.iter().map(|f| (f.table_oid, f.attnum)).collect();
            let sources = self.catalog.resolve(&keys).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "column lookup failed; masking every column");
                unknown()
            });
            let touches = match reads {
                Reads::Any => Touches::Any,
                Reads::Named(names) => match self.catalog.reads(names).await {
                    Ok(refs) => Touches::relations(refs),
                    Err(e) => {
                        tracing::warn!(error = %e, "relation lookup failed; masking computed columns");
                        Touches::Any
                    }
                },
            };
            (sources, touches)
        } else {
            (unknown(), Touches::Any)
        };
        let cols = sources
            .into_iter()
            .zip(&fields)
            .map(|(source, f)| ColumnInfo {
                source,
                type_oid: Some(f.type_oid),
                format: Format::from_code(f.format),
            })
            .collect();
        Ok(ResultColumns::new(cols, touches))
    }

    /// A masked DataRow, or `None` to relay the original.
    pub(super) fn mask_row(&mut self, cols: &[Option<Bytes>]) -> Option<Frame> {
        let r = self.pending.masking()?;
        let plan = r.plan();
        let masked = plan.apply(&r.info.masks, cols, &mut r.counts)?;
        Some(BackendMessage::DataRow(masked).encode())
    }

    /// Masked COPY OUT data (text or csv rows; binary COPY is refused when
    /// masking applies), or `None` to relay the original.
    pub(super) fn mask_copy(&mut self, data: &[u8]) -> Option<Frame> {
        let r = self.pending.masking()?;
        let masked = r.info.masks.mask_text(data, &mut r.counts)?;
        Some(BackendMessage::CopyData(Bytes::from(masked)).encode())
    }

    /// A masked FunctionCallResponse, or `None` to relay the original.
    pub(super) fn mask_call_result(&mut self, value: Option<Bytes>) -> Option<Frame> {
        let r = self.pending.masking()?;
        let v = value?;
        let plan = r.plan();
        let masked = plan.apply(&r.info.masks, &[Some(v)], &mut r.counts)?;
        let value = masked.into_iter().next().flatten();
        Some(BackendMessage::FunctionCallResponse(value).encode())
    }

    /// A NOTIFY payload from another session, through every detector that
    /// could apply to this one; `None` to relay the original.
    pub(super) async fn mask_notification(
        &mut self,
        pid: i32,
        channel: String,
        payload: String,
    ) -> Option<Frame> {
        let masks = self.fallback();
        if !masks.has_detectors() {
            return None;
        }
        let mut counts = masks.counters();
        let masked = masks.mask_text(payload.as_bytes(), &mut counts)?;
        self.record_counts(&masks, counts).await;
        Some(
            BackendMessage::NotificationResponse {
                pid,
                channel,
                payload: String::from_utf8_lossy(&masked).into_owned(),
            }
            .encode(),
        )
    }

    pub(super) async fn completed(&mut self, rows: Option<u64>) {
        if let Some(done) = self.pending.complete() {
            self.record(done, rows, None).await;
        }
    }

    pub(super) async fn record(
        &self,
        done: Box<Running>,
        rows: Option<u64>,
        error: Option<String>,
    ) {
        let Running {
            info,
            started,
            counts,
            ..
        } = *done;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let record = Record::Statement {
            text: info.text,
            classes: info.classes,
            opaque: info.opaque,
            params: info.params,
            rows: if error.is_some() { None } else { rows },
            error,
            duration_ms,
        };
        self.gate.record(record).await;
        self.record_counts(&info.masks, counts).await;
    }

    async fn record_counts(&self, masks: &Masks, counts: MaskCounts) {
        for (rule, counts) in masks.rules().iter().zip(counts) {
            if !counts.is_empty() {
                self.gate
                    .record(Record::Masked {
                        rule: rule.rule.clone(),
                        counts: counts.into_iter().collect(),
                    })
                    .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        gate::MaskRule,
        policy::{MaskSpec, Strategy},
    };

    fn masks(columns: &[&str], detectors: &[&str]) -> Masks {
        let c: Vec<String> = columns.iter().map(|s| s.to_string()).collect();
        let d: Vec<String> = detectors.iter().map(|s| s.to_string()).collect();
        Masks::new(
            vec![MaskRule {
                rule: "r".into(),
                spec: Arc::new(MaskSpec::new(&c, &d, Strategy::Redact).unwrap()),
            }],
            None,
        )
    }

    #[test]
    fn errors_lose_quoted_values_and_details_under_column_rules() {
        let f = ErrorFields::new(
            "ERROR",
            "22P02",
            "invalid input syntax for type integer: \"bob@example.com\"",
        )
        .with(b'D', "Key (email)=(bob@example.com) already exists.")
        .with(b'n', "users_email_key");
        let m = masks(&["public.users.email"], &[]);
        let mut counts = m.counters();
        let got = mask_fields(f.clone(), &m, &mut counts).unwrap();
        assert_eq!(
            got.get(b'M'),
            Some("invalid input syntax for type integer: \"****\"")
        );
        assert_eq!(got.get(b'D'), Some(WITHHELD));
        assert_eq!(got.get(b'n'), Some("users_email_key"));
        // detectors alone mask only what they find
        let d = masks(&[], &["email"]);
        let got = mask_fields(f, &d, &mut d.counters()).unwrap();
        assert_eq!(got.get(b'D'), Some("Key (email)=(****) already exists."));
        let plain = ErrorFields::new("ERROR", "42P01", "relation \"t\" does not exist");
        assert!(mask_fields(plain.clone(), &d, &mut d.counters()).is_none());
        assert!(mask_fields(plain, &Masks::default(), &mut vec![]).is_none());
    }

    #[test]
    fn parameters_are_recorded_through_detectors() {
        let bind = BindParams {
            param_formats: vec![0, 0, 1],
            params: vec![
                Some(Bytes::from_static(b"mail bob@example.com")),
                None,
                Some(Bytes::from_static(&[0, 0, 0, 1])),
            ],
            result_formats: vec![],
        };
        let m = masks(&["public.users.email"], &["email"]);
        assert_eq!(
            params(&m, &bind, &[]),
            vec![
                Some("mail ****".to_string()),
                None,
                Some("<binary 4 bytes>".to_string())
            ]
        );
        // binary parameters of known types: text as is, integers decoded
        let binary = BindParams {
            param_formats: vec![1],
            params: vec![
                Some(Bytes::from_static(b"to bob@example.com")),
                Some(Bytes::from_static(&[0, 0, 0, 5])),
                Some(Bytes::from_static(&[1, 2, 3])),
            ],
            result_formats: vec![],
        };
        assert_eq!(
            params(&m, &binary, &[25, 23, 17]),
            vec![
                Some("to ****".to_string()),
                Some("5".to_string()),
                Some("<binary 3 bytes>".to_string())
            ]
        );
        let long = BindParams {
            param_formats: vec![],
            params: vec![Some(Bytes::from("é".repeat(600)))],
            result_formats: vec![],
        };
        let got = params(&Masks::default(), &long, &[]);
        let p = got[0].as_deref().unwrap();
        assert!(p.ends_with("... (1200 bytes)") && p.len() < 1100, "{p}");
    }
}
