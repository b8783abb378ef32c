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

#[test]
fn write_session_is_decided_and_recorded_with_bytes() {
    let mut t = SftpTracker::default();
    let open = packet(wire::OPEN, 1, |b| {
        put_string(b, b"/tmp/f");
        b.put_u32(0x1a);
        b.put_u32(0);
    });
    let pkts = t.client_data(&open).unwrap();
    let op = pkts[0].op.clone().unwrap();
    assert_eq!(op.kind, CommandKind::FileWrite);
    assert_eq!(op.text, "/tmp/f");
    t.forwarded(&pkts[0]);
    let handle = packet(wire::HANDLE, 1, |b| put_string(b, b"h1"));
    let (fwd, recs) = t.server_data(&handle).unwrap();
    assert_eq!(fwd.len(), 1);
    assert!(recs.is_empty());
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
    assert!(pkts.iter().all(|p| p.op.is_none()));
    let ok = |id| packet(wire::STATUS, id, |b| b.put_u32(0));
    let (_, recs) = t.server_data(&ok(2)).unwrap();
    assert!(recs.is_empty());
    let (_, recs) = t.server_data(&ok(3)).unwrap();
    assert_eq!(
        recs,
        vec![Record::Command {
            kind: CommandKind::FileWrite,
            text: "/tmp/f: 5 bytes written".into(),
            exit_status: Some(0),
            duration_ms: match &recs[0] {
                Record::Command { duration_ms, .. } => *duration_ms,
                _ => unreachable!(),
            },
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
    assert_eq!(pkts[0].op.as_ref().unwrap().kind, CommandKind::FileRename);
    assert_eq!(pkts[0].op.as_ref().unwrap().text, "/a -> /b");
    assert_eq!(pkts[1].op.as_ref().unwrap().kind, CommandKind::FileRemove);
    assert_eq!(pkts[1].id, 5);
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
    assert_eq!(pkts[0].op.as_ref().unwrap().kind, CommandKind::FileRead);
    t.forwarded(&pkts[0]);
    t.server_data(&packet(wire::HANDLE, 1, |b| put_string(b, b"h")))
        .unwrap();
    let chmod = packet(wire::FSETSTAT, 2, |b| {
        put_string(b, b"h");
        b.put_u32(0x4);
        b.put_u32(0o777);
    });
    let pkts = t.client_data(&chmod).unwrap();
    let op = pkts[0].op.clone().unwrap();
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
    t.forwarded(&pkts[0]);
    t.server_data(&packet(wire::HANDLE, 1, |b| put_string(b, b"w")))
        .unwrap();
    let chmod = packet(wire::FSETSTAT, 2, |b| {
        put_string(b, b"w");
        b.put_u32(0x4);
        b.put_u32(0o644);
    });
    let pkts = t.client_data(&chmod).unwrap();
    assert!(pkts[0].op.is_none());
    let unknown = packet(wire::FSETSTAT, 3, |b| {
        put_string(b, b"nope");
        b.put_u32(0x4);
        b.put_u32(0o777);
    });
    let pkts = t.client_data(&unknown).unwrap();
    assert_eq!(pkts[0].op.as_ref().unwrap().text, "<unknown handle>");
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
    t.forwarded(&pkts[0]);
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
    t.forwarded(&pkts[0]);
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
