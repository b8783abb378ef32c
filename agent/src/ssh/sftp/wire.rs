//! SFTP v3 framing and the few fields interlock reads (draft-ietf-secsh-filexfer-02).

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub(super) const INIT: u8 = 1;
pub(super) const OPEN: u8 = 3;
pub(super) const CLOSE: u8 = 4;
pub(super) const READ: u8 = 5;
pub(super) const WRITE: u8 = 6;
pub(super) const SETSTAT: u8 = 9;
pub(super) const FSETSTAT: u8 = 10;
pub(super) const REMOVE: u8 = 13;
pub(super) const MKDIR: u8 = 14;
pub(super) const RMDIR: u8 = 15;
pub(super) const REALPATH: u8 = 16;
pub(super) const RENAME: u8 = 18;
pub(super) const SYMLINK: u8 = 20;
pub(super) const STATUS: u8 = 101;
pub(super) const HANDLE: u8 = 102;
pub(super) const DATA: u8 = 103;
pub(super) const NAME: u8 = 104;
pub(super) const EXTENDED: u8 = 200;

pub(super) const FXF_READ: u32 = 0x1;
pub(super) const FX_PERMISSION_DENIED: u32 = 3;

/// The largest packet accepted (OpenSSH uses 256 KiB plus headers).
const MAX_PACKET: usize = 1024 * 1024;

/// A framing error: the stream cannot be followed any more.
#[derive(Debug, thiserror::Error)]
#[error("sftp packet of {0} bytes is over the {MAX_PACKET} byte limit")]
pub(crate) struct TooLarge(usize);

/// Splits a byte stream into whole SFTP packets.
#[derive(Default)]
pub(super) struct Framer {
    buf: BytesMut,
}

impl Framer {
    /// Adds bytes; returns every whole packet now available (length prefix included).
    pub(super) fn push(&mut self, data: &[u8]) -> Result<Vec<Bytes>, TooLarge> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(head) = self.buf.get(..4) {
            let len = u32::from_be_bytes(<[u8; 4]>::try_from(head).unwrap_or_default()) as usize;
            if len > MAX_PACKET {
                return Err(TooLarge(len));
            }
            if self.buf.len() < 4 + len {
                break;
            }
            out.push(self.buf.split_to(4 + len).freeze());
        }
        Ok(out)
    }
}

/// A cursor over one packet's body after the length prefix.
pub(super) struct Reader {
    body: Bytes,
}

impl Reader {
    /// Reads a packet: its type and the rest.
    pub(super) fn new(packet: &Bytes) -> Option<(u8, Reader)> {
        let mut body = packet.slice(4.min(packet.len())..);
        if body.is_empty() {
            return None;
        }
        let kind = body.get_u8();
        Some((kind, Reader { body }))
    }

    pub(super) fn u32(&mut self) -> Option<u32> {
        (self.body.remaining() >= 4).then(|| self.body.get_u32())
    }

    pub(super) fn u64(&mut self) -> Option<u64> {
        (self.body.remaining() >= 8).then(|| self.body.get_u64())
    }

    pub(super) fn bytes(&mut self) -> Option<Bytes> {
        let len = self.u32()? as usize;
        (self.body.remaining() >= len).then(|| self.body.split_to(len))
    }

    pub(super) fn string(&mut self) -> Option<String> {
        self.bytes()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }
}

/// An SSH_FXP_STATUS reply.
pub(super) fn status(id: u32, code: u32, message: &str) -> Bytes {
    let mut body = BytesMut::new();
    body.put_u8(STATUS);
    body.put_u32(id);
    body.put_u32(code);
    put_string(&mut body, message.as_bytes());
    put_string(&mut body, b"en");
    let mut out = BytesMut::with_capacity(4 + body.len());
    out.put_u32(u32::try_from(body.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(&body);
    out.freeze()
}

pub(super) fn put_string(b: &mut BytesMut, s: &[u8]) {
    b.put_u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
    b.extend_from_slice(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_through_framer_and_reader() {
        let pkt = status(7, FX_PERMISSION_DENIED, "no");
        let mut f = Framer::default();
        let (a, b) = pkt.split_at(5);
        assert!(f.push(a).unwrap().is_empty());
        let pkts = f.push(b).unwrap();
        assert_eq!(pkts.len(), 1);
        let (kind, mut r) = Reader::new(&pkts[0]).unwrap();
        assert_eq!(kind, STATUS);
        assert_eq!(r.u32(), Some(7));
        assert_eq!(r.u32(), Some(FX_PERMISSION_DENIED));
        assert_eq!(r.string().as_deref(), Some("no"));
        assert_eq!(r.string().as_deref(), Some("en"));
        assert_eq!(r.u32(), None);
    }

    #[test]
    fn malformed_input_is_refused_or_waits() {
        let mut f = Framer::default();
        assert!(f.push(&[0xff, 0xff, 0xff, 0xff]).is_err());
        let mut f = Framer::default();
        assert!(f.push(&[0, 0, 0, 9, 1]).unwrap().is_empty());
        let short = Bytes::from_static(&[0, 0, 0, 5, 3, 0, 0]);
        let (_, mut r) = Reader::new(&short).unwrap();
        assert_eq!(r.u32(), None);
        assert!(Reader::new(&Bytes::from_static(&[0, 0])).is_none());
    }
}
