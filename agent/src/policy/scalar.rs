//! Scalars checked while serde_yaml reads them. A check made after
//! `String::deserialize` returned is reported at the enclosing mapping;
//! one made inside the visitor gets the value's own line and column.

use std::{fmt, marker::PhantomData};

use serde::de::{self, Deserializer, Visitor};

/// Reads a string and turns it into a `T` with `f`, whose error message
/// becomes the deserialization error at the string's position.
///
/// # Errors
/// The value is not a scalar, or `f` refused it.
pub(super) fn parse_str<'de, D, T, F>(d: D, f: F) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    F: FnOnce(&str) -> Result<T, String>,
{
    struct V<T, F>(F, PhantomData<T>);
    impl<'de, T, F: FnOnce(&str) -> Result<T, String>> Visitor<'de> for V<T, F> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
            (self.0)(s).map_err(E::custom)
        }
    }
    d.deserialize_str(V(f, PhantomData))
}
