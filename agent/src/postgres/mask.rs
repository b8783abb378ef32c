//! Masking of result values by value detectors (email, card numbers with a
//! Luhn check, AWS access keys, JWTs, private keys, custom regexes). Values
//! are rewritten in DataRow and COPY OUT data; only counts are reported.
//! Column rules (`schema.table.column`) need a catalog lookup that is not
//! built yet, so statements they apply to are refused (fail closed).

use std::collections::BTreeMap;

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

/// The masking that applies to one statement's results.
pub(crate) struct MaskPlan {
    rule: String,
    detectors: Vec<Detector>,
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
    #[error("column masking (rule \"{0}\") is not supported yet")]
    Columns(String),
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
    /// Compiles one rule. Errors: column rules, unknown detectors, bad regexes.
    pub(crate) fn new(rule: &MaskRule) -> Result<MaskPlan, MaskError> {
        if !rule.columns.is_empty() {
            return Err(MaskError::Columns(rule.rule.clone()));
        }
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
            detectors,
        })
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

    /// Masks a row's values; `None` if nothing changed.
    pub(crate) fn mask_row(
        &self,
        cols: &[Option<Bytes>],
        counts: &mut BTreeMap<String, u64>,
    ) -> Option<Vec<Option<Bytes>>> {
        let mut out = cols.to_vec();
        let mut changed = false;
        for v in out.iter_mut() {
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
        let got = p.mask_row(&row, &mut counts).unwrap();
        assert_eq!(
            got,
            vec![
                Some(Bytes::from_static(b"1")),
                None,
                Some(Bytes::from_static(b"****"))
            ]
        );
        assert_eq!(p.mask_row(&got, &mut counts), None);
    }

    #[test]
    fn unsupported_rules_fail_closed() {
        let mut r = MaskRule {
            rule: "r".into(),
            columns: vec!["public.users.email".into()],
            detectors: vec![],
        };
        assert_eq!(
            MaskPlan::new(&r).unwrap_err(),
            MaskError::Columns("r".into())
        );
        r.columns.clear();
        r.detectors = vec!["nope".into()];
        assert!(matches!(MaskPlan::new(&r), Err(MaskError::Unknown(..))));
        r.detectors = vec!["regex:(".into()];
        assert!(matches!(MaskPlan::new(&r), Err(MaskError::Regex(..))));
    }
}
