//! Against the real /proc of the machine running the tests.

use std::path::PathBuf;

use crate::identity::{CI_ALLOWLIST, ProcessTable};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn identity_of_this_test_process() -> TestResult {
    let mut t = ProcessTable::new(PathBuf::from("/proc"), 4096);
    assert!(t.seed_from_proc()? > 0);
    let me = std::process::id();
    assert!(t.get(me).is_some(), "seeding saw this process");

    let max_depth = 32;
    let id = t.identity(me, me, max_depth, &crate::identity::JobRootSpec::default());
    let exe = std::env::current_exe()?;
    assert_eq!(id.exe.as_deref(), exe.to_str());
    assert!(!id.argv.is_empty());
    assert_ne!(id.ppid, 0);
    let last = id.ancestry.last().map(|a| a.tgid);
    assert!(
        last == Some(1) || id.ancestry.len() == max_depth,
        "ancestry {:?} ends neither at 1 nor at the bound",
        id.ancestry.iter().map(|a| a.tgid).collect::<Vec<_>>()
    );
    assert_eq!(id.ancestry.first().map(|a| a.tgid), Some(id.ppid));
    assert!(id.cgroup.as_deref().is_some_and(|c| c.starts_with('/')));
    if id.uid == 0 {
        assert_eq!(id.user.as_deref(), Some("root"));
    }
    assert!(id.ci.keys().all(|k| CI_ALLOWLIST.contains(&k.as_str())));
    Ok(())
}

#[test]
fn lookup_of_init_and_of_a_missing_pid() {
    let mut t = ProcessTable::new(PathBuf::from("/proc"), 16);
    assert_eq!(t.lookup_or_read(1).map(|p| p.tgid), Some(1));
    assert!(t.ancestry(1, 8).is_empty(), "init has no parent");
    // Above the kernel's pid_max limit (4194304), so never a live process.
    assert!(t.lookup_or_read(4_194_305).is_none());
}
