//! Applying fork/exec/exit events, and the memory bound.

use std::path::PathBuf;

use super::fake::FakeProc;
use crate::identity::{ProcessEvent, ProcessTable};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn table(capacity: usize) -> ProcessTable {
    ProcessTable::new(PathBuf::from("/nonexistent/interlock-proc"), capacity)
}

fn fork(child: u32, parent: u32) -> ProcessEvent {
    ProcessEvent::Fork {
        child_tgid: child,
        parent_tgid: parent,
        uid: 1000,
        gid: 1000,
        comm: format!("c{child}"),
    }
}

fn exec(tgid: u32, filename: &str, argv: &[&str]) -> ProcessEvent {
    ProcessEvent::Exec {
        tgid,
        uid: 1001,
        gid: 1002,
        comm: "psql".into(),
        filename: filename.into(),
        argv: argv.iter().map(|a| a.to_string()).collect(),
    }
}

#[test]
fn fork_inherits_program_from_parent_and_exec_replaces_it() {
    let mut t = table(16);
    t.apply(exec(10, "/bin/bash", &["bash", "ci.sh"]));
    t.apply(fork(11, 10));
    let child = t.get(11).cloned();
    assert_eq!(child.as_ref().map(|c| c.ppid), Some(10));
    assert_eq!(
        child.as_ref().and_then(|c| c.exe.as_deref()),
        Some("/bin/bash")
    );
    assert_eq!(
        child.as_ref().map(|c| c.argv.clone()),
        Some(vec!["bash".into(), "ci.sh".into()])
    );

    t.apply(exec(11, "/usr/bin/psql", &["psql", "-h", "db"]));
    let child = t.get(11).cloned();
    assert_eq!(child.as_ref().map(|c| c.ppid), Some(10), "exec keeps ppid");
    assert_eq!(
        child.as_ref().and_then(|c| c.exe.as_deref()),
        Some("/usr/bin/psql")
    );
    assert_eq!(child.as_ref().map(|c| c.argv.len()), Some(3));
    assert_eq!(child.as_ref().map(|c| (c.uid, c.gid)), Some((1001, 1002)));
    assert_eq!(child.as_ref().map(|c| c.comm.as_str()), Some("psql"));
}

#[test]
fn fork_of_known_tgid_is_a_new_process() {
    let mut t = table(16);
    t.apply(exec(20, "/usr/bin/old", &["old"]));
    t.apply(ProcessEvent::Exit { tgid: 20 });
    t.apply(fork(20, 5));
    let reused = t.get(20).cloned();
    assert_eq!(reused.as_ref().map(|p| p.ppid), Some(5));
    assert_eq!(reused.as_ref().map(|p| p.exe.is_none()), Some(true));
    assert_eq!(reused.as_ref().map(|p| p.exited), Some(false));
    assert_eq!(t.len(), 1);
}

#[test]
fn thread_fork_is_ignored() {
    let mut t = table(16);
    t.apply(exec(30, "/bin/sh", &["sh"]));
    t.apply(fork(30, 30));
    assert_eq!(t.get(30).and_then(|p| p.exe.as_deref()), Some("/bin/sh"));
    assert_eq!(t.len(), 1);
}

#[test]
fn fork_reporting_a_new_thread_is_ignored() -> TestResult {
    // The fork tracepoint reports thread 51 of process 50: its status names tgid 50.
    let fake = FakeProc::new()?;
    fake.process(50, 1)?;
    std::fs::create_dir_all(fake.root().join("51"))?;
    std::fs::create_dir_all(fake.root().join("52"))?;
    fake.file("51/status", b"Name:\tx\nTgid:\t50\nPid:\t51\n")?;
    let mut t = ProcessTable::new(fake.root().to_path_buf(), 16);
    t.apply(fork(51, 50));
    assert!(t.get(51).is_none(), "a thread is not a process");
    fake.file("52/status", b"Name:\tx\nTgid:\t52\nPid:\t52\n")?;
    t.apply(fork(52, 50));
    assert_eq!(t.get(52).map(|p| p.ppid), Some(50));
    Ok(())
}

#[test]
fn exec_of_unknown_tgid_takes_ppid_from_proc() -> TestResult {
    let fake = FakeProc::new()?;
    fake.process(40, 7)?;
    let mut t = ProcessTable::new(fake.root().to_path_buf(), 16);
    t.apply(exec(40, "/usr/bin/psql", &["psql"]));
    t.apply(exec(41, "/usr/bin/psql", &["psql"]));
    assert_eq!(
        t.get(40).map(|p| (p.ppid, p.start_ticks)),
        Some((7, Some(400)))
    );
    assert_eq!(t.get(41).map(|p| (p.ppid, p.start_ticks)), Some((0, None)));
    Ok(())
}

#[test]
fn exec_after_exit_is_a_reused_pid() -> TestResult {
    let fake = FakeProc::new()?;
    fake.process(50, 9)?;
    let mut t = ProcessTable::new(fake.root().to_path_buf(), 16);
    t.apply(fork(50, 3));
    t.apply(ProcessEvent::Exit { tgid: 50 });
    t.apply(exec(50, "/usr/bin/new", &["new"]));
    let p = t.get(50).cloned();
    assert_eq!(p.as_ref().map(|p| (p.ppid, p.exited)), Some((9, false)));
    Ok(())
}

#[test]
fn exit_keeps_the_entry_marked() {
    let mut t = table(16);
    t.apply(exec(60, "/usr/bin/psql", &["psql"]));
    t.apply(ProcessEvent::Exit { tgid: 60 });
    t.apply(ProcessEvent::Exit { tgid: 61 });
    assert_eq!(t.get(60).map(|p| p.exited), Some(true));
    assert_eq!(
        t.get(60).and_then(|p| p.exe.as_deref()),
        Some("/usr/bin/psql")
    );
    assert!(t.get(61).is_none());
    assert_eq!(t.len(), 1);
}

#[test]
fn exited_entries_are_evicted_first_then_oldest() {
    let mut t = table(3);
    for tgid in [1, 2, 3] {
        t.apply(fork(tgid, 0));
    }
    t.apply(ProcessEvent::Exit { tgid: 3 });
    t.apply(ProcessEvent::Exit { tgid: 2 });
    t.apply(fork(4, 1));
    assert!(t.get(3).is_none(), "earliest exit goes first");
    assert!(t.get(2).is_some());
    t.apply(fork(5, 1));
    assert!(t.get(2).is_none());
    t.apply(fork(6, 1));
    assert!(t.get(1).is_none(), "then the oldest inserted");
    assert!([4, 5, 6].iter().all(|&tgid| t.get(tgid).is_some()));
    assert_eq!(t.len(), 3);
}

#[test]
fn zero_capacity_keeps_one_entry() {
    let mut t = table(0);
    t.apply(fork(2, 1));
    t.apply(fork(3, 1));
    assert_eq!(t.capacity(), 1);
    assert_eq!(t.len(), 1);
    assert!(t.get(3).is_some());
}

#[test]
fn memory_stays_bounded_under_event_floods() {
    let capacity = 64;
    let mut t = table(capacity);
    let queue_bound = capacity * 2 + 64 + 1;
    for i in 0..200_000u32 {
        // A small pid space forces constant reuse, replacement and re-exit.
        let tgid = 2 + i % 500;
        match i % 4 {
            0 => t.apply(fork(tgid, 1 + (i / 7) % 500)),
            1 => t.apply(exec(tgid, "/usr/bin/x", &["x"; 3])),
            2 => t.apply(ProcessEvent::Exit { tgid }),
            _ => t.apply(fork(tgid, tgid)),
        }
        let (inserted, exited) = t.queue_lens();
        assert!(t.len() <= capacity);
        assert!(
            inserted <= queue_bound && exited <= queue_bound,
            "queues {inserted}/{exited}"
        );
    }
    assert_eq!(t.len(), capacity);
}

#[test]
fn exec_argv_is_capped() {
    let mut t = table(4);
    let huge = vec!["a".repeat(1000); 10_000];
    t.apply(ProcessEvent::Exec {
        tgid: 70,
        uid: 0,
        gid: 0,
        comm: "x".into(),
        filename: "/x".into(),
        argv: huge,
    });
    let bytes: usize = t
        .get(70)
        .map_or(0, |p| p.argv.iter().map(String::len).sum());
    assert!(bytes > 0 && bytes <= 16 * 1024);
}
