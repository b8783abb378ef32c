//! The masking of one statement's results: its rules, and per result set a
//! plan saying for each column whether values pass, are masked whole (a
//! column rule) or are scanned by detectors. Plans are built once per
//! RowDescription (or Bind), not per row.

use std::{collections::BTreeMap, sync::Arc};

use bytes::Bytes;

use super::{
    MaskKey,
    columns::{ColumnInfo, ResultColumns, Source},
    value::{Repr, Scan, mask_text, replace},
};
use crate::gate::{MaskRule, Strategy};

/// Values masked per rule (aligned with [`Masks::rules`]): name -> count.
pub(crate) type MaskCounts = Vec<BTreeMap<String, u64>>;

/// Why masking cannot be applied (the statement is refused instead).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum MaskError {
    #[error("rule \"{0}\" masks by hash but this proxy has no masking key")]
    NoKey(String),
}

/// The mask rules for one statement, with the key for `hash`. Cloned for
/// every execution of a prepared statement, so the rules are shared.
#[derive(Clone, Debug, Default)]
pub(crate) struct Masks {
    rules: Arc<[MaskRule]>,
    key: Option<Arc<MaskKey>>,
}

impl Masks {
    /// Masking by `rules`; `key` for the hash strategy.
    pub(crate) fn new(rules: Vec<MaskRule>, key: Option<Arc<MaskKey>>) -> Masks {
        Masks {
            rules: rules.into(),
            key,
        }
    }

    /// Errors when a rule cannot be applied: hash without a key (without
    /// one, hashed values would fall back to `****`).
    pub(crate) fn check(&self) -> Result<(), MaskError> {
        match self.key {
            Some(_) => Ok(()),
            None => match self
                .rules
                .iter()
                .find(|r| r.spec.strategy() == Strategy::Hash)
            {
                Some(r) => Err(MaskError::NoKey(r.rule.clone())),
                None => Ok(()),
            },
        }
    }

    /// The rules, in policy order.
    pub(crate) fn rules(&self) -> &[MaskRule] {
        &self.rules
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any rule names columns (so results need column identity).
    pub(crate) fn has_columns(&self) -> bool {
        self.rules.iter().any(|r| !r.spec.columns().is_empty())
    }

    /// Whether any rule has value detectors.
    pub(crate) fn has_detectors(&self) -> bool {
        self.rules.iter().any(|r| !r.spec.detectors().is_empty())
    }

    /// Fresh counters, one per rule.
    pub(crate) fn counters(&self) -> MaskCounts {
        vec![BTreeMap::new(); self.rules.len()]
    }

    /// These rules and those of `other` not already among them.
    pub(crate) fn union(mut self, other: &Masks) -> Masks {
        let missing: Vec<&MaskRule> = other
            .rules
            .iter()
            .filter(|r| !self.rules.iter().any(|m| m.rule == r.rule))
            .collect();
        if !missing.is_empty() {
            let mut rules = self.rules.to_vec();
            rules.extend(missing.into_iter().cloned());
            self.rules = rules.into();
        }
        if self.key.is_none() {
            self.key.clone_from(&other.key);
        }
        self
    }

    fn scans(&self) -> impl Iterator<Item = Scan<'_>> {
        self.rules.iter().enumerate().flat_map(|(rule, r)| {
            r.spec.detectors().iter().map(move |detector| Scan {
                rule,
                detector,
                strategy: r.spec.strategy(),
            })
        })
    }

    /// Applies the detectors to free text (parameters, notices,
    /// notifications, COPY rows); `None` if nothing was found.
    pub(crate) fn mask_text(&self, value: &[u8], counts: &mut MaskCounts) -> Option<Vec<u8>> {
        mask_text(value, self.scans(), self.key.as_deref(), counts)
    }

    /// The plan for a result set with these columns.
    pub(crate) fn plan(&self, cols: &ResultColumns) -> RowPlan {
        let actions = cols
            .columns()
            .iter()
            .map(|c| self.action(c, cols))
            .collect();
        RowPlan {
            actions,
            unknown: self.action(cols.rest(), cols),
        }
    }

    fn action(&self, col: &ColumnInfo, cols: &ResultColumns) -> Action {
        let repr = col.repr();
        let whole = self.rules.iter().enumerate().find_map(|(i, r)| {
            let globs = r.spec.columns();
            if globs.is_empty() {
                return None;
            }
            let key = match &col.source {
                Source::Column { name, reads } => {
                    let hit = super::columns::holds_sample_values(name)
                        || globs.iter().any(|g| {
                            g.matches(name) || reads.iter().any(|b| b.column_covered_by(g))
                        });
                    hit.then(|| name.clone())
                }
                Source::Computed => cols
                    .touches()
                    .covered_by(globs)
                    .then(|| "computed".to_string()),
                Source::Unknown => Some("unresolved".to_string()),
            }?;
            Some((i, key))
        });
        match whole {
            Some((rule, key)) => Action::Whole {
                rule,
                key,
                whole: matches!(repr, Repr::Text { whole: true }),
            },
            None if !self.has_detectors() => Action::Pass,
            None => Action::Scan(repr),
        }
    }
}

/// What happens to one column's values.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Action {
    Pass,
    /// A column rule applies: the strategy's output when it is a valid
    /// value of the type (`whole`), else NULL; counted under `key`.
    Whole {
        rule: usize,
        key: String,
        whole: bool,
    },
    /// Detectors apply, as the representation allows.
    Scan(Repr),
}

/// The masking of every column of one result set.
#[derive(Clone, Debug)]
pub(crate) struct RowPlan {
    actions: Vec<Action>,
    /// For values past the described columns (a mismatched description).
    unknown: Action,
}

impl RowPlan {
    /// Masks one DataRow; `None` if nothing changed.
    pub(crate) fn apply(
        &self,
        masks: &Masks,
        row: &[Option<Bytes>],
        counts: &mut MaskCounts,
    ) -> Option<Vec<Option<Bytes>>> {
        let mut out: Option<Vec<Option<Bytes>>> = None;
        for (i, v) in row.iter().enumerate() {
            let Some(v) = v else { continue };
            let action = self.actions.get(i).unwrap_or(&self.unknown);
            if let Some(masked) = apply(action, masks, v, counts) {
                let o = out.get_or_insert_with(|| row.to_vec());
                if let Some(slot) = o.get_mut(i) {
                    *slot = masked;
                }
            }
        }
        out
    }
}

fn count(counts: &mut MaskCounts, rule: usize, key: &str) {
    if let Some(c) = counts.get_mut(rule) {
        *c.entry(key.to_string()).or_default() += 1;
    }
}

/// The first rule with detectors, for values NULLed because they cannot be scanned.
fn scanning_rule(masks: &Masks) -> usize {
    masks
        .rules
        .iter()
        .position(|r| !r.spec.detectors().is_empty())
        .unwrap_or(0)
}

/// The replacement for one value (`Some(None)`: NULL); `None`: unchanged.
fn apply(
    action: &Action,
    masks: &Masks,
    v: &Bytes,
    counts: &mut MaskCounts,
) -> Option<Option<Bytes>> {
    match action {
        Action::Pass => None,
        Action::Whole { rule, key, whole } => {
            count(counts, *rule, key);
            let strategy = masks.rules.get(*rule).map(|r| r.spec.strategy())?;
            Some(whole.then(|| Bytes::from(replace(strategy, v, masks.key.as_deref()))))
        }
        Action::Scan(Repr::Text { .. }) => masks.mask_text(v, counts).map(|m| Some(Bytes::from(m))),
        Action::Scan(Repr::TextOrNull) => masks.mask_text(v, counts).map(|_| None),
        Action::Scan(Repr::Jsonb) => {
            let (version, text) = v.split_first()?;
            let masked = masks.mask_text(text, counts)?;
            let mut out = Vec::with_capacity(masked.len() + 1);
            out.push(*version);
            out.extend(masked);
            Some(Some(Bytes::from(out)))
        }
        Action::Scan(Repr::Decoded(d)) => match d.text(v) {
            // Found something: a replacement cannot be encoded, so NULL.
            Some(text) => masks.mask_text(text.as_bytes(), counts).map(|_| None),
            None => {
                count(counts, scanning_rule(masks), "unscannable");
                Some(None)
            }
        },
        Action::Scan(Repr::Inert) => None,
        Action::Scan(Repr::Opaque) => {
            count(counts, scanning_rule(masks), "unscannable");
            Some(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        policy::MaskSpec,
        postgres::mask::{
            columns::{BaseRef, Touches},
            value::Format,
        },
    };

    fn rule(name: &str, columns: &[&str], detectors: &[&str], strategy: Strategy) -> MaskRule {
        let c: Vec<String> = columns.iter().map(|s| s.to_string()).collect();
        let d: Vec<String> = detectors.iter().map(|s| s.to_string()).collect();
        MaskRule {
            rule: name.into(),
            spec: Arc::new(MaskSpec::new(&c, &d, strategy).unwrap()),
        }
    }

    fn col(source: Source, oid: u32, format: Format) -> ColumnInfo {
        ColumnInfo {
            source,
            type_oid: Some(oid),
            format,
        }
    }

    fn named(n: &str) -> Source {
        Source::Column {
            name: n.into(),
            reads: Arc::new([]),
        }
    }

    fn b(s: &str) -> Option<Bytes> {
        Some(Bytes::from(s.to_string()))
    }

    #[test]
    fn column_rules_mask_sources_computed_columns_and_unknowns() {
        let masks = Masks::new(
            vec![rule(
                "cols",
                &["public.users.email", "public.users.id"],
                &[],
                Strategy::Redact,
            )],
            None,
        );
        let view_col = Source::Column {
            name: "public.v.contact".into(),
            reads: Arc::new([BaseRef::column("public", "users", "email")]),
        };
        let cols = ResultColumns::new(
            vec![
                col(named("public.users.email"), 25, Format::Text),
                col(named("public.users.id"), 23, Format::Text),
                col(named("public.orders.id"), 23, Format::Text),
                col(Source::Computed, 25, Format::Text),
                col(view_col, 25, Format::Binary),
                ColumnInfo::unknown(),
            ],
            Touches::relations(vec![BaseRef::relation("public", "users")]),
        );
        let plan = masks.plan(&cols);
        let row = vec![b("a@b.io"), b("7"), b("8"), b("lower"), b("v"), b("?")];
        let mut counts = masks.counters();
        let got = plan.apply(&masks, &row, &mut counts).unwrap();
        assert_eq!(
            got,
            vec![b("****"), None, b("8"), b("****"), b("****"), None]
        );
        assert_eq!(counts[0].get("public.users.email"), Some(&1));
        assert_eq!(counts[0].get("computed"), Some(&1));
        assert_eq!(counts[0].get("public.v.contact"), Some(&1));
        assert_eq!(counts[0].get("unresolved"), Some(&1));
        // a computed column of a statement reading only other tables passes
        let other = ResultColumns::new(
            vec![col(Source::Computed, 25, Format::Text)],
            Touches::relations(vec![BaseRef::relation("public", "orders")]),
        );
        assert_eq!(
            masks.plan(&other).apply(&masks, &[b("x")], &mut counts),
            None
        );
        // ... unless the statement's reads are unknown
        let any = ResultColumns::new(vec![col(Source::Computed, 25, Format::Text)], Touches::Any);
        assert_eq!(
            masks.plan(&any).apply(&masks, &[b("x")], &mut counts),
            Some(vec![b("****")])
        );
    }

    #[test]
    fn strategies_apply_to_columns_and_detector_matches() {
        let key = Arc::new(MaskKey::from_bytes([3; 32]));
        let masks = Masks::new(
            vec![
                rule(
                    "part",
                    &["public.users.card"],
                    &[],
                    Strategy::Partial { keep_last: 4 },
                ),
                rule("hash", &["public.users.email"], &["email"], Strategy::Hash),
            ],
            Some(key.clone()),
        );
        let cols = ResultColumns::new(
            vec![
                col(named("public.users.card"), 25, Format::Text),
                col(named("public.users.email"), 1043, Format::Binary),
                col(named("public.users.note"), 25, Format::Text),
                col(named("public.users.age"), 23, Format::Text),
            ],
            Touches::Any,
        );
        let row = vec![
            b("4111111111111111"),
            b("bob@x.io"),
            b("mail eve@x.io"),
            b("41"),
        ];
        let mut counts = masks.counters();
        let got = masks.plan(&cols).apply(&masks, &row, &mut counts).unwrap();
        assert_eq!(got[0], b("************1111"));
        assert_eq!(got[1], b(&key.hash(b"bob@x.io")));
        assert_eq!(got[2], b(&format!("mail {}", key.hash(b"eve@x.io"))));
        assert_eq!(got[3], b("41"));
        // a partial rule on a non-text column gives NULL
        let int = ResultColumns::new(
            vec![col(named("public.users.card"), 20, Format::Text)],
            Touches::Any,
        );
        assert_eq!(
            masks
                .plan(&int)
                .apply(&masks, &[b("4111111111111111")], &mut counts),
            Some(vec![None])
        );
        assert!(matches!(
            Masks::new(vec![rule("h", &[], &["email"], Strategy::Hash)], None).check(),
            Err(MaskError::NoKey(r)) if r == "h"
        ));
        assert!(masks.check().is_ok());
    }

    #[test]
    fn binary_values_are_scanned_decoded_passed_or_nulled() {
        let masks = Masks::new(
            vec![rule("d", &[], &["email", "card"], Strategy::Redact)],
            None,
        );
        let cols = ResultColumns::new(
            vec![
                col(named("public.t.a"), 25, Format::Binary),
                col(named("public.t.b"), 3802, Format::Binary),
                col(named("public.t.c"), 20, Format::Binary),
                col(named("public.t.d"), 20, Format::Binary),
                col(named("public.t.e"), 1184, Format::Binary),
                col(named("public.t.f"), 17, Format::Binary),
                col(named("public.t.g"), 1009, Format::Binary),
            ],
            Touches::Any,
        );
        let card = Bytes::from(4111111111111111i64.to_be_bytes().to_vec());
        let small = Bytes::from(42i64.to_be_bytes().to_vec());
        let mut jsonb = vec![1u8];
        jsonb.extend_from_slice(br#"{"m": "bob@x.io"}"#);
        let row = vec![
            b("bob@x.io"),
            Some(Bytes::from(jsonb)),
            Some(card),
            Some(small.clone()),
            Some(Bytes::from_static(&[0; 8])),
            Some(Bytes::from_static(b"bob@x.io")),
            Some(Bytes::from_static(&[0; 12])),
        ];
        let mut counts = masks.counters();
        let got = masks.plan(&cols).apply(&masks, &row, &mut counts).unwrap();
        let mut want_jsonb = vec![1u8];
        want_jsonb.extend_from_slice(br#"{"m": "****"}"#);
        assert_eq!(
            got,
            vec![
                b("****"),
                Some(Bytes::from(want_jsonb)),
                None,
                Some(small),
                Some(Bytes::from_static(&[0; 8])),
                None,
                None
            ]
        );
        assert_eq!(counts[0].get("unscannable"), Some(&2));
        assert_eq!(counts[0].get("detector:card"), Some(&1));
        // without any rule nothing is touched
        let none = Masks::default();
        assert_eq!(
            none.plan(&cols).apply(&none, &row, &mut none.counters()),
            None
        );
    }
}
