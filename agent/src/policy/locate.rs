//! Positions of nodes in a policy document, for errors found after parsing
//! (a duplicate name, an unknown target, a missing setting).
//!
//! serde_yaml keeps no positions in its values, but it stamps every error a
//! `Deserialize` impl raises with the position of the node being read. So
//! to find the node at a path, the document is read once more by a seed
//! that walks that path, skips everything else, and raises a marker error
//! at the node: the error's position is the node's. This costs one parse
//! per reported error, never anything on a good file.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step into the document: a mapping key or a sequence index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// The message of the marker error (never shown).
const FOUND: &str = "\u{0}interlock-policy-node-found";

/// 1-based `(line, column)` of the node at `path` in `text`, or of its
/// nearest ancestor that the document has (`match` may be absent, say);
/// `(1, 1)` if the document has no node at all.
pub(super) fn position(text: &str, path: &[Step<'_>]) -> (usize, usize) {
    (0..=path.len())
        .rev()
        .find_map(|n| probe(text, path.get(..n).unwrap_or_default()))
        .unwrap_or((1, 1))
}

/// The node's position, if the document has a node at `path`.
fn probe(text: &str, path: &[Step<'_>]) -> Option<(usize, usize)> {
    let de = serde_yaml::Deserializer::from_str(text);
    // serde_yaml puts the node's path in front of the message.
    match (Probe { path }).deserialize(de) {
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| (l.line(), l.column())),
        _ => None,
    }
}

struct Probe<'p> {
    path: &'p [Step<'p>],
}

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.path.split_first() {
            None => d.deserialize_any(Found),
            Some((Step::Key(key), rest)) => d.deserialize_map(InMap { key, rest }),
            Some((Step::Index(index), rest)) => d.deserialize_seq(InSeq {
                index: *index,
                rest,
            }),
        }
    }
}

/// Raises the marker at whatever node it is asked to read.
struct Found;

impl<'de> Visitor<'de> for Found {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any node")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
}

/// Looks for `key` in a mapping and goes on with `rest` inside its value.
struct InMap<'p> {
    key: &'p str,
    rest: &'p [Step<'p>],
}

impl<'de> Visitor<'de> for InMap<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a mapping with `{}`", self.key)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(k) = map.next_key::<serde_yaml::Value>()? {
            if k.as_str() == Some(self.key) {
                map.next_value_seed(Probe { path: self.rest })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// Goes to element `index` of a sequence and on with `rest` inside it.
struct InSeq<'p> {
    index: usize,
    rest: &'p [Step<'p>],
}

impl<'de> Visitor<'de> for InSeq<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a sequence with an element {}", self.index)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            let more = if i == self.index {
                seq.next_element_seed(Probe { path: self.rest })?.is_some()
            } else {
                seq.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Step::*, *};

    const DOC: &str = "version: 1
targets:
  - name: pg
    protocol: tcp
    match:
      - {address: 10.0.0.1, port: 5432}
      - port: 0
  - {name: pg, protocol: tcp, match: []}
rules:
  - name: pg-readers
    action: allow
    match: {target: [pg, nope]}
";

    #[test]
    fn finds_keys_indexes_and_flow_nodes() {
        assert_eq!(position(DOC, &[Key("version")]), (1, 10));
        assert_eq!(
            position(DOC, &[Key("targets"), Index(0), Key("name")]),
            (3, 11)
        );
        assert_eq!(
            position(DOC, &[Key("targets"), Index(1), Key("name")]),
            (8, 12)
        );
        assert_eq!(
            position(
                DOC,
                &[
                    Key("targets"),
                    Index(0),
                    Key("match"),
                    Index(1),
                    Key("port")
                ]
            ),
            (7, 15)
        );
        assert_eq!(
            position(
                DOC,
                &[
                    Key("targets"),
                    Index(0),
                    Key("match"),
                    Index(0),
                    Key("port")
                ]
            ),
            (6, 35)
        );
        assert_eq!(
            position(DOC, &[Key("targets"), Index(1), Key("match")]),
            (8, 38)
        );
        // A rule whose name contains a target name does not confuse it.
        assert_eq!(
            position(
                DOC,
                &[
                    Key("rules"),
                    Index(0),
                    Key("match"),
                    Key("target"),
                    Index(1)
                ]
            ),
            (12, 26)
        );
    }

    #[test]
    fn a_missing_node_falls_back_to_its_nearest_ancestor() {
        // The first target has no `upstream`: its mapping is named instead.
        assert_eq!(
            position(
                DOC,
                &[Key("targets"), Index(0), Key("upstream"), Key("tls")]
            ),
            (3, 5)
        );
        assert_eq!(position(DOC, &[Key("targets"), Index(9)]), (3, 3));
        assert_eq!(position("", &[Key("version")]), (1, 1));
    }
}
