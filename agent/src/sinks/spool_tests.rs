use super::*;

fn dir(name: &str) -> crate::test_dir::TestDir {
    crate::test_dir::TestDir::new(&format!("il-spool-{name}"))
}

fn open(d: &Path, max: u64) -> Spool {
    Spool::open(d, "http://r/hook", max).unwrap()
}

#[test]
fn append_peek_ack_survive_a_restart() {
    let d = dir("restart");
    let s = open(&d, 1 << 20);
    assert!(s.is_fresh());
    for i in 0..5 {
        s.append(
            &format!("id{i}"),
            10 + i,
            format!("{{\"n\":{i}}}").as_bytes(),
        )
        .unwrap();
    }
    let b = s.peek(2).unwrap().unwrap();
    assert_eq!(b.ids, ["id0", "id1"]);
    assert_eq!(b.bodies[1], b"{\"n\":1}");
    s.ack(b.end).unwrap();
    assert_eq!((s.stats().delivered, s.stats().pending_events), (2, 3));
    drop(s);
    // A crash mid-write leaves a partial line: it is cut at open.
    let q = std::fs::read_dir(&d)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("queue-"))
        .unwrap()
        .path();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&q)
        .unwrap()
        .write_all(b"id9\t19\t{\"par")
        .unwrap();
    let s = open(&d, 1 << 20);
    assert!(!s.is_fresh());
    assert_eq!(s.last_seq(), 14, "the newest whole line's seq");
    assert_eq!((s.stats().delivered, s.stats().pending_events), (2, 3));
    let b = s.peek(10).unwrap().unwrap();
    assert_eq!(b.ids, ["id2", "id3", "id4"]);
    s.ack(b.end).unwrap();
    assert!(s.peek(10).unwrap().is_none());
    s.append("id5", 15, b"{}").unwrap();
    assert_eq!(s.peek(10).unwrap().unwrap().ids, ["id5"]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn overflow_drops_the_oldest_and_the_count_survives_a_crash() {
    let d = dir("overflow");
    // Each line is 14 bytes (`idN\tN\t{"a":1}\n`); room for three.
    let s = open(&d, 42);
    let mut dropped = 0;
    for i in 0..5 {
        dropped += s.append(&format!("id{i}"), i, b"{\"a\":1}").unwrap();
    }
    assert_eq!(dropped, 2);
    assert_eq!(s.unreported(), (2, 2));
    assert_eq!(s.peek(10).unwrap().unwrap().ids, ["id2", "id3", "id4"]);
    // Killed before the overflow was reported: the restart still knows.
    drop(s);
    let s = open(&d, 42);
    assert_eq!(s.unreported(), (2, 2));
    s.mark_reported(2).unwrap();
    drop(s);
    let s = open(&d, 42);
    assert_eq!(s.unreported(), (0, 2));
    let st = s.stats();
    assert_eq!(
        (st.dropped, st.pending_events, st.pending_bytes),
        (2, 3, 42)
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn compaction_keeps_offsets_undelivered_events_and_the_newest_seq() {
    let d = dir("compact");
    let mut s = open(&d, 1 << 20);
    s.compact_after = 20;
    for i in 0..6 {
        s.append(&format!("id{i}"), 100 + i, b"{\"a\":1}").unwrap();
    }
    let b = s.peek(4).unwrap().unwrap();
    s.ack(b.end).unwrap();
    let queues: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("queue-"))
        .collect();
    assert_eq!(queues.len(), 1);
    assert_eq!(queues[0].file_name().to_string_lossy(), "queue-64.jsonl");
    drop(s);
    let mut s = open(&d, 1 << 20);
    s.compact_after = 20;
    assert_eq!(s.peek(10).unwrap().unwrap().ids, ["id4", "id5"]);
    // Everything delivered and compacted away: the state keeps the seq.
    let b = s.peek(10).unwrap().unwrap();
    s.ack(b.end).unwrap();
    drop(s);
    let s = open(&d, 1 << 20);
    assert!(s.peek(10).unwrap().is_none());
    assert_eq!(s.last_seq(), 105);
    assert!(!s.is_fresh());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn spools_of_older_versions_are_read() {
    let d = dir("legacy");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("queue-0.jsonl"),
        "a\t{\"seq\":3,\"id\":\"a\"}\nb\t{\"seq\":4,\"id\":\"b\"}\n",
    )
    .unwrap();
    std::fs::write(d.join("acked"), "21\n").unwrap();
    let s = open(&d, 1 << 20);
    assert!(!s.is_fresh());
    assert_eq!(s.last_seq(), 4);
    let b = s.peek(10).unwrap().unwrap();
    assert_eq!(b.ids, ["b"]);
    assert_eq!(b.bodies[0], b"{\"seq\":4,\"id\":\"b\"}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn disabled_is_kept_and_takes_nothing() {
    let d = dir("disabled");
    let s = open(&d, 1 << 20);
    s.disable(410).unwrap();
    s.append("id0", 1, b"{}").unwrap();
    assert!(s.peek(1).unwrap().is_none());
    drop(s);
    assert!(open(&d, 1 << 20).is_disabled());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn acks_are_written_late_but_never_lost_on_a_clean_stop() {
    let d = dir("late-acks");
    let mut s = open(&d, 1 << 20);
    for i in 0..4 {
        s.append(&format!("id{i}"), i + 1, b"{}").unwrap();
    }
    s.ack_persist_every = Duration::ZERO;
    let first = s.peek(1).unwrap().unwrap();
    s.ack(first.end).unwrap();
    assert_eq!(
        State::read(&d).unwrap().0.delivered,
        1,
        "due: written at once"
    );
    s.ack_persist_every = Duration::from_secs(3600);
    let second = s.peek(1).unwrap().unwrap();
    s.ack(second.end).unwrap();
    // What a crash now would find: the first ack only, so id1 would be delivered again
    // (at least once), never skipped.
    assert_eq!(State::read(&d).unwrap().0.delivered, 1, "deferred");
    assert_eq!(s.stats().delivered, 2);
    // Going idle writes it.
    s.persist_acks().unwrap();
    assert_eq!(State::read(&d).unwrap().0.delivered, 2);
    // So does dropping the spool (the daemon stopping).
    let third = s.peek(1).unwrap().unwrap();
    s.ack(third.end).unwrap();
    drop(s);
    let s = open(&d, 1 << 20);
    assert_eq!((s.stats().delivered, s.stats().pending_events), (3, 1));
    assert_eq!(s.peek(10).unwrap().unwrap().ids, ["id3"]);
}
