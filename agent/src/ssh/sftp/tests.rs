use bytes::{BufMut, BytesMut};

use super::{wire::put_string, *};

fn packet(kind: u8, id: u32, fill: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut body = BytesMut::new();
    body.put_u8(kind);
    body.put_u32(id);
    fill(&mut body);
    let mut out = BytesMut::new();
    out.put_u32(body.len() as u32);
    out.extend_from_slice(&body);
    out.freeze()
}

/// The only operation `p` asks for.
fn one(t: &SftpTracker, p: &ClientPacket) -> FileOp {
    let ops = t.ops(p).unwrap();
    assert_eq!(ops.len(), 1, "{ops:?}");
    ops.into_iter().next().unwrap()
}

/// Forwards `p` with its operations.
fn forward(t: &mut SftpTracker, p: &ClientPacket) -> Option<Bytes> {
    let ops = t.ops(p).unwrap();
    t.forwarded(p, ops)
}

#[test]
fn write_session_is_decided_and_recorded_with_bytes() {
    let mut t = SftpTracker::default();
    let open = packet(wire::OPEN, 1, |b| {
        put_string(b, b"/tmp/f");
        b.put_u32(0x1a);
        b.put_u32(0);
    });
    let pkts = t.client_data(&open).unwrap();
    let op = one(&t, &pkts[0]);
    assert_eq!(op.kind, CommandKind::FileWrite);
    assert_eq!(op.text, "/tmp/f");
    forward(&mut t, &pkts[0]);
    let handle = packet(wire::HANDLE, 1, |b| put_string(b, b"h1"));
    let from = t.server_data(&handle).unwrap();
    assert_eq!(from.packets.len(), 1);
    assert!(from.records.is_empty());
    let write = packet(wire::WRITE, 2, |b| {
        put_string(b, b"h1");
        b.put_u64(0);
        put_string(b, b"hello");
    });
    let close = packet(wire::CLOSE, 3, |b| put_string(b, b"h1"));
    let mut both = write.to_vec();
    both.extend_from_slice(&close);
    let pkts = t.client_data(&both).unwrap();
    assert_eq!(pkts.len(), 2);
    assert!(pkts.iter().all(|p| t.ops(p).unwrap().is_empty()));
    let ok = |id| packet(wire::STATUS, id, |b| b.put_u32(0));
    assert!(t.server_data(&ok(2)).unwrap().records.is_empty());
    let recs = t.server_data(&ok(3)).unwrap().records;
    assert_eq!(
        recs,
        vec![Record::Command {
            kind: CommandKind::FileWrite,
            text: "/tmp/f: 5 bytes written".into(),
            exit_status: Some(0),
            exit_signal: None,
            duration_ms: match &recs[0] {
                Record::Command { duration_ms, .. } => *duration_ms,
                _ => unreachable!(),
            },
            recording: None,
        }]
    );
}

#[test]
fn rename_and_remove_are_file_ops() {
    let mut t = SftpTracker::default();
    let ren = packet(wire::EXTENDED, 4, |b| {
        put_string(b, b"posix-rename@openssh.com");
        put_string(b, b"/a");
        put_string(b, b"/b");
    });
    let rm = packet(wire::REMOVE, 5, |b| put_string(b, b"/c"));
    let mut both = ren.to_vec();
    both.extend_from_slice(&rm);
    let pkts = t.client_data(&both).unwrap();
    let ren = t.ops(&pkts[0]).unwrap();
    let texts: Vec<_> = ren.iter().map(|o| (o.kind, o.text.as_str())).collect();
    assert_eq!(
        texts,
        [
            (CommandKind::FileRename, "/a"),
            (CommandKind::FileRename, "/b")
        ],
        "each path of a rename is decided"
    );
    assert_eq!(one(&t, &pkts[1]).kind, CommandKind::FileRemove);
    assert_eq!(pkts[1].id, 5);
    // Both are recorded when the rename succeeds.
    t.forwarded(&pkts[0], ren);
    let recs = t
        .server_data(&packet(wire::STATUS, 4, |b| b.put_u32(0)))
        .unwrap()
        .records;
    let texts: Vec<_> = recs
        .iter()
        .map(|r| match r {
            Record::Command { text, .. } => text.as_str(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(texts, ["/a", "/b"]);
}

/// A tracker past INIT whose server said its working directory is `cwd`.
fn in_dir(cwd: &str) -> SftpTracker {
    let mut t = SftpTracker::default();
    let init = t
        .client_data(&packet(wire::INIT, 3, |_| {}))
        .unwrap()
        .remove(0);
    let probe = forward(&mut t, &init).expect("a probe follows INIT");
    let (kind, mut r) = wire::Reader::new(&probe).unwrap();
    assert_eq!((kind, r.u32()), (wire::REALPATH, Some(u32::MAX)));
    let version = packet(2, 3, |_| {});
    let name = packet(wire::NAME, u32::MAX, |b| {
        b.put_u32(1);
        put_string(b, cwd.as_bytes());
        put_string(b, cwd.as_bytes());
        b.put_u32(0);
    });
    let mut both = version.to_vec();
    both.extend_from_slice(&name);
    let from = t.server_data(&both).unwrap();
    assert_eq!(
        from.packets,
        vec![version],
        "the probe's reply is interlock's"
    );
    assert!(from.cwd_settled);
    t
}

#[test]
fn paths_are_decided_absolute_and_normal() {
    let mut t = SftpTracker::default();
    let rel = packet(wire::OPEN, 1, |b| {
        put_string(b, b"../../etc/cron.d/x");
        b.put_u32(0x1a);
        b.put_u32(0);
    });
    let pkt = t.client_data(&rel).unwrap().remove(0);
    assert_eq!(t.ops(&pkt).unwrap_err(), Unresolved::NoCwd, "before INIT");
    let mut t = in_dir("/root/work");
    let pkt = t.client_data(&rel).unwrap().remove(0);
    assert_eq!(one(&t, &pkt).text, "/etc/cron.d/x");
    let abs = packet(wire::MKDIR, 2, |b| {
        put_string(b, b"/tmp/../etc//x/.");
        b.put_u32(0);
    });
    let pkt = t.client_data(&abs).unwrap().remove(0);
    assert_eq!(one(&t, &pkt).text, "/etc/x");
    let link = packet(wire::SYMLINK, 3, |b| {
        put_string(b, b"/etc/shadow");
        put_string(b, b"l");
    });
    let pkt = t.client_data(&link).unwrap().remove(0);
    let texts: Vec<_> = t.ops(&pkt).unwrap().into_iter().map(|o| o.text).collect();
    assert_eq!(texts, ["/etc/shadow", "/root/work/l"]);
}

#[test]
fn relative_paths_wait_for_the_working_directory() {
    let mut t = SftpTracker::default();
    let init = t
        .client_data(&packet(wire::INIT, 3, |_| {}))
        .unwrap()
        .remove(0);
    assert!(forward(&mut t, &init).is_some());
    let rel = packet(wire::REMOVE, 1, |b| put_string(b, b"f"));
    let pkt = t.client_data(&rel).unwrap().remove(0);
    assert_eq!(t.ops(&pkt).unwrap_err(), Unresolved::Pending);
    let clash = packet(wire::REMOVE, u32::MAX, |b| put_string(b, b"/f"));
    let clash = t.client_data(&clash).unwrap().remove(0);
    assert_eq!(t.ops(&clash).unwrap_err(), Unresolved::ReservedId);
    // The server refuses the probe: relative paths are refused.
    let refused = packet(wire::STATUS, u32::MAX, |b| b.put_u32(4));
    let from = t.server_data(&refused).unwrap();
    assert!(from.cwd_settled && from.packets.is_empty());
    assert_eq!(t.ops(&pkt).unwrap_err(), Unresolved::NoCwd);
    assert_eq!(one(&t, &clash).text, "/f", "the id is free again");
}

#[test]
fn denial_is_a_status_packet() {
    let p = permission_denied(9, "interlock: blocked");
    let (kind, mut r) = wire::Reader::new(&p).unwrap();
    assert_eq!(kind, wire::STATUS);
    assert_eq!(r.u32(), Some(9));
    assert_eq!(r.u32(), Some(wire::FX_PERMISSION_DENIED));
}

#[test]
fn fsetstat_on_a_read_handle_is_a_write() {
    let mut t = SftpTracker::default();
    let open = packet(wire::OPEN, 1, |b| {
        put_string(b, b"/etc/motd");
        b.put_u32(wire::FXF_READ);
        b.put_u32(0);
    });
    let pkts = t.client_data(&open).unwrap();
    assert_eq!(one(&t, &pkts[0]).kind, CommandKind::FileRead);
    forward(&mut t, &pkts[0]);
    t.server_data(&packet(wire::HANDLE, 1, |b| put_string(b, b"h")))
        .unwrap();
    let chmod = packet(wire::FSETSTAT, 2, |b| {
        put_string(b, b"h");
        b.put_u32(0x4);
        b.put_u32(0o777);
    });
    let pkts = t.client_data(&chmod).unwrap();
    let op = one(&t, &pkts[0]);
    assert_eq!(
        (op.kind, op.text.as_str()),
        (CommandKind::FileWrite, "/etc/motd")
    );
}

#[test]
fn fsetstat_on_a_write_handle_is_part_of_the_write() {
    let mut t = SftpTracker::default();
    let open = packet(wire::OPEN, 1, |b| {
        put_string(b, b"/tmp/up");
        b.put_u32(0x1a);
        b.put_u32(0);
    });
    let pkts = t.client_data(&open).unwrap();
    forward(&mut t, &pkts[0]);
    t.server_data(&packet(wire::HANDLE, 1, |b| put_string(b, b"w")))
        .unwrap();
    let chmod = packet(wire::FSETSTAT, 2, |b| {
        put_string(b, b"w");
        b.put_u32(0x4);
        b.put_u32(0o644);
    });
    let pkts = t.client_data(&chmod).unwrap();
    assert!(t.ops(&pkts[0]).unwrap().is_empty());
    let unknown = packet(wire::FSETSTAT, 3, |b| {
        put_string(b, b"nope");
        b.put_u32(0x4);
        b.put_u32(0o777);
    });
    let pkts = t.client_data(&unknown).unwrap();
    assert_eq!(one(&t, &pkts[0]).text, "<unknown handle>");
}

#[test]
fn a_transfer_cut_short_is_recorded_as_unfinished() {
    let mut t = SftpTracker::default();
    let open = packet(wire::OPEN, 1, |b| {
        put_string(b, b"/tmp/big");
        b.put_u32(0x1a);
        b.put_u32(0);
    });
    let pkts = t.client_data(&open).unwrap();
    forward(&mut t, &pkts[0]);
    t.server_data(&packet(wire::HANDLE, 1, |b| put_string(b, b"h1")))
        .unwrap();
    let write = packet(wire::WRITE, 2, |b| {
        put_string(b, b"h1");
        b.put_u64(0);
        put_string(b, b"partial");
    });
    t.client_data(&write).unwrap();
    let mkdir = packet(wire::MKDIR, 3, |b| {
        put_string(b, b"/tmp/d");
        b.put_u32(0);
    });
    let pkts = t.client_data(&mkdir).unwrap();
    forward(&mut t, &pkts[0]);
    let recs = t.unfinished();
    let texts: Vec<_> = recs
        .iter()
        .map(|r| match r {
            Record::Command {
                text, exit_status, ..
            } => (text.clone(), *exit_status),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(
        texts,
        vec![
            ("/tmp/big: 7 bytes written (unfinished)".to_string(), None),
            ("/tmp/d (unfinished)".to_string(), None),
        ]
    );
    assert!(t.unfinished().is_empty());
}
