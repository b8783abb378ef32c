//! Scratch directories for unit tests: unique, and removed when the test ends, passed or
//! failed, so repeated `cargo test` runs do not fill the runner's /tmp.

use std::ops::Deref;
use std::path::Path;

/// A fresh empty directory under the system's temporary directory, removed on drop.
pub(crate) struct TestDir(tempfile::TempDir);

impl TestDir {
    /// Named `<prefix>-<random>`, so a leftover one says which test made it.
    pub(crate) fn new(prefix: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a scratch directory for {prefix}: {e}"));
        TestDir(dir)
    }
}

impl Deref for TestDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for TestDir {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}
