use super::*;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("il-spool-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn append_peek_ack_survive_a_restart() {
    let d = dir("restart");
    let s = Spool::open(&d, 1 << 20).unwrap();
    for i in 0..5 {
        s.append(&format!("id{i}"), format!("{{\"n\":{i}}}").as_bytes())
            .unwrap();
    }
    let b = s.peek(2).unwrap().unwrap();
    assert_eq!(b.ids, ["id0", "id1"]);
    assert_eq!(b.bodies[1], b"{\"n\":1}");
    s.ack(b.end).unwrap();
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
        .write_all(b"id9\t{\"par")
        .unwrap();
    let s = Spool::open(&d, 1 << 20).unwrap();
    let b = s.peek(10).unwrap().unwrap();
    assert_eq!(b.ids, ["id2", "id3", "id4"]);
    s.ack(b.end).unwrap();
    assert!(s.peek(10).unwrap().is_none());
    s.append("id5", b"{}").unwrap();
    assert_eq!(s.peek(10).unwrap().unwrap().ids, ["id5"]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn overflow_drops_the_oldest_and_counts() {
    let d = dir("overflow");
    // Each line is 12 bytes (`idN\t{"a":1}\n`); room for three.
    let s = Spool::open(&d, 36).unwrap();
    for i in 0..5 {
        s.append(&format!("id{i}"), b"{\"a\":1}").unwrap();
    }
    assert_eq!(s.take_dropped(), 2);
    assert_eq!(s.take_dropped(), 0);
    assert_eq!(s.peek(10).unwrap().unwrap().ids, ["id2", "id3", "id4"]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn compaction_keeps_offsets_and_undelivered_events() {
    let d = dir("compact");
    let mut s = Spool::open(&d, 1 << 20).unwrap();
    s.compact_after = 20;
    for i in 0..6 {
        s.append(&format!("id{i}"), b"{\"a\":1}").unwrap();
    }
    let b = s.peek(4).unwrap().unwrap();
    s.ack(b.end).unwrap();
    let queues: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("queue-"))
        .collect();
    assert_eq!(queues.len(), 1);
    assert_eq!(queues[0].file_name().to_string_lossy(), "queue-48.jsonl");
    drop(s);
    let s = Spool::open(&d, 1 << 20).unwrap();
    assert_eq!(s.peek(10).unwrap().unwrap().ids, ["id4", "id5"]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn disabled_is_kept_and_takes_nothing() {
    let d = dir("disabled");
    let s = Spool::open(&d, 1 << 20).unwrap();
    s.disable(410).unwrap();
    s.append("id0", b"{}").unwrap();
    assert!(s.peek(1).unwrap().is_none());
    drop(s);
    assert!(Spool::open(&d, 1 << 20).unwrap().is_disabled());
    let _ = std::fs::remove_dir_all(&d);
}
