//! Chain, rotation, checkpoints, recovery and tamper detection, on files.

use std::path::{Path, PathBuf};

use super::{
    AuditOptions, Event, EventKind, Fsync, Tamper, record::sha256_hex, verify, writer::Chain,
};

fn dir(name: &str) -> crate::test_dir::TestDir {
    crate::test_dir::TestDir::new(&format!("audit-{name}"))
}

fn opts(segment_bytes: u64) -> AuditOptions {
    AuditOptions {
        fsync: Fsync::Never,
        segment_bytes,
        ..AuditOptions::default()
    }
}

fn ev(i: usize) -> Event {
    Event::now(
        "host",
        EventKind::DaemonStopped {
            instance: format!("i{i}"),
            reason: "test".into(),
            pid: 1,
        },
    )
}

/// Writes `n` events, then a checkpoint if `seal`; the chain is dropped
/// without a final checkpoint otherwise (a crash).
fn write(d: &Path, n: usize, seal: bool, segment_bytes: u64) {
    let mut c = Chain::open(d, "host", opts(segment_bytes)).unwrap();
    for i in 0..n {
        c.append_event(&ev(i)).unwrap();
    }
    if seal {
        c.checkpoint().unwrap();
    }
}

fn segment(d: &Path, n: u32) -> PathBuf {
    d.join("audit").join(super::segment::name(n))
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn put(p: &Path, lines: &[String]) {
    std::fs::write(p, lines.join("\n") + "\n").unwrap();
}

/// Re-hashes a line whose content was changed (a careful forger).
fn rehash(line: &str) -> String {
    let cut = line.rfind(",\"hash\":\"").unwrap();
    let canonical = format!("{}}}", &line[..cut]);
    format!(
        "{},\"hash\":\"{}\"}}",
        &line[..cut],
        sha256_hex(canonical.as_bytes())
    )
}

#[test]
fn chain_continues_across_rotation_and_restart() {
    let d = dir("rotate");
    write(&d, 40, true, 700);
    write(&d, 5, true, 700);
    let r = verify(&d, None).unwrap();
    assert!(r.problem.is_none(), "{r}");
    assert!(r.segments > 3, "{r}");
    assert_eq!(
        (r.records, r.checkpoints, r.last_seq, r.unsealed),
        (47, 2, 47, 0)
    );
    // Every segment but the last respects the size limit.
    let sizes: Vec<u64> = (1..r.segments as u32)
        .map(|n| std::fs::metadata(segment(&d, n)).unwrap().len())
        .collect();
    assert!(sizes.iter().all(|s| *s <= 700), "{sizes:?}");
    assert!(r.to_string().starts_with("ok: 47 records in"), "{r}");
}

#[test]
fn checkpoints_verify_against_the_right_key_only() {
    let d = dir("sig");
    write(&d, 3, true, 1 << 20);
    let pk = super::public_key(&d).unwrap();
    assert_eq!(pk.len(), 64);
    let r = verify(&d, Some(&pk)).unwrap();
    assert!(r.problem.is_none(), "{r}");
    assert_eq!(r.key_source, "--pubkey");
    let other = dir("sig-other");
    write(&other, 1, true, 1 << 20);
    let wrong = super::public_key(&other).unwrap();
    let r = verify(&d, Some(&wrong)).unwrap();
    let p = r.problem.unwrap();
    assert_eq!((p.kind, p.line, p.seq), (Tamper::BadSignature, 4, Some(4)));
}

#[test]
fn a_crash_tail_is_reported_unsealed_then_sealed_on_restart() {
    let d = dir("crash");
    write(&d, 3, true, 1 << 20);
    write(&d, 0, false, 1 << 20);
    {
        let mut c = Chain::open(&d, "host", opts(1 << 20)).unwrap();
        for i in 0..5 {
            c.append_event(&ev(i)).unwrap();
        }
        // Dropped without a checkpoint: a crash.
    }
    let r = verify(&d, None).unwrap();
    assert!(r.problem.is_none(), "{r}");
    assert_eq!(r.unsealed, 5);
    assert!(r.to_string().contains("unsealed: 5 records"), "{r}");
    write(&d, 0, false, 1 << 20);
    let r = verify(&d, None).unwrap();
    assert!(r.problem.is_none(), "{r}");
    // The sealing checkpoint (seq 10), then the event saying so.
    let all = lines(&segment(&d, 1));
    let sealed: serde_json::Value = serde_json::from_str(all.last().unwrap()).unwrap();
    assert_eq!(sealed["type"], "audit_tail_sealed");
    assert_eq!(
        (sealed["from_seq"].as_u64(), sealed["to_seq"].as_u64()),
        (Some(5), Some(9))
    );
    let cp: serde_json::Value = serde_json::from_str(&all[all.len() - 2]).unwrap();
    assert_eq!(
        (cp["type"].as_str(), cp["covers_seq"].as_u64()),
        (Some("checkpoint"), Some(9))
    );
}

#[test]
fn a_partial_last_line_is_cut_off_at_restart() {
    let d = dir("partial");
    write(&d, 4, true, 1 << 20);
    let seg = segment(&d, 1);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(b"{\"seq\":6,\"prev\":\"ab");
    std::fs::write(&seg, &bytes).unwrap();
    let r = verify(&d, None).unwrap();
    assert!(r.problem.is_none(), "{r}");
    assert!(r.partial.is_some(), "{r}");
    write(&d, 0, false, 1 << 20);
    let r = verify(&d, None).unwrap();
    assert!(r.problem.is_none() && r.partial.is_none(), "{r}");
    let last: serde_json::Value = serde_json::from_str(lines(&seg).last().unwrap()).unwrap();
    assert_eq!(last["type"], "audit_partial_record_dropped");
    assert_eq!(last["seq"], 6, "the dropped line's seq is reused");
    assert_eq!(last["bytes"], 19);
}

/// A sealed log of 10 events (seq 1..=10, checkpoint 11), tampered by `f`.
fn tampered(name: &str, f: impl FnOnce(&mut Vec<String>)) -> super::Problem {
    let d = dir(name);
    write(&d, 10, true, 1 << 20);
    let seg = segment(&d, 1);
    let mut l = lines(&seg);
    f(&mut l);
    put(&seg, &l);
    let r = verify(&d, None).unwrap();
    r.problem
        .clone()
        .unwrap_or_else(|| panic!("{name}: not detected: {r}"))
}

#[test]
fn each_tampering_is_named() {
    let p = tampered("edit", |l| l[4] = l[4].replace("\"i4\"", "\"i9\""));
    assert_eq!((p.kind, p.line, p.seq), (Tamper::Edited, 5, Some(5)));
    let p = tampered("delete", |l| {
        l.remove(4);
    });
    assert_eq!((p.kind, p.line, p.seq), (Tamper::Deleted, 5, Some(6)));
    let p = tampered("swap", |l| l.swap(3, 4));
    assert_eq!((p.kind, p.line, p.seq), (Tamper::Reordered, 4, Some(5)));
    let p = tampered("forge", |l| {
        let forged = rehash(&l[4].replace("\"i4\"", "\"forged\""));
        l.insert(4, forged);
    });
    assert_eq!(
        (p.kind, p.line, p.seq),
        (Tamper::Inserted, 5, Some(5)),
        "{}",
        p.detail
    );
    let p = tampered("dup", |l| {
        let copy = l[2].clone();
        l.insert(3, copy);
    });
    assert_eq!((p.kind, p.line), (Tamper::Inserted, 4));
    let p = tampered("truncate", |l| l.truncate(7));
    assert_eq!(
        (p.kind, p.line, p.seq),
        (Tamper::Truncated, 8, Some(8)),
        "{}",
        p.detail
    );
    let p = tampered("sig", |l| {
        let cp = &l[10];
        let i = cp.find("\"signature\":\"").unwrap() + 13;
        let flipped = if &cp[i..=i] == "0" { "1" } else { "0" };
        l[10] = rehash(&format!("{}{}{}", &cp[..i], flipped, &cp[i + 1..]));
    });
    assert_eq!(
        (p.kind, p.line, p.seq),
        (Tamper::BadSignature, 11, Some(11))
    );
    let p = tampered("sig-plain", |l| {
        l[10] = l[10].replacen("\"signature\":\"", "\"signature\":\"0", 1)
    });
    assert_eq!((p.kind, p.line), (Tamper::Edited, 11));
    let p = tampered("first", |l| {
        l.remove(0);
    });
    assert_eq!((p.kind, p.line, p.seq), (Tamper::Deleted, 1, Some(2)));
}
