//! Seeding from /proc, lookups that fall back to /proc, and pid reuse.

use std::path::PathBuf;

use super::fake::FakeProc;
use crate::identity::{IdentityError, ProcessEvent, ProcessTable};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn seed_reads_every_numeric_directory() -> TestResult {
    let fake = FakeProc::new()?;
    fake.process(1, 0)?;
    fake.process(100, 1)?.ids(0, 4)?;
    fake.process(101, 100)?.stat("we ird) (name", 100, 5)?;
    std::fs::create_dir_all(fake.root().join("sys"))?;
    std::fs::create_dir_all(fake.root().join("102"))?; // vanished mid-read: no stat
    let mut t = ProcessTable::new(fake.root().to_path_buf(), 16);
    assert_eq!(t.seed_from_proc()?, 3);
    assert_eq!(t.len(), 3);
    let p = t.get(100).cloned();
    assert_eq!(p.as_ref().map(|p| (p.ppid, p.uid, p.gid)), Some((1, 0, 4)));
    assert_eq!(
        p.as_ref().and_then(|p| p.exe.as_deref()),
        Some("/usr/bin/p100")
    );
    assert_eq!(
        p.as_ref().map(|p| p.argv.clone()),
        Some(vec!["p100".to_string(), "--run".to_string()])
    );
    assert_eq!(p.as_ref().and_then(|p| p.start_ticks), Some(1000));
    assert_eq!(t.get(101).map(|p| p.comm.as_str()), Some("we ird) (name"));
    Ok(())
}

#[test]
fn seed_without_proc_root_is_an_error() {
    let mut t = ProcessTable::new(PathBuf::from("/nonexistent/interlock-proc"), 16);
    assert!(matches!(
        t.seed_from_proc(),
        Err(IdentityError::Read { .. })
    ));
}

#[test]
fn lookup_reads_unknown_processes_once() -> TestResult {
    let fake = FakeProc::new()?;
    fake.process(200, 1)?;
    let mut t = ProcessTable::new(fake.root().to_path_buf(), 16);
    assert!(t.get(200).is_none());
    let p = t.lookup_or_read(200);
    assert_eq!(p.as_ref().map(|p| p.ppid), Some(1));
    assert!(t.get(200).is_some(), "inserted");
    assert!(t.lookup_or_read(201).is_none(), "unknown and gone");
    assert_eq!(t.len(), 1);
    Ok(())
}

#[test]
fn changed_start_time_means_a_reused_pid() -> TestResult {
    let fake = FakeProc::new()?;
    fake.process(300, 1)?;
    let mut t = ProcessTable::new(fake.root().to_path_buf(), 16);
    t.seed_from_proc()?;
    // Events for pid 300 were missed: a new program now lives under it.
    fake.process(300, 2)?
        .stat("new", 2, 999)?
        .exe("/usr/bin/new")?;
    let p = t.lookup_or_read(300);
    assert_eq!(
        p.as_ref().and_then(|p| p.exe.as_deref()),
        Some("/usr/bin/new")
    );
    assert_eq!(
        p.as_ref().map(|p| (p.ppid, p.start_ticks)),
        Some((2, Some(999)))
    );
    assert_eq!(t.get(300).map(|p| p.ppid), Some(2), "table updated too");
    Ok(())
}

#[test]
fn exited_entry_with_live_pid_is_replaced() -> TestResult {
    let fake = FakeProc::new()?;
    let mut t = ProcessTable::new(fake.root().to_path_buf(), 16);
    t.apply(ProcessEvent::Fork {
        child_tgid: 400,
        parent_tgid: 1,
        uid: 5,
        gid: 5,
        comm: "old".into(),
    });
    t.apply(ProcessEvent::Exit { tgid: 400 });
    // Gone from /proc: the exited entry is all there is, and it is what we return.
    let p = t.lookup_or_read(400);
    assert_eq!(
        p.as_ref().map(|p| (p.comm.as_str(), p.exited)),
        Some(("old", true))
    );
    // The pid comes back as another process.
    fake.process(400, 7)?;
    let p = t.lookup_or_read(400);
    assert_eq!(
        p.as_ref().map(|p| (p.comm.as_str(), p.exited, p.ppid)),
        Some(("p400", false, 7))
    );
    Ok(())
}

#[test]
fn event_entries_get_their_start_time_pinned() -> TestResult {
    let fake = FakeProc::new()?;
    fake.process(500, 1)?;
    let mut t = ProcessTable::new(fake.root().to_path_buf(), 16);
    t.apply(ProcessEvent::Exec {
        tgid: 500,
        uid: 1000,
        gid: 1000,
        comm: "psql".into(),
        filename: "/usr/bin/psql".into(),
        argv: vec!["psql".into()],
    });
    fake.remove(500)?;
    t.apply(ProcessEvent::Fork {
        child_tgid: 501,
        parent_tgid: 500,
        uid: 1000,
        gid: 1000,
        comm: "psql".into(),
    });
    fake.process(501, 500)?;
    let first = t.lookup_or_read(501);
    assert_eq!(
        first.as_ref().and_then(|p| p.exe.as_deref()),
        Some("/usr/bin/psql")
    );
    assert_eq!(first.as_ref().and_then(|p| p.start_ticks), Some(5010));
    // Missed exit + fork: same pid, new start time.
    fake.process(501, 1)?.stat("other", 1, 77)?;
    let second = t.lookup_or_read(501);
    assert_eq!(second.as_ref().map(|p| p.comm.as_str()), Some("other"));
    Ok(())
}

#[test]
fn fork_from_unseen_parent_fills_program_from_proc() -> TestResult {
    let fake = FakeProc::new()?;
    fake.process(600, 1)?;
    let mut t = ProcessTable::new(fake.root().to_path_buf(), 16);
    t.apply(ProcessEvent::Fork {
        child_tgid: 600,
        parent_tgid: 1,
        uid: 1000,
        gid: 1000,
        comm: "p600".into(),
    });
    assert_eq!(t.get(600).map(|p| p.exe.is_none()), Some(true));
    let p = t.lookup_or_read(600);
    assert_eq!(
        p.as_ref().and_then(|p| p.exe.as_deref()),
        Some("/usr/bin/p600")
    );
    assert_eq!(p.as_ref().map(|p| p.argv.len()), Some(2));
    Ok(())
}
