//! Masking of result values: by source column (`schema.table.column` globs,
//! resolved from RowDescription through the catalog) and by value
//! detectors (email, card numbers with a Luhn check, AWS access keys, JWTs,
//! private keys, custom regexes). Values are rewritten in DataRow (and, for
//! detectors, COPY OUT data); only counts are reported.

use std::{collections::BTreeMap, sync::Arc};

use bytes::Bytes;
use regex::Regex;

use crate::gate::MaskRule;

/// What replaces each detected value.
pub(crate) const REPLACEMENT: &str = "****";

struct Detector {
    name: String,
    re: Regex,
    luhn: bool,
}

/// Where one result column comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ColumnInfo {
    /// `schema.table.column`; `None` for computed columns.
    pub(crate) name: Option<String>,
    /// Whether "****" is a valid value of its type (text-like types);
    /// other types are masked to NULL.
    pub(crate) text: bool,
}

/// A statement's result columns.
pub(crate) type Columns = Arc<Vec<ColumnInfo>>;

/// Type OIDs whose values may be replaced by text: text, varchar, bpchar, name.
pub(crate) fn is_text_type(oid: u32) -> bool {
    matches!(oid, 25 | 1043 | 1042 | 19)
}

/// The masking that applies to one statement's results.
pub(crate) struct MaskPlan {
    rule: String,
    columns: Vec<Regex>,
    detectors: Vec<Detector>,
}

/// A `schema.table.column` glob (`*` matches within a part) as a regex.
fn glob(pattern: &str) -> Result<Regex, regex::Error> {
    let parts: Vec<String> = pattern.split('*').map(regex::escape).collect();
    Regex::new(&format!("^{}$", parts.join("[^.]*")))
}

impl std::fmt::Debug for MaskPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskPlan")
            .field("rule", &self.rule)
            .finish_non_exhaustive()
    }
}

/// Why a mask rule cannot be applied (the statement is refused).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum MaskError {
    #[error("unknown detector {1:?} in rule \"{0}\"")]
    Unknown(String, String),
    #[error("bad regex in rule \"{0}\": {1}")]
    Regex(String, String),
}

fn builtin(name: &str) -> Option<(&'static str, bool)> {
    Some(match name {
        "email" => (
            r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
            false,
        ),
        "card" => (r"\b\d(?:[ -]?\d){12,18}\b", true),
        "aws_key" => (r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b", false),
        "jwt" => (
            r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+",
            false,
        ),
        "private_key" => (
            r"(?s)-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----",
            false,
        ),
        _ => return None,
    })
}

/// The Luhn checksum over the digits of `s`.
pub(crate) fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                *d
            }
        })
        .sum();
    digits.len() >= 13 && sum.is_multiple_of(10)
}

impl MaskPlan {
    /// Compiles one rule. Errors: unknown detectors, bad regexes.
    pub(crate) fn new(rule: &MaskRule) -> Result<MaskPlan, MaskError> {
        let columns = rule
            .columns
            .iter()
            .map(|c| glob(c).map_err(|e| MaskError::Regex(rule.rule.clone(), e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let mut detectors = Vec::new();
        for d in &rule.detectors {
            let (pattern, luhn) = match d.strip_prefix("regex:") {
                Some(p) => (p.to_string(), false),
                None => builtin(d)
                    .map(|(p, l)| (p.to_string(), l))
                    .ok_or_else(|| MaskError::Unknown(rule.rule.clone(), d.clone()))?,
            };
            let re = Regex::new(&pattern)
                .map_err(|e| MaskError::Regex(rule.rule.clone(), e.to_string()))?;
            detectors.push(Detector {
                name: d.clone(),
                re,
                luhn,
            });
        }
        Ok(MaskPlan {
            rule: rule.rule.clone(),
            columns,
            detectors,
        })
    }

    /// Whether the plan has column rules (and so needs column identity).
    pub(crate) fn has_columns(&self) -> bool {
        !self.columns.is_empty()
    }

    /// The deciding rule.
    pub(crate) fn rule(&self) -> &str {
        &self.rule
    }

    /// Masks one value; `None` if nothing matched (or it is not text).
    /// Adds `detector:<name>` counts.
    pub(crate) fn mask_value(
        &self,
        value: &[u8],
        counts: &mut BTreeMap<String, u64>,
    ) -> Option<Bytes> {
        let mut text = std::str::from_utf8(value).ok()?.to_string();
        let mut changed = false;
        for d in &self.detectors {
            let mut n = 0u64;
            let replaced = d.re.replace_all(&text, |c: &regex::Captures<'_>| {
                let m = c.get(0).map(|m| m.as_str()).unwrap_or("");
                if d.luhn && !luhn(m) {
                    m.to_string()
                } else {
                    n += 1;
                    REPLACEMENT.to_string()
                }
            });
            if n > 0 {
                text = replaced.into_owned();
                changed = true;
                *counts.entry(format!("detector:{}", d.name)).or_default() += n;
            }
        }
        changed.then(|| Bytes::from(text))
    }

    /// Masks a row's values; `None` if nothing changed. With column rules
    /// and unknown columns every value is masked (fail closed).
    pub(crate) fn mask_row(
        &self,
        cols: &[Option<Bytes>],
        columns: Option<&[ColumnInfo]>,
        counts: &mut BTreeMap<String, u64>,
    ) -> Option<Vec<Option<Bytes>>> {
        let mut out = cols.to_vec();
        let mut changed = false;
        for (i, v) in out.iter_mut().enumerate() {
            if v.is_none() {
                continue;
            }
            if self.has_columns() {
                let column = columns.map(|c| c.get(i));
                let hit = match column {
                    None | Some(None) => Some(("unresolved".to_string(), false)),
                    Some(Some(c)) => c
                        .name
                        .as_ref()
                        .filter(|n| self.columns.iter().any(|g| g.is_match(n)))
                        .map(|n| (n.clone(), c.text)),
                };
                if let Some((name, text)) = hit {
                    *v = text.then(|| Bytes::from_static(REPLACEMENT.as_bytes()));
                    *counts.entry(name).or_default() += 1;
                    changed = true;
                    continue;
                }
            }
            if let Some(m) = v.as_deref().and_then(|b| self.mask_value(b, counts)) {
                *v = Some(m);
                changed = true;
            }
        }
        changed.then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(detectors: &[&str]) -> MaskPlan {
        MaskPlan::new(&MaskRule {
            rule: "r".into(),
            columns: vec![],
            detectors: detectors.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap()
    }

    #[test]
    fn detectors_mask_and_count() {
        let p = plan(&[
            "email",
            "card",
            "aws_key",
            "jwt",
            "private_key",
            "regex:secret-[0-9]+",
        ]);
        let mut counts = BTreeMap::new();
        let cases = [
            ("mail bob@example.com now", "mail **** now"),
            ("card 4111 1111 1111 1111", "card ****"),
            ("key AKIAIOSFODNN7EXAMPLE", "key ****"),
            (
                "tok eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_nature",
                "tok ****",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nabc\n-----END RSA PRIVATE KEY-----",
                "****",
            ),
            ("id secret-42", "id ****"),
        ];
        for (input, want) in cases {
            assert_eq!(
                p.mask_value(input.as_bytes(), &mut counts).as_deref(),
                Some(want.as_bytes()),
                "{input}"
            );
        }
        // a 16-digit number failing Luhn is not a card
        assert_eq!(p.mask_value(b"4111 1111 1111 1112", &mut counts), None);
        assert_eq!(p.mask_value(&[0xff, 0xfe], &mut counts), None);
        assert_eq!(counts.get("detector:email"), Some(&1));
        assert_eq!(counts.get("detector:card"), Some(&1));
        assert_eq!(counts.len(), 6);
    }

    #[test]
    fn rows_keep_nulls_and_unmatched_values() {
        let p = plan(&["email"]);
        let mut counts = BTreeMap::new();
        let row = vec![
            Some(Bytes::from_static(b"1")),
            None,
            Some(Bytes::from_static(b"a@b.io")),
        ];
        let got = p.mask_row(&row, None, &mut counts).unwrap();
        assert_eq!(
            got,
            vec![
                Some(Bytes::from_static(b"1")),
                None,
                Some(Bytes::from_static(b"****"))
            ]
        );
        assert_eq!(p.mask_row(&got, None, &mut counts), None);
    }

    #[test]
    fn column_rules_use_source_columns_and_fail_closed_when_unknown() {
        let r = MaskRule {
            rule: "r".into(),
            columns: vec!["public.users.*".into()],
            detectors: vec![],
        };
        let p = MaskPlan::new(&r).unwrap();
        let cols = vec![
            ColumnInfo {
                name: Some("public.users.email".into()),
                text: true,
            },
            ColumnInfo {
                name: Some("public.users.id".into()),
                text: false,
            },
            ColumnInfo {
                name: Some("public.orders.id".into()),
                text: false,
            },
            ColumnInfo {
                name: None,
                text: true,
            },
        ];
        let b = |s: &'static str| Some(Bytes::from_static(s.as_bytes()));
        let row = vec![b("a@b.io"), b("7"), b("8"), b("x")];
        let mut counts = BTreeMap::new();
        let got = p.mask_row(&row, Some(&cols), &mut counts).unwrap();
        assert_eq!(got, vec![b("****"), None, b("8"), b("x")]);
        assert_eq!(counts.get("public.users.email"), Some(&1));
        // unknown columns: everything is masked
        let got = p.mask_row(&row, None, &mut counts).unwrap();
        assert_eq!(got, vec![None, None, None, None]);
        assert_eq!(counts.get("unresolved"), Some(&4));
    }

    #[test]
    fn bad_rules_are_errors() {
        let mut r = MaskRule {
            rule: "r".into(),
            columns: vec![],
            detectors: vec![],
        };
        r.detectors = vec!["nope".into()];
        assert!(matches!(MaskPlan::new(&r), Err(MaskError::Unknown(..))));
        r.detectors = vec!["regex:(".into()];
        assert!(matches!(MaskPlan::new(&r), Err(MaskError::Regex(..))));
        r.detectors.clear();
        r.columns = vec!["public.(".into()];
        assert!(MaskPlan::new(&r).is_ok(), "globs escape regex syntax");
    }
}
