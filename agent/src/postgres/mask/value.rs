//! One value at a time: detectors over a value's text, strategies that
//! replace what was found, and how a result column's type and format
//! decide what can be scanned or replaced at all.

use std::borrow::Cow;

use crate::policy::{Detector, Strategy};

use super::{MaskKey, binary};

/// What replaces a value under `redact`.
pub(crate) const REDACTED: &str = "****";

/// The text detectors scan. UTF-8 is scanned as is; anything else (a
/// LATIN1 client, bytes in a text column) is scanned with every non-ASCII
/// byte read as a letter, so byte offsets stay the same and an address
/// like `josé@example.com` is still found (and masked in its own encoding).
pub(crate) fn scannable(value: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(value) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(
            value
                .iter()
                .map(|b| if b.is_ascii() { char::from(*b) } else { 'a' })
                .collect(),
        ),
    }
}

/// The replacement for `value` under `strategy`. The hash strategy needs
/// `key` (a statement masked by hash without one is refused before it runs).
pub(crate) fn replace(strategy: Strategy, value: &[u8], key: Option<&MaskKey>) -> Vec<u8> {
    match strategy {
        Strategy::Redact => REDACTED.as_bytes().to_vec(),
        Strategy::Hash => match key {
            Some(k) => k.hash(value).into_bytes(),
            None => REDACTED.as_bytes().to_vec(),
        },
        Strategy::Partial { keep_last } => match std::str::from_utf8(value) {
            Ok(s) => {
                let n = s.chars().count();
                s.chars()
                    .enumerate()
                    .map(|(i, c)| if i + keep_last >= n { c } else { '*' })
                    .collect::<String>()
                    .into_bytes()
            }
            Err(_) => {
                let n = value.len();
                value
                    .iter()
                    .enumerate()
                    .map(|(i, b)| if i + keep_last >= n { *b } else { b'*' })
                    .collect()
            }
        },
    }
}

/// A detector with the strategy and index of the rule it belongs to.
pub(crate) struct Scan<'a> {
    pub(crate) rule: usize,
    pub(crate) detector: &'a Detector,
    pub(crate) strategy: Strategy,
}

/// Replaces everything the detectors find in `value`, adding
/// `detector:<name>` counts to `counts[rule]`; `None` if nothing was found.
pub(crate) fn mask_text<'a>(
    value: &[u8],
    scans: impl IntoIterator<Item = Scan<'a>>,
    key: Option<&MaskKey>,
    counts: &mut [std::collections::BTreeMap<String, u64>],
) -> Option<Vec<u8>> {
    let mut cur: Cow<'_, [u8]> = Cow::Borrowed(value);
    let mut changed = false;
    for s in scans {
        let found = s.detector.find(&scannable(&cur));
        if found.is_empty() {
            continue;
        }
        let mut out = Vec::with_capacity(cur.len());
        let mut last = 0;
        for r in &found {
            out.extend_from_slice(cur.get(last..r.start).unwrap_or_default());
            let hit = cur.get(r.clone()).unwrap_or_default();
            out.extend_from_slice(&replace(s.strategy, hit, key));
            last = r.end;
        }
        out.extend_from_slice(cur.get(last..).unwrap_or_default());
        if let Some(c) = counts.get_mut(s.rule) {
            *c.entry(format!("detector:{}", s.detector.name()))
                .or_default() += found.len() as u64;
        }
        cur = Cow::Owned(out);
        changed = true;
    }
    changed.then(|| cur.into_owned())
}

/// How a result column's values are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Text,
    Binary,
}

impl Format {
    /// From a RowDescription or Bind format code (anything but 1 is text,
    /// as the server only sends 0 and 1).
    pub(crate) fn from_code(code: i16) -> Format {
        if code == 1 {
            Format::Binary
        } else {
            Format::Text
        }
    }
}

/// What a value's bytes are, for masking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Repr {
    /// The bytes are the value's text (text format, or a text-like type in
    /// binary). `whole` tells whether a strategy's output is a valid value
    /// of the type (text, varchar, bpchar, name); if not, a value masked
    /// whole becomes NULL.
    Text { whole: bool },
    /// The text form of a type a replacement would not fit (a number, a
    /// uuid, a date): NULL if anything is found.
    TextOrNull,
    /// Binary jsonb: a version byte, then JSON text.
    Jsonb,
    /// Binary integers, numeric, uuid, bool: decoded to text to be scanned;
    /// NULL if anything is found (a replacement could not be encoded).
    Decoded(binary::Decoder),
    /// Binary floats, dates and times: nothing a detector looks for fits.
    Inert,
    /// Binary of any other type (arrays, records, bytea, unknown), and
    /// bytea in text (hex hides the bytes): NULL whenever masking applies.
    Opaque,
}

/// Types whose values may be replaced by a strategy's text.
fn replaceable(oid: u32) -> bool {
    matches!(oid, 25 | 1043 | 1042 | 19)
}

impl Repr {
    /// The representation of a column of type `oid` (`None`: unknown) in `format`.
    pub(crate) fn of(oid: Option<u32>, format: Format) -> Repr {
        match (format, oid) {
            (Format::Text, Some(17)) => Repr::Opaque,
            (Format::Text, Some(oid)) if replaceable(oid) => Repr::Text { whole: true },
            (Format::Text, Some(oid))
                if binary::Decoder::of(oid).is_some() || binary::inert(oid) =>
            {
                Repr::TextOrNull
            }
            // Arrays, records, json, xml, types interlock does not know:
            // text with a value replaced inside stays valid.
            (Format::Text, _) => Repr::Text { whole: false },
            (Format::Binary, Some(oid)) if replaceable(oid) => Repr::Text { whole: true },
            // "char", json, xml, unknown (literals) are sent as their text.
            (Format::Binary, Some(18 | 114 | 142 | 705)) => Repr::Text { whole: false },
            (Format::Binary, Some(3802)) => Repr::Jsonb,
            (Format::Binary, Some(oid)) => match binary::Decoder::of(oid) {
                Some(d) => Repr::Decoded(d),
                None if binary::inert(oid) => Repr::Inert,
                None => Repr::Opaque,
            },
            (Format::Binary, None) => Repr::Opaque,
        }
    }
}

/// A value's text, when a value of type `oid` in `format` has one interlock
/// can read (for recording parameters); `None` for opaque binary values.
pub(crate) fn text_of(oid: Option<u32>, format: Format, v: &[u8]) -> Option<Cow<'_, [u8]>> {
    match Repr::of(oid, format) {
        Repr::Text { .. } | Repr::TextOrNull => Some(Cow::Borrowed(v)),
        Repr::Jsonb => v.get(1..).map(Cow::Borrowed),
        Repr::Decoded(d) => d.text(v).map(|t| Cow::Owned(t.into_bytes())),
        Repr::Inert | Repr::Opaque => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::policy::MaskSpec;

    fn spec(detectors: &[&str]) -> MaskSpec {
        let d: Vec<String> = detectors.iter().map(|s| s.to_string()).collect();
        MaskSpec::new(&[], &d, Strategy::Redact).unwrap()
    }

    #[test]
    fn strategies_replace_values() {
        let key = MaskKey::from_bytes([1; 32]);
        assert_eq!(replace(Strategy::Redact, b"bob@x.io", None), b"****");
        let p = Strategy::Partial { keep_last: 4 };
        assert_eq!(replace(p, b"4111111111111111", None), b"************1111");
        assert_eq!(replace(p, "né@x".as_bytes(), None), "né@x".as_bytes());
        assert_eq!(replace(p, "ünïcødé".as_bytes(), None), "***cødé".as_bytes());
        assert_eq!(
            replace(p, &[0xe9, b'a', b'b', b'c', b'd', b'e'], None),
            b"**bcde"
        );
        let h = replace(Strategy::Hash, b"bob@x.io", Some(&key));
        assert_eq!(h, key.hash(b"bob@x.io").into_bytes());
        assert_eq!(
            replace(Strategy::Partial { keep_last: 0 }, b"abc", None),
            b"***"
        );
    }

    #[test]
    fn detectors_find_values_in_any_ascii_compatible_encoding() {
        let s = spec(&["email", "card"]);
        let scans = || {
            s.detectors().iter().map(|d| Scan {
                rule: 0,
                detector: d,
                strategy: Strategy::Redact,
            })
        };
        let mut counts = vec![BTreeMap::new()];
        let got = mask_text(
            b"to bob@x.io, 4111 1111 1111 1111",
            scans(),
            None,
            &mut counts,
        );
        assert_eq!(got.as_deref(), Some(&b"to ****, ****"[..]));
        // LATIN1 bytes: not UTF-8, still scanned, masked in place
        let latin1 = b"jos\xe9@example.com \xe9t\xe9";
        let got = mask_text(latin1, scans(), None, &mut counts).unwrap();
        assert_eq!(got, b"**** \xe9t\xe9");
        assert_eq!(counts[0].get("detector:email"), Some(&2));
        assert_eq!(counts[0].get("detector:card"), Some(&1));
        assert_eq!(mask_text(b"nothing here", scans(), None, &mut counts), None);
    }

    #[test]
    fn representations_follow_type_and_format() {
        assert_eq!(Repr::of(Some(25), Format::Text), Repr::Text { whole: true });
        assert_eq!(Repr::of(Some(23), Format::Text), Repr::TextOrNull);
        assert_eq!(
            Repr::of(Some(1009), Format::Text),
            Repr::Text { whole: false }
        );
        assert_eq!(Repr::of(Some(17), Format::Text), Repr::Opaque);
        assert_eq!(Repr::of(None, Format::Text), Repr::Text { whole: false });
        assert_eq!(
            Repr::of(Some(1043), Format::Binary),
            Repr::Text { whole: true }
        );
        assert_eq!(
            Repr::of(Some(114), Format::Binary),
            Repr::Text { whole: false }
        );
        assert_eq!(Repr::of(Some(3802), Format::Binary), Repr::Jsonb);
        assert!(matches!(
            Repr::of(Some(20), Format::Binary),
            Repr::Decoded(_)
        ));
        assert_eq!(Repr::of(Some(1184), Format::Binary), Repr::Inert);
        assert_eq!(Repr::of(Some(17), Format::Binary), Repr::Opaque); // bytea
        assert_eq!(Repr::of(Some(1009), Format::Binary), Repr::Opaque); // text[]
        assert_eq!(Repr::of(None, Format::Binary), Repr::Opaque);
        assert_eq!(Format::from_code(1), Format::Binary);
        assert_eq!(Format::from_code(0), Format::Text);
    }
}
