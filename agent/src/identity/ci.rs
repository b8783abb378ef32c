//! CI context from process environments.
//!
//! SECURITY: an environment holds secrets (tokens, passwords). Only the variables named in
//! [`CI_ALLOWLIST`] may be kept. `/proc/<pid>/environ` is streamed through a small fixed buffer
//! (no `BufReader`, no `String` of the whole file); keys are compared in a fixed scratch array,
//! only allow-listed values are copied out, and every buffer that held environment bytes is
//! overwritten with zeros as soon as its entry (or chunk) is done. Nothing read here is logged
//! or put in an error.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::procfs::pid_file;

/// Environment variables that identify a CI job and may be recorded and matched by `ci:`
/// conditions (each is described in policies/README.md, "CI variables").
///
/// Deliberately absent: `JENKINS_URL` and similar URLs (they can carry credentials), and
/// anything that is not an identifier of the repository, pipeline, job, run, ref, environment,
/// trigger or actor.
pub const CI_ALLOWLIST: &[&str] = &[
    // GitHub Actions
    "GITHUB_REPOSITORY",
    "GITHUB_REPOSITORY_OWNER",
    "GITHUB_RUN_ID",
    "GITHUB_RUN_ATTEMPT",
    "GITHUB_WORKFLOW",
    "GITHUB_WORKFLOW_REF",
    "GITHUB_JOB",
    "GITHUB_ACTOR",
    "GITHUB_TRIGGERING_ACTOR",
    "GITHUB_EVENT_NAME",
    "GITHUB_SHA",
    "GITHUB_REF",
    "GITHUB_REF_NAME",
    "GITHUB_REF_TYPE",
    "GITHUB_REF_PROTECTED",
    "GITHUB_BASE_REF",
    "GITHUB_HEAD_REF",
    // GitLab CI
    "CI_PROJECT_PATH",
    "CI_JOB_ID",
    "CI_JOB_NAME",
    "CI_PIPELINE_ID",
    "CI_PIPELINE_SOURCE",
    "CI_COMMIT_SHA",
    "CI_COMMIT_REF_NAME",
    "CI_COMMIT_REF_PROTECTED",
    "CI_COMMIT_BRANCH",
    "CI_COMMIT_TAG",
    "CI_DEFAULT_BRANCH",
    "CI_MERGE_REQUEST_TARGET_BRANCH_NAME",
    "CI_ENVIRONMENT_NAME",
    "CI_ENVIRONMENT_TIER",
    "GITLAB_USER_LOGIN",
    // Buildkite
    "BUILDKITE_BUILD_ID",
    "BUILDKITE_JOB_ID",
    "BUILDKITE_PIPELINE_SLUG",
    "BUILDKITE_ORGANIZATION_SLUG",
    "BUILDKITE_BRANCH",
    "BUILDKITE_TAG",
    "BUILDKITE_PIPELINE_DEFAULT_BRANCH",
    "BUILDKITE_SOURCE",
    "BUILDKITE_BUILD_CREATOR",
    "BUILDKITE_PULL_REQUEST",
    // Jenkins
    "BUILD_ID",
    "JOB_NAME",
    "BRANCH_NAME",
    "TAG_NAME",
    "CHANGE_ID",
    "CHANGE_TARGET",
    "BUILD_USER_ID",
    // CircleCI
    "CIRCLE_BUILD_NUM",
    "CIRCLE_PROJECT_REPONAME",
    "CIRCLE_PROJECT_USERNAME",
    "CIRCLE_WORKFLOW_ID",
    "CIRCLE_JOB",
    "CIRCLE_BRANCH",
    "CIRCLE_TAG",
    "CIRCLE_USERNAME",
];

/// Longest value kept; longer values are cut (lossily, at a byte boundary).
const MAX_VALUE: usize = 256;
/// Read buffer size: small on purpose, it is wiped after every chunk.
const CHUNK: usize = 512;
/// Room for the longest allow-listed key; longer keys cannot match and are skipped.
const MAX_KEY: usize = longest_key(CI_ALLOWLIST);

const fn longest_key(mut keys: &[&str]) -> usize {
    let mut longest = 0;
    while let [key, rest @ ..] = keys {
        if key.len() > longest {
            longest = key.len();
        }
        keys = rest;
    }
    longest
}

/// Overwrites a buffer that held environment bytes. `black_box` keeps the optimiser from
/// dropping the writes to a buffer that is about to die.
fn wipe(buf: &mut [u8]) {
    buf.fill(0);
    std::hint::black_box(buf);
}

/// The allow-listed CI variables in one process's own environment.
///
/// # Errors
/// The environ file cannot be opened or read (process gone, kernel thread, permission).
pub(crate) fn read_process_vars(
    proc_root: &Path,
    tgid: u32,
) -> io::Result<BTreeMap<String, String>> {
    let mut found = BTreeMap::new();
    scan_environ(&pid_file(proc_root, tgid, "environ"), &mut found)?;
    Ok(found)
}

/// A job token read from an environment: its `Debug` is redacted and its bytes are
/// overwritten when it is dropped.
pub struct EnvToken {
    /// The variable it was found in (a name the policy gave, never a value).
    pub variable: String,
    value: String,
}

impl EnvToken {
    /// The token, for the verifier.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

impl std::fmt::Debug for EnvToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EnvToken({}=<redacted>)", self.variable)
    }
}

impl Drop for EnvToken {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.value).into_bytes();
        wipe(&mut bytes);
    }
}

/// Longest token read from an environment; a longer value is no token interlock accepts.
const MAX_TOKEN: usize = 16 * 1024;

/// The value of the first of `names` (in environment order) set in one process's own
/// environment, streamed like [`read_process_vars`]: nothing but that value is kept.
///
/// # Errors
/// The environ file cannot be opened or read.
pub(crate) fn read_token(
    proc_root: &Path,
    tgid: u32,
    names: &[String],
) -> io::Result<Option<EnvToken>> {
    if names.is_empty() {
        return Ok(None);
    }
    let longest = names.iter().map(String::len).max().unwrap_or(0);
    let mut file = File::open(pid_file(proc_root, tgid, "environ"))?;
    let mut chunk = [0u8; CHUNK];
    let mut key: Vec<u8> = Vec::with_capacity(longest);
    let mut value: Vec<u8> = Vec::new();
    // None: reading a key; Some(Some(i)): keeping the value of names[i]; Some(None): skipping.
    let mut state: Option<Option<usize>> = None;
    let mut found: Option<(usize, Vec<u8>)> = None;
    let result = 'read: loop {
        let n = match file.read(&mut chunk) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        };
        for &b in chunk.iter().take(n) {
            match state {
                None if b == 0 => {
                    wipe(&mut key);
                    key.clear();
                }
                None if b == b'=' => {
                    state = Some(names.iter().position(|n| n.as_bytes() == key.as_slice()));
                    wipe(&mut key);
                    key.clear();
                }
                None if key.len() < longest => key.push(b),
                None => {
                    wipe(&mut key);
                    key.clear();
                    state = Some(None);
                }
                Some(Some(i)) if b == 0 => {
                    found = Some((i, std::mem::take(&mut value)));
                    break 'read Ok(());
                }
                Some(Some(_)) if value.len() < MAX_TOKEN => value.push(b),
                Some(Some(_)) => {
                    wipe(&mut value);
                    value.clear();
                    state = Some(None);
                }
                Some(None) if b == 0 => state = None,
                Some(None) => {}
            }
        }
        wipe(&mut chunk);
    };
    if let (Some(Some(i)), None) = (state, &found) {
        found = Some((i, std::mem::take(&mut value)));
    }
    wipe(&mut chunk);
    wipe(&mut key);
    wipe(&mut value);
    result?;
    Ok(found.and_then(|(i, mut bytes)| {
        let token = std::str::from_utf8(&bytes).ok().map(str::to_owned);
        wipe(&mut bytes);
        Some(EnvToken {
            variable: names.get(i)?.clone(),
            value: token?,
        })
    }))
}

enum Mode {
    /// Reading a key into the scratch array.
    Key,
    /// Copying the value of this allow-listed key.
    Keep(&'static str),
    /// Ignoring the rest of this entry.
    Skip,
}

/// Streams one environ file (`KEY=value\0...`) and adds allow-listed keys not yet in `found`.
fn scan_environ(path: &Path, found: &mut BTreeMap<String, String>) -> io::Result<()> {
    let mut file = File::open(path)?;
    let mut chunk = [0u8; CHUNK];
    let mut key = [0u8; MAX_KEY];
    let mut key_len = 0usize;
    let mut value = [0u8; MAX_VALUE];
    let mut value_len = 0usize;
    let mut mode = Mode::Key;
    let result = loop {
        let n = match file.read(&mut chunk) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        };
        for &b in chunk.iter().take(n) {
            match mode {
                Mode::Key if b == 0 => {
                    // An entry without '=': nothing to keep.
                    wipe(&mut key);
                    key_len = 0;
                }
                Mode::Key if b == b'=' => {
                    mode = match key.get(..key_len).and_then(allowed) {
                        Some(name) if !found.contains_key(name) => Mode::Keep(name),
                        _ => Mode::Skip,
                    };
                    wipe(&mut key);
                    key_len = 0;
                }
                Mode::Key => match key.get_mut(key_len) {
                    Some(slot) => {
                        *slot = b;
                        key_len += 1;
                    }
                    // Longer than any allow-listed key.
                    None => {
                        wipe(&mut key);
                        key_len = 0;
                        mode = Mode::Skip;
                    }
                },
                Mode::Keep(name) if b == 0 => {
                    keep(found, name, &mut value, value_len);
                    value_len = 0;
                    mode = Mode::Key;
                }
                Mode::Keep(_) => {
                    if let Some(slot) = value.get_mut(value_len) {
                        *slot = b;
                        value_len += 1;
                    }
                }
                Mode::Skip if b == 0 => mode = Mode::Key,
                Mode::Skip => {}
            }
        }
        wipe(&mut chunk);
    };
    // A last entry without its trailing NUL is still complete.
    if let Mode::Keep(name) = mode {
        keep(found, name, &mut value, value_len);
    }
    wipe(&mut chunk);
    wipe(&mut key);
    wipe(&mut value);
    result
}

/// The allow-list entry equal to `key`, if any.
fn allowed(key: &[u8]) -> Option<&'static str> {
    CI_ALLOWLIST
        .iter()
        .copied()
        .find(|name| name.as_bytes() == key)
}

/// Moves an allow-listed value out of the scratch buffer, then wipes it.
fn keep(found: &mut BTreeMap<String, String>, name: &'static str, value: &mut [u8], len: usize) {
    let text = String::from_utf8_lossy(value.get(..len).unwrap_or_default()).into_owned();
    found.insert(name.to_owned(), text);
    wipe(value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::ProcessTable;
    use crate::identity::tests::fake::FakeProc;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn only_allow_listed_variables_survive() -> TestResult {
        let fake = FakeProc::new()?;
        fake.process(500, 1)?
            .environ(b"SECRET_TOKEN=xyz\0GITHUB_RUN_ID=42\0PATH=/usr/bin\0")?;
        fake.process(1, 0)?;
        let mut table = ProcessTable::new(fake.root().to_path_buf(), 16);
        table.apply(crate::identity::ProcessEvent::Fork {
            child_tgid: 500,
            parent_tgid: 1,
            uid: 0,
            gid: 0,
            comm: "x".into(),
        });
        let id = table.identity(
            500,
            500,
            8,
            &crate::identity::JobRootSpec::trusting_parent(),
        );
        assert_eq!(id.ci.len(), 1);
        assert_eq!(id.ci.get("GITHUB_RUN_ID").map(String::as_str), Some("42"));
        let debug = format!("{id:?}");
        assert!(!debug.contains("xyz"), "secret leaked: {debug}");
        assert!(
            !debug.contains("SECRET_TOKEN"),
            "secret key leaked: {debug}"
        );
        assert!(!serde_json::to_string(&id)?.contains("xyz"));
        Ok(())
    }

    #[test]
    fn tokens_are_read_only_from_named_variables() -> TestResult {
        let fake = FakeProc::new()?;
        let mut env = b"OTHER=x\0SOME_TOKEN_PREFIX=no\0".to_vec();
        env.extend_from_slice(b"ID_TOKEN=");
        env.extend(std::iter::repeat_n(b't', CHUNK * 2));
        env.extend_from_slice(b"\0LATER_TOKEN=later");
        fake.process(40, 1)?.environ(&env)?;
        let names = ["LATER_TOKEN".to_string(), "ID_TOKEN".to_string()];
        let t = read_token(fake.root(), 40, &names)?.ok_or("no token")?;
        assert_eq!(t.variable, "ID_TOKEN", "environment order");
        assert_eq!(t.expose().len(), CHUNK * 2);
        assert!(!format!("{t:?}").contains("ttt"));
        let only_last = read_token(fake.root(), 40, &names[..1])?.ok_or("no token")?;
        assert_eq!(only_last.expose(), "later", "a last entry without NUL");
        assert!(read_token(fake.root(), 40, &["SOME".to_string()])?.is_none());
        assert!(read_token(fake.root(), 40, &[])?.is_none());
        Ok(())
    }

    #[test]
    fn entries_split_across_chunks_and_edge_cases() -> TestResult {
        let fake = FakeProc::new()?;
        let mut env = Vec::new();
        // Push the interesting entries across the read-chunk boundary.
        env.extend_from_slice(b"PADDING=");
        env.extend(std::iter::repeat_n(b'p', CHUNK - 12));
        env.push(0);
        env.extend_from_slice(b"NOEQUALS\0=emptykey\0XGITHUB_SHA=no\0GITHUB_SHAX=no\0");
        env.extend_from_slice(b"A_VERY_LONG_KEY_THAT_IS_LONGER_THAN_ANY_ALLOWED=GITHUB_JOB=no\0");
        env.extend_from_slice(b"CI_JOB_ID=first\0CI_JOB_ID=second\0GITHUB_REF=");
        env.extend(std::iter::repeat_n(b'r', MAX_VALUE * 3));
        env.extend_from_slice(b"\0GITHUB_SHA=abc=def\0GITHUB_ACTOR=octo");
        fake.process(20, 1)?.environ(&env)?;
        let found = crate::identity::cache::EnvCache::new(16)
            .vars(fake.root(), 20)
            .unwrap_or_default();
        let get = |k: &str| found.get(k).map(String::as_str);
        assert_eq!(get("CI_JOB_ID"), Some("first"));
        assert_eq!(get("GITHUB_SHA"), Some("abc=def"));
        assert_eq!(get("GITHUB_ACTOR"), Some("octo"));
        assert_eq!(get("GITHUB_REF").map(str::len), Some(MAX_VALUE));
        assert_eq!(get("GITHUB_JOB"), None);
        assert_eq!(found.len(), 4);
        Ok(())
    }

    #[test]
    fn unreadable_environ_is_none() {
        let fake = FakeProc::new().unwrap();
        assert!(
            crate::identity::cache::EnvCache::new(16)
                .vars(fake.root(), 999)
                .is_none()
        );
    }

    #[test]
    fn scratch_key_fits_every_allow_listed_key() {
        assert!(CI_ALLOWLIST.iter().all(|k| k.len() <= MAX_KEY));
        assert!(!CI_ALLOWLIST.contains(&"JENKINS_URL"));
    }
}
