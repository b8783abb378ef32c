//! A session's recently classified SQL strings. Drivers and ORMs send the
//! same text again and again (a Parse per execution with the extended
//! protocol, the same statement in a loop); parsing it with the grammar
//! each time is the largest share of the proxy's work per statement.
//! Classification is a pure function of the text (and the client encoding
//! it is read in), so a cached answer is exactly what parsing again gives.

use std::collections::HashMap;

use super::Classified;

/// Entries kept; when full the cache starts over (cheap, and bounded).
const ENTRIES: usize = 128;
/// Longer strings are classified every time (rarely repeated, costly to keep).
const MAX_TEXT: usize = 2048;

/// Classifications by the exact bytes the client sent.
#[derive(Default)]
pub(crate) struct ClassifyCache {
    map: HashMap<Vec<u8>, Vec<Classified>>,
}

impl ClassifyCache {
    /// The classification of `sql`, computed by `classify` unless cached.
    #[cfg(test)]
    pub(crate) fn get(
        &mut self,
        sql: &[u8],
        classify: impl FnOnce() -> Vec<Classified>,
    ) -> Vec<Classified> {
        if let Some(hit) = self.lookup(sql) {
            return hit;
        }
        let fresh = classify();
        self.store(sql, &fresh);
        fresh
    }

    /// The cached classification of `sql`, if any.
    pub(crate) fn lookup(&self, sql: &[u8]) -> Option<Vec<Classified>> {
        self.map.get(sql).cloned()
    }

    /// Keeps `classified` as the classification of `sql` (unless too long).
    pub(crate) fn store(&mut self, sql: &[u8], classified: &[Classified]) {
        if sql.len() > MAX_TEXT {
            return;
        }
        if self.map.len() >= ENTRIES {
            self.map.clear();
        }
        self.map.insert(sql.to_vec(), classified.to_vec());
    }

    /// Forgets everything (the client encoding changed, so the same bytes
    /// may now mean other text).
    pub(crate) fn clear(&mut self) {
        self.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::classify::classify;

    #[test]
    fn hits_return_what_parsing_gives_and_the_cache_stays_bounded() {
        let mut cache = ClassifyCache::default();
        let mut parsed = 0;
        let sql = "delete from t; select 1";
        for _ in 0..3 {
            let got = cache.get(sql.as_bytes(), || {
                parsed += 1;
                classify(sql)
            });
            assert_eq!(got, classify(sql));
        }
        assert_eq!(parsed, 1, "parsed once");
        for i in 0..(ENTRIES * 3) {
            let s = format!("select {i}");
            cache.get(s.as_bytes(), || classify(&s));
        }
        assert!(cache.map.len() <= ENTRIES);
        let long = format!("select '{}'", "x".repeat(MAX_TEXT));
        cache.get(long.as_bytes(), || classify(&long));
        assert!(
            !cache.map.contains_key(long.as_bytes()),
            "long texts are not kept"
        );
        cache.clear();
        assert!(cache.map.is_empty());
    }
}
