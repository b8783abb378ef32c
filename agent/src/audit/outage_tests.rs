//! The writer while the log cannot be written: what is refused, what is
//! held and written later, in order, and that the chain stays whole.

use std::{path::Path, sync::atomic::Ordering, time::Duration};

use super::{
    Admission, AuditOptions, EventKind, EventLog, EventSink, Fsync, Rotation, read_events, verify,
};

fn stopped(name: &str) -> EventKind {
    EventKind::DaemonStopped {
        instance: name.into(),
        reason: "test".into(),
        pid: 1,
    }
}

fn open(d: &Path) -> (EventLog, EventSink) {
    let opts = AuditOptions {
        fsync: Fsync::Never,
        ..AuditOptions::default()
    };
    EventLog::open(d, "host", opts, Rotation::default()).unwrap()
}

/// Waits (at most 10 s) until the log's writability is `want`.
async fn until_writable(sink: &EventSink, want: bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while sink.health().writable() != want {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
}

/// `(type, instance)` of each event in the log.
fn kinds(d: &Path) -> Vec<(String, String)> {
    read_events(d)
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["type"].as_str().unwrap_or_default().to_string(),
                v["instance"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn records_wait_out_an_outage_in_order_and_refused_ones_leave_nothing() {
    let d = crate::test_dir::TestDir::new("outage");
    let (log, sink) = open(&d);
    let full = log.full_switch();
    let run = tokio::spawn(log.run());

    assert_eq!(sink.emit_confirmed(stopped("a")).await.unwrap(), 1);
    full.store(true, Ordering::Relaxed);
    // Queued before the writer knew: kept, not lost.
    sink.emit(stopped("b")).await.unwrap();
    until_writable(&sink, false).await;
    let e = sink.emit_confirmed(stopped("refused")).await.unwrap_err();
    assert!(e.to_string().contains("No space left on device"), "{e}");
    assert!(sink.health().admit(Admission::Session).is_err());
    assert!(sink.health().admit(Admission::Request).is_err());
    sink.emit(stopped("c")).await.unwrap();
    let v = sink.health().view();
    assert!(!v.writable && v.error.is_some() && v.failing_since.is_some());

    full.store(false, Ordering::Relaxed);
    until_writable(&sink, true).await;
    assert!(sink.health().admit(Admission::Session).is_ok());
    sink.emit(stopped("d")).await.unwrap();
    drop(sink);
    run.await.unwrap();

    let r = verify(&d, None).unwrap();
    assert!(r.problem.is_none(), "{r}");
    let k = kinds(&d);
    let names: Vec<&str> = k
        .iter()
        .map(|(t, i)| if i.is_empty() { t.as_str() } else { i.as_str() })
        .collect();
    assert_eq!(names, ["a", "b", "c", "audit_write_failed", "d"], "{k:?}");
    let outage = read_events(&d)
        .unwrap()
        .into_iter()
        .find(|v| v["type"] == "audit_write_failed")
        .unwrap();
    assert_eq!(outage["records_held"], 2);
    assert_eq!(outage["refused_sessions"], 1);
    assert_eq!(outage["refused_requests"], 1);
    assert!(
        outage["error"].as_str().unwrap().contains("No space left"),
        "{outage}"
    );
    // The JSONL sink has every record, with the log's seqs.
    let plain = std::fs::read_to_string(d.join("events.jsonl")).unwrap();
    let seqs: Vec<u64> = plain
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[tokio::test]
async fn a_stop_during_an_outage_logs_what_it_holds_and_leaves_the_chain_whole() {
    let d = crate::test_dir::TestDir::new("outage-stop");
    let (log, sink) = open(&d);
    let full = log.full_switch();
    let run = tokio::spawn(log.run());
    sink.emit_confirmed(stopped("a")).await.unwrap();
    full.store(true, Ordering::Relaxed);
    sink.emit(stopped("b")).await.unwrap();
    until_writable(&sink, false).await;
    tokio::time::pause();
    drop(sink);
    // The writer retries for a while (paused time: at once), then gives up.
    run.await.unwrap();
    tokio::time::resume();
    let r = verify(&d, None).unwrap();
    assert!(r.problem.is_none(), "{r}");
    assert_eq!(kinds(&d).len(), 1);
    std::fs::remove_dir_all(&d).unwrap();
}

#[tokio::test]
async fn the_event_file_is_caught_up_from_the_log_at_start() {
    let d = crate::test_dir::TestDir::new("plain-catchup");
    let (log, sink) = open(&d);
    let run = tokio::spawn(log.run());
    for i in 0..5 {
        sink.emit(stopped(&format!("e{i}"))).await.unwrap();
    }
    drop(sink);
    run.await.unwrap();
    // A crash lost the last two lines (and cut the one before).
    let path = d.join("events.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(
        &path,
        format!("{}\n{}\n{}", lines[0], lines[1], &lines[2][..10]),
    )
    .unwrap();

    let (log, sink) = open(&d);
    let run = tokio::spawn(log.run());
    sink.emit(stopped("after")).await.unwrap();
    drop(sink);
    run.await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let seqs: Vec<u64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    // Every event of the log, checkpoints aside (they are no events).
    let logged: Vec<u64> = read_events(&d)
        .unwrap()
        .iter()
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, logged);
    std::fs::remove_dir_all(&d).unwrap();
}
