//! What a `mask` rule masks and how, compiled once when the policy loads:
//! `schema.table.column` globs, value detectors (built-in patterns or
//! custom regexes) and the strategy that replaces a masked value. Sessions
//! share the compiled spec through an `Arc`; nothing here runs per row.

use std::ops::Range;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// How a masked value is replaced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "strategy", rename_all = "snake_case")]
pub enum Strategy {
    /// `****`.
    #[default]
    Redact,
    /// The last `keep_last` characters kept, every other one replaced by
    /// `*` (the value keeps its length).
    Partial { keep_last: usize },
    /// `h:` and 16 hex digits of HMAC-SHA256 under the host's masking key:
    /// equal values stay equal (joins work) but cannot be looked up in a
    /// dictionary without the key.
    Hash,
}

/// One `schema.table.column` glob (`*` matches within a part).
#[derive(Clone, Debug)]
pub struct ColumnGlob {
    text: String,
    full: Regex,
    schema: Regex,
    table: Regex,
    column: Regex,
}

impl ColumnGlob {
    fn new(text: &str) -> Result<ColumnGlob, String> {
        let parts: Vec<&str> = text.split('.').collect();
        let [schema, table, column] = parts.as_slice() else {
            return Err(format!(
                "column `{text}`: expected schema.table.column (globs allowed, e.g. `*.users.email`)"
            ));
        };
        Ok(ColumnGlob {
            text: text.to_string(),
            full: glob(text)?,
            schema: glob(schema)?,
            table: glob(table)?,
            column: glob(column)?,
        })
    }

    /// Whether the column `schema.table.column` is covered.
    pub fn matches(&self, column: &str) -> bool {
        self.full.is_match(column)
    }

    /// Whether the glob names a column of the relation `table` in `schema`
    /// (`None`: a name written without a schema, which could be any).
    pub fn covers_relation(&self, schema: Option<&str>, table: &str) -> bool {
        self.table.is_match(table) && schema.is_none_or(|s| self.schema.is_match(s))
    }

    /// Whether a column named `column` (a reference as written) of the
    /// relation `table` in `schema` may be covered.
    pub fn covers_column(&self, schema: Option<&str>, table: &str, column: &str) -> bool {
        self.covers_relation(schema, table) && self.column.is_match(column)
    }

    /// Whether the column part covers a column named `column`, in any table.
    pub fn covers_column_name(&self, column: &str) -> bool {
        self.column.is_match(column)
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A glob (`*` within a dot-separated part) as an anchored regex.
fn glob(pattern: &str) -> Result<Regex, String> {
    let parts: Vec<String> = pattern.split('*').map(regex::escape).collect();
    Regex::new(&format!("^{}$", parts.join("[^.]*")))
        .map_err(|e| format!("column `{pattern}`: {e}"))
}

/// A value detector.
#[derive(Clone, Debug)]
pub struct Detector {
    name: String,
    re: Regex,
    luhn: bool,
}

/// Built-in detector names.
pub const DETECTORS: [&str; 5] = ["email", "card", "aws_key", "jwt", "private_key"];

fn builtin(name: &str) -> Option<(&'static str, bool)> {
    Some(match name {
        // Letters of any script: addresses may be internationalised (RFC 6531).
        "email" => (
            r"[\p{L}\p{N}._%+-]+@[\p{L}\p{N}-]+(?:\.[\p{L}\p{N}-]+)*\.\p{L}{2,}",
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

impl Detector {
    fn new(name: &str) -> Result<Detector, String> {
        let (pattern, luhn) = match name.strip_prefix("regex:") {
            Some(p) => (p, false),
            None => builtin(name).ok_or_else(|| {
                format!(
                    "unknown detector `{name}`: expected one of {}, or `regex:<pattern>`",
                    DETECTORS.join(", ")
                )
            })?,
        };
        let re =
            Regex::new(pattern).map_err(|e| format!("detector `{name}`: invalid regex: {e}"))?;
        Ok(Detector {
            name: name.to_string(),
            re,
            luhn,
        })
    }

    /// The detector as written (`email`, `regex:...`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Byte ranges of the values found in `text`, in order.
    pub fn find(&self, text: &str) -> Vec<Range<usize>> {
        self.re
            .find_iter(text)
            .filter(|m| !self.luhn || luhn(m.as_str()))
            .map(|m| m.range())
            .collect()
    }
}

/// The Luhn checksum over the digits of `s` (at least 13 of them).
pub fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| match (i % 2 == 1, d * 2) {
            (true, dd) if dd > 9 => dd - 9,
            (true, dd) => dd,
            (false, _) => *d,
        })
        .sum();
    digits.len() >= 13 && sum.is_multiple_of(10)
}

/// What a `mask` rule masks, compiled.
#[derive(Clone, Debug)]
pub struct MaskSpec {
    columns: Vec<ColumnGlob>,
    detectors: Vec<Detector>,
    strategy: Strategy,
}

impl MaskSpec {
    /// Compiles a spec. Errors (for the policy file's message): a column
    /// that is not `schema.table.column`, an unknown detector, a bad regex.
    pub fn new(
        columns: &[String],
        detectors: &[String],
        strategy: Strategy,
    ) -> Result<MaskSpec, String> {
        Ok(MaskSpec {
            columns: columns
                .iter()
                .map(|c| ColumnGlob::new(c))
                .collect::<Result<_, _>>()?,
            detectors: detectors
                .iter()
                .map(|d| Detector::new(d))
                .collect::<Result<_, _>>()?,
            strategy,
        })
    }

    /// Column globs.
    pub fn columns(&self) -> &[ColumnGlob] {
        &self.columns
    }

    /// Value detectors.
    pub fn detectors(&self) -> &[Detector] {
        &self.detectors
    }

    /// How masked values are replaced.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Whether nothing would be masked.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty() && self.detectors.is_empty()
    }
}

impl PartialEq for MaskSpec {
    fn eq(&self, other: &MaskSpec) -> bool {
        let written = |m: &MaskSpec| {
            (
                m.columns.iter().map(|c| c.text.clone()).collect::<Vec<_>>(),
                m.detectors
                    .iter()
                    .map(|d| d.name.clone())
                    .collect::<Vec<_>>(),
            )
        };
        self.strategy == other.strategy && written(self) == written(other)
    }
}

impl Eq for MaskSpec {}

impl Serialize for MaskSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            columns: Vec<&'a str>,
            detectors: Vec<&'a str>,
            #[serde(flatten)]
            strategy: Strategy,
        }
        Shown {
            columns: self.columns.iter().map(ColumnGlob::as_str).collect(),
            detectors: self.detectors.iter().map(Detector::name).collect(),
            strategy: self.strategy,
        }
        .serialize(s)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum StrategyName {
    Redact,
    Partial,
    Hash,
}

impl<'de> Deserialize<'de> for ColumnGlob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ColumnGlob::new(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Detector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Detector::new(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A `mask:` mapping as written (each glob and detector compiled where it
/// is written, so errors point at it).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMaskSpec {
    #[serde(default)]
    columns: Vec<ColumnGlob>,
    #[serde(default)]
    detectors: Vec<Detector>,
    #[serde(default)]
    strategy: Option<StrategyName>,
    #[serde(default)]
    keep_last: Option<usize>,
}

impl<'de> Deserialize<'de> for MaskSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawMaskSpec::deserialize(d)?;
        let strategy = match (raw.strategy, raw.keep_last) {
            (Some(StrategyName::Partial), Some(keep_last)) => Strategy::Partial { keep_last },
            (Some(StrategyName::Partial), None) => {
                return Err(serde::de::Error::custom(
                    "strategy partial needs `keep_last: N` (how many characters stay visible at the end)",
                ));
            }
            (_, Some(_)) => {
                return Err(serde::de::Error::custom(
                    "`keep_last` is only meaningful with `strategy: partial`",
                ));
            }
            (None | Some(StrategyName::Redact), None) => Strategy::Redact,
            (Some(StrategyName::Hash), None) => Strategy::Hash,
        };
        Ok(MaskSpec {
            columns: raw.columns,
            detectors: raw.detectors,
            strategy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detectors_find_values() {
        let spec = MaskSpec::new(
            &[],
            &[
                "email".into(),
                "card".into(),
                "aws_key".into(),
                "jwt".into(),
                "private_key".into(),
                "regex:secret-[0-9]+".into(),
            ],
            Strategy::Redact,
        )
        .unwrap();
        let found = |i: usize, text: &str| spec.detectors()[i].find(text);
        assert_eq!(found(0, "mail bob@example.com now"), vec![5..20]);
        assert_eq!(
            found(0, "josé@exämple.de"),
            vec![0.."josé@exämple.de".len()]
        );
        assert_eq!(found(1, "card 4111 1111 1111 1111"), vec![5..24]);
        // a 16-digit number failing Luhn is not a card
        assert!(found(1, "4111 1111 1111 1112").is_empty());
        assert_eq!(found(2, "key AKIAIOSFODNN7EXAMPLE"), vec![4..24]);
        assert_eq!(
            found(3, "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig").len(),
            1
        );
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nabc\n-----END RSA PRIVATE KEY-----";
        assert_eq!(found(4, pem), vec![0..pem.len()]);
        assert_eq!(found(5, "id secret-42"), vec![3..12]);
    }

    #[test]
    fn column_globs_match_columns_and_relations() {
        let spec = MaskSpec::new(
            &["public.users.email".into(), "billing.*.card_*".into()],
            &[],
            Strategy::Hash,
        )
        .unwrap();
        let [users, billing] = spec.columns() else {
            panic!("two globs");
        };
        assert!(users.matches("public.users.email"));
        assert!(!users.matches("public.users.id"));
        assert!(users.covers_relation(Some("public"), "users"));
        assert!(users.covers_relation(None, "users"));
        assert!(!users.covers_relation(Some("other"), "users"));
        assert!(billing.matches("billing.cards.card_number"));
        assert!(billing.covers_relation(None, "anything"));
        assert!(!billing.matches("billing.cards.holder"));
        // regex syntax in a glob is literal
        assert!(MaskSpec::new(&["a.(.b".into()], &[], Strategy::Redact).is_ok());
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let err = |c: &[&str], d: &[&str]| {
            let c: Vec<String> = c.iter().map(|s| s.to_string()).collect();
            let d: Vec<String> = d.iter().map(|s| s.to_string()).collect();
            MaskSpec::new(&c, &d, Strategy::Redact).unwrap_err()
        };
        assert!(err(&["users.email"], &[]).contains("expected schema.table.column"));
        assert!(err(&[], &["ssn"]).contains("unknown detector `ssn`"));
        assert!(err(&[], &["regex:("]).contains("invalid regex"));
    }
}
