//! The SFTP fuzz target's driver and seeds (feature `fuzzing`): a script
//! of client and server chunks fed to one [`SftpTracker`] as the channel
//! relay feeds it, every client packet decided (all allowed) and forwarded.

use bytes::{BufMut, BytesMut};

use super::{SftpTracker, path::CWD_PROBE_ID, wire};

/// Runs `script`: chunks of `[side][len][len bytes]`, side even for the
/// client, odd for the server. Stops where the tracker gives up on the
/// stream (a packet over the size limit), as the relay does.
pub(crate) fn run(script: &[u8]) {
    let mut t = SftpTracker::default();
    let mut rest = script;
    while let [side, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (chunk, after) = tail.split_at(n);
        rest = after;
        if side % 2 == 0 {
            let Ok(packets) = t.client_data(chunk) else {
                return;
            };
            for p in packets {
                let ops = t.ops(&p).unwrap_or_default();
                let _ = t.forwarded(&p, ops);
            }
        } else if t.server_data(chunk).is_err() {
            return;
        }
    }
    let _ = t.unfinished();
}

fn packet(kind: u8, id: u32, fields: &[&[u8]]) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_u8(kind);
    body.put_u32(id);
    for f in fields {
        body.extend_from_slice(f);
    }
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

fn string(s: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    wire::put_string(&mut b, s);
    b.to_vec()
}

/// Appends `bytes` to `script` as chunks from `side` (0 client, 1 server).
fn say(script: &mut Vec<u8>, side: u8, bytes: &[u8]) {
    for chunk in bytes.chunks(255) {
        script.push(side);
        script.push(u8::try_from(chunk.len()).unwrap_or(u8::MAX));
        script.extend_from_slice(chunk);
    }
}

/// An upload and a download as the sftp tests run them (INIT, the
/// working-directory probe's answer, OPEN/WRITE/CLOSE, OPEN/READ/CLOSE,
/// RENAME, REMOVE, MKDIR), each with the server's reply.
pub(crate) fn seeds() -> Vec<Vec<u8>> {
    let attrs = 0u32.to_be_bytes();
    let ok = [0u32.to_be_bytes().as_slice(), &string(b"ok"), &string(b"")].concat();
    let mut upload = Vec::new();
    say(&mut upload, 0, &packet(wire::INIT, 3, &[]));
    let mut version = vec![0, 0, 0, 5, 2];
    version.extend_from_slice(&3u32.to_be_bytes());
    say(&mut upload, 1, &version);
    let name = [
        1u32.to_be_bytes().as_slice(),
        &string(b"/home/alice"),
        &string(b"/home/alice"),
        &attrs,
    ]
    .concat();
    say(&mut upload, 1, &packet(wire::NAME, CWD_PROBE_ID, &[&name]));
    let open_w = [
        string(b"up.txt"),
        0x1au32.to_be_bytes().to_vec(),
        attrs.to_vec(),
    ]
    .concat();
    say(&mut upload, 0, &packet(wire::OPEN, 1, &[&open_w]));
    say(&mut upload, 1, &packet(wire::HANDLE, 1, &[&string(b"h1")]));
    let write = [string(b"h1"), 0u64.to_be_bytes().to_vec(), string(b"hello")].concat();
    say(&mut upload, 0, &packet(wire::WRITE, 2, &[&write]));
    say(&mut upload, 1, &packet(wire::STATUS, 2, &[&ok]));
    say(&mut upload, 0, &packet(wire::CLOSE, 3, &[&string(b"h1")]));
    say(&mut upload, 1, &packet(wire::STATUS, 3, &[&ok]));
    let mut download = upload.clone();
    let open_r = [
        string(b"/etc/hostname"),
        1u32.to_be_bytes().to_vec(),
        attrs.to_vec(),
    ]
    .concat();
    say(&mut download, 0, &packet(wire::OPEN, 4, &[&open_r]));
    say(
        &mut download,
        1,
        &packet(wire::HANDLE, 4, &[&string(b"h2")]),
    );
    let read = [
        string(b"h2"),
        0u64.to_be_bytes().to_vec(),
        4096u32.to_be_bytes().to_vec(),
    ]
    .concat();
    say(&mut download, 0, &packet(wire::READ, 5, &[&read]));
    say(
        &mut download,
        1,
        &packet(wire::DATA, 5, &[&string(b"runner\n")]),
    );
    say(&mut download, 0, &packet(wire::CLOSE, 6, &[&string(b"h2")]));
    say(&mut download, 1, &packet(wire::STATUS, 6, &[&ok]));
    let mut changes = upload.clone();
    let rename = [string(b"up.txt"), string(b"../done.txt")].concat();
    say(&mut changes, 0, &packet(wire::RENAME, 7, &[&rename]));
    say(&mut changes, 1, &packet(wire::STATUS, 7, &[&ok]));
    say(
        &mut changes,
        0,
        &packet(wire::REMOVE, 8, &[&string(b"/tmp/x")]),
    );
    say(
        &mut changes,
        0,
        &packet(wire::MKDIR, 9, &[&string(b"d"), &attrs]),
    );
    say(&mut changes, 1, &packet(wire::STATUS, 8, &[&ok]));
    vec![upload, download, changes]
}
