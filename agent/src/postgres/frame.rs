//! Framing: splits a byte stream into PostgreSQL messages, checking each
//! declared length against the protocol minimum and a configured maximum
//! before buffering the body. Memory grows with the bytes that arrive,
//! never with what a peer declares: a header claiming 64 MiB costs nothing
//! until the bytes come. Typing lives in `message/`.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::error::ProtocolError;

/// Default cap on one message after startup (PostgreSQL's own limit for
/// most messages is 1 GB; a proxy that buffers each message whole keeps a
/// lower one, see `--pg-max-message-mib`).
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024 * 1024;

/// The largest startup-phase message (startup packet, SSLRequest,
/// GSSENCRequest, CancelRequest): PostgreSQL's `MAX_STARTUP_PACKET_LENGTH`.
pub const MAX_STARTUP_PACKET: usize = super::startup::MAX_STARTUP_PACKET as usize;

/// Most buffer space added per read while a message is incomplete, so
/// memory follows the bytes that arrived rather than the declared length.
const READ_CHUNK: usize = 64 * 1024;

/// One whole message: its type byte (0 for startup-phase messages, which have
/// none) and its original bytes, type byte and length included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    tag: u8,
    raw: Bytes,
}

impl Frame {
    /// The type byte; 0 for untagged startup-phase messages.
    pub fn tag(&self) -> u8 {
        self.tag
    }

    /// The message exactly as it was on the wire.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The body after the type byte and length.
    pub fn body(&self) -> Bytes {
        let skip = if self.tag == 0 { 4 } else { 5 };
        self.raw.slice(skip.min(self.raw.len())..)
    }

    /// A frame from already-encoded bytes (used by builders and tests).
    pub fn from_raw(tag: u8, raw: Bytes) -> Frame {
        Frame { tag, raw }
    }
}

/// Builds one message, writing the length prefix itself.
pub struct Payload {
    buf: BytesMut,
    tag: u8,
}

impl Payload {
    /// A tagged message (`tag` != 0) or an untagged startup message (`tag` == 0).
    pub fn new(tag: u8) -> Payload {
        let mut buf = BytesMut::with_capacity(64);
        if tag != 0 {
            buf.put_u8(tag);
        }
        buf.put_u32(0);
        Payload { buf, tag }
    }

    pub fn u8(mut self, v: u8) -> Payload {
        self.buf.put_u8(v);
        self
    }
    pub fn i16(mut self, v: i16) -> Payload {
        self.buf.put_i16(v);
        self
    }
    pub fn i32(mut self, v: i32) -> Payload {
        self.buf.put_i32(v);
        self
    }
    pub fn u32(mut self, v: u32) -> Payload {
        self.buf.put_u32(v);
        self
    }
    pub fn bytes(mut self, v: &[u8]) -> Payload {
        self.buf.put_slice(v);
        self
    }
    /// A NUL-terminated string of a client's bytes.
    pub fn wire_str(mut self, v: &super::message::WireStr) -> Payload {
        self.buf.put_slice(v.as_bytes());
        self.buf.put_u8(0);
        self
    }
    /// A NUL-terminated string.
    pub fn cstr(mut self, v: &str) -> Payload {
        self.buf.put_slice(v.as_bytes());
        self.buf.put_u8(0);
        self
    }

    /// The finished message. Lengths beyond u32 are impossible for our own
    /// messages (they are far below the frame cap); they saturate.
    pub fn finish(mut self) -> Frame {
        let start = usize::from(self.tag != 0);
        let len = u32::try_from(self.buf.len().saturating_sub(start)).unwrap_or(u32::MAX);
        if let Some(slot) = self.buf.get_mut(start..start + 4) {
            slot.copy_from_slice(&len.to_be_bytes());
        }
        Frame {
            tag: self.tag,
            raw: self.buf.freeze(),
        }
    }
}

/// Printable name of a type byte for error messages.
pub fn tag_name(tag: u8) -> String {
    if tag.is_ascii_graphic() {
        format!("'{}'", char::from(tag))
    } else {
        format!("0x{tag:02x}")
    }
}

/// A read half with its buffer. Cancel-safe: partial input stays buffered.
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    max: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads from `io`, refusing messages longer than `max` bytes.
    pub fn new(io: R, max: usize) -> FrameReader<R> {
        FrameReader {
            io,
            buf: BytesMut::with_capacity(8192),
            max,
        }
    }

    /// Bytes read but not yet returned as frames (used after a TLS switch check).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether a whole tagged message is buffered, so the next
    /// [`FrameReader::read_frame`] returns without waiting for the peer.
    pub fn has_frame(&self) -> bool {
        let len = self
            .buf
            .get(1..5)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes);
        match len {
            Some(len) => usize::try_from(len).is_ok_and(|l| self.buf.len() > l),
            None => false,
        }
    }

    /// The next tagged message; `Ok(None)` on clean EOF between messages.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        self.read(true).await
    }

    /// The next untagged startup-phase message; `Ok(None)` on clean EOF.
    pub async fn read_startup(&mut self) -> Result<Option<Frame>, ReadError> {
        self.read(false).await
    }

    async fn read(&mut self, tagged: bool) -> Result<Option<Frame>, ReadError> {
        // Before authentication nobody may make interlock buffer more than
        // the server itself would read.
        let max = if tagged {
            self.max
        } else {
            self.max.min(MAX_STARTUP_PACKET)
        };
        loop {
            if let Some(frame) = split_frame(&mut self.buf, tagged, max)? {
                return Ok(Some(frame));
            }
            if self.buf.capacity() == self.buf.len() {
                self.buf.reserve(READ_CHUNK);
            }
            let n = self.io.read_buf(&mut self.buf).await?;
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let what = match (tagged, self.buf.first()) {
                    (true, Some(t)) => format!("message {}", tag_name(*t)),
                    _ => "startup packet".into(),
                };
                let got = self.buf.len();
                return Err(ReadError::Protocol(ProtocolError::Truncated(format!(
                    "{what}, {got} bytes received"
                ))));
            }
        }
    }
}

/// Reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// Takes one whole message off the front of `buf` if it is complete.
/// Checks the declared length before waiting for the body; reserves
/// nothing for it (the reader grows its buffer as bytes arrive).
pub fn split_frame(
    buf: &mut BytesMut,
    tagged: bool,
    max: usize,
) -> Result<Option<Frame>, ProtocolError> {
    let head = if tagged { 5 } else { 4 };
    let Some(header) = buf.get(..head) else {
        return Ok(None);
    };
    let (tag, len_bytes) = if tagged {
        (header.first().copied().unwrap_or(0), header.get(1..5))
    } else {
        (0, header.get(0..4))
    };
    let len = len_bytes
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .unwrap_or(0);
    let name = if tagged {
        tag_name(tag)
    } else {
        "startup packet".to_string()
    };
    let min: u32 = if tagged { 4 } else { 8 };
    if len < min {
        return Err(ProtocolError::TooShort {
            tag: name,
            len,
            min,
        });
    }
    let total = usize::try_from(len)
        .unwrap_or(usize::MAX)
        .saturating_add(head - 4);
    if total.saturating_sub(head - 4) > max {
        return Err(ProtocolError::TooLong {
            tag: name,
            len,
            max,
        });
    }
    if buf.len() < total {
        return Ok(None);
    }
    let raw = buf.split_to(total).freeze();
    Ok(Some(Frame { tag, raw }))
}

/// Writes whole frames to a write half. Frames are queued without
/// waiting ([`FrameWriter::push`]) and written out step by step
/// ([`FrameWriter::write_some`]), so that a relay can wait for the peer to
/// take bytes and for input from either side at once. Small frames are
/// gathered so that a server's answer (RowDescription, DataRows,
/// CommandComplete, ReadyForQuery) reaches the client in few writes.
pub struct FrameWriter<W> {
    io: W,
    /// Frames waiting to be written, oldest first; `tail` comes after them.
    chunks: VecDeque<Bytes>,
    /// Small frames gathered after `chunks`.
    tail: BytesMut,
    /// Bytes in `chunks` and `tail`.
    queued: usize,
    /// Bytes were written since the last flush (a TLS stream may hold a
    /// record back until flushed).
    unflushed: bool,
}

/// Frames at least this big are queued as they are rather than copied.
const DIRECT_MIN: usize = 16 * 1024;

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(io: W) -> FrameWriter<W> {
        FrameWriter {
            io,
            chunks: VecDeque::new(),
            tail: BytesMut::new(),
            queued: 0,
            unflushed: false,
        }
    }

    /// Queues `frame` behind what is queued; never waits.
    pub fn push(&mut self, frame: &Frame) {
        self.push_bytes(frame.raw().clone());
    }

    fn push_bytes(&mut self, bytes: Bytes) {
        self.queued = self.queued.saturating_add(bytes.len());
        if bytes.len() >= DIRECT_MIN {
            if !self.tail.is_empty() {
                self.chunks.push_back(self.tail.split().freeze());
            }
            self.chunks.push_back(bytes);
        } else {
            self.tail.extend_from_slice(&bytes);
        }
    }

    /// Bytes queued and not yet handed to the socket.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Whether everything queued has been written and flushed.
    pub fn is_idle(&self) -> bool {
        self.queued == 0 && !self.unflushed
    }

    /// One step of writing out: hands some queued bytes to the socket, or
    /// flushes once everything is handed over. Returns at once when idle.
    ///
    /// Cancel-safe: bytes count as written only when the socket took them
    /// (`write` takes nothing when it is cancelled), and a flush that is
    /// cancelled is simply repeated.
    pub async fn write_some(&mut self) -> std::io::Result<()> {
        let n = if let Some(front) = self.chunks.front() {
            let n = self.io.write(front).await?;
            if let Some(front) = self.chunks.front_mut() {
                front.advance(n.min(front.len()));
                if front.is_empty() {
                    self.chunks.pop_front();
                }
            }
            n
        } else if !self.tail.is_empty() {
            let n = self.io.write(&self.tail).await?;
            self.tail.advance(n.min(self.tail.len()));
            n
        } else {
            if self.unflushed {
                self.io.flush().await?;
                self.unflushed = false;
            }
            return Ok(());
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        self.queued = self.queued.saturating_sub(n);
        self.unflushed = true;
        Ok(())
    }

    /// Writes out everything queued and flushes. Waits for the peer: only
    /// for phases where the peer reads before it writes again (startup,
    /// authentication, a last word before closing).
    pub async fn flush(&mut self) -> std::io::Result<()> {
        while !self.is_idle() {
            self.write_some().await?;
        }
        Ok(())
    }

    /// Queues `frame` and writes out everything (see [`FrameWriter::flush`]).
    pub async fn send(&mut self, frame: &Frame) -> std::io::Result<()> {
        self.push(frame);
        self.flush().await
    }

    /// Queues raw bytes (e.g. the single-byte SSLRequest answer) and
    /// writes out everything.
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.push_bytes(Bytes::copy_from_slice(bytes));
        self.flush().await
    }

    /// Writes what is queued, then shuts the write side down (best effort).
    pub async fn shutdown(&mut self) {
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_through_split() {
        let f = Payload::new(b'Q').cstr("select 1").finish();
        let mut buf = BytesMut::from(&f.raw()[..]);
        buf.extend_from_slice(b"Q\0\0");
        let got = split_frame(&mut buf, true, 1024).unwrap().unwrap();
        assert_eq!(got, f);
        assert_eq!(&got.body()[..], b"select 1\0");
        // the partial second message stays buffered
        assert_eq!(split_frame(&mut buf, true, 1024).unwrap(), None);
        assert_eq!(buf.len(), 3);
    }

    #[test]
    fn startup_frames_have_no_tag() {
        let f = Payload::new(0).i32(80877103).finish();
        assert_eq!(&f.raw()[..], &[0, 0, 0, 8, 4, 210, 22, 47]);
        let mut buf = BytesMut::from(&f.raw()[..]);
        assert_eq!(split_frame(&mut buf, false, 1024).unwrap().unwrap(), f);
    }

    #[test]
    fn lengths_are_checked_before_buffering() {
        let mut short = BytesMut::from(&b"Q\0\0\0\x03"[..]);
        assert!(matches!(
            split_frame(&mut short, true, 1024),
            Err(ProtocolError::TooShort { len: 3, .. })
        ));
        let mut long = BytesMut::from(&b"Q\x7f\0\0\0"[..]);
        let err = split_frame(&mut long, true, 1024).unwrap_err();
        assert!(matches!(err, ProtocolError::TooLong { .. }));
        assert!(err.to_string().contains("above the limit of 1024"));
        let mut startup = BytesMut::from(&b"\0\0\0\x04"[..]);
        assert!(split_frame(&mut startup, false, 1024).is_err());
    }

    #[tokio::test]
    async fn queued_frames_go_out_in_order_with_sends_and_on_flush() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut w = FrameWriter::new(a);
        let f = |t: u8| Payload::new(t).cstr("x").finish();
        w.push(&f(b'1'));
        w.push(&f(b'2'));
        // Two frames of tag, length and "x\0": 2 * (1 + 4 + 2) bytes.
        assert_eq!(w.queued(), 14);
        // A send writes what was queued first.
        w.send(&f(b'3')).await.unwrap();
        assert!(w.is_idle());
        w.push(&f(b'4'));
        // A big frame is queued as it is, after the small ones.
        let big = Payload::new(b'5').cstr(&"y".repeat(DIRECT_MIN)).finish();
        w.push(&big);
        w.push(&f(b'6'));
        w.flush().await.unwrap();
        drop(w);
        let mut r = FrameReader::new(b, 1 << 20);
        let mut tags = Vec::new();
        while let Some(fr) = r.read_frame().await.unwrap() {
            tags.push(fr.tag());
        }
        assert_eq!(tags, b"123456");
    }

    #[test]
    fn has_frame_sees_whole_messages_only() {
        let f = Payload::new(b'Q').cstr("select 1").finish();
        let mut r = FrameReader::new(&b""[..], 1024);
        assert!(!r.has_frame());
        r.buf.extend_from_slice(&f.raw()[..3]);
        assert!(!r.has_frame());
        r.buf.extend_from_slice(&f.raw()[3..f.raw().len() - 1]);
        assert!(!r.has_frame());
        r.buf.extend_from_slice(&f.raw()[f.raw().len() - 1..]);
        assert!(r.has_frame());
    }

    #[tokio::test]
    async fn declared_lengths_reserve_nothing() {
        // A header declaring 60 MiB and a few bytes of body: the buffer
        // holds what arrived plus at most one read chunk.
        let data: &[u8] = b"Q\x03\xc0\0\0select";
        let mut r = FrameReader::new(data, DEFAULT_MAX_FRAME);
        let err = r.read_frame().await.unwrap_err().to_string();
        assert!(err.contains("11 bytes received"), "{err}");
        assert_eq!(r.buffered(), 11);
        assert!(
            r.buf.capacity() <= 8192 + READ_CHUNK,
            "{}",
            r.buf.capacity()
        );
    }

    #[tokio::test]
    async fn startup_messages_are_capped_like_postgres() {
        // 10 001 bytes declared: refused at once, whatever the reader's cap.
        let data: &[u8] = b"\0\0\x27\x11\0\x03\0\0";
        let mut r = FrameReader::new(data, DEFAULT_MAX_FRAME);
        let err = r.read_startup().await.unwrap_err().to_string();
        assert!(err.contains("above the limit of 10000"), "{err}");
        // Exactly the limit is read.
        let mut ok = vec![0u8; MAX_STARTUP_PACKET];
        ok[..4].copy_from_slice(&(MAX_STARTUP_PACKET as u32).to_be_bytes());
        let mut r = FrameReader::new(&ok[..], DEFAULT_MAX_FRAME);
        assert_eq!(r.read_startup().await.unwrap().unwrap().raw().len(), 10_000);
    }

    #[tokio::test]
    async fn reader_handles_eof() {
        let data: &[u8] = b"S\0\0\0\x04";
        let mut r = FrameReader::new(data, 1024);
        assert_eq!(r.read_frame().await.unwrap().unwrap().tag(), b'S');
        assert!(r.read_frame().await.unwrap().is_none());
        let cut: &[u8] = b"S\0\0";
        let mut r = FrameReader::new(cut, 1024);
        let err = r.read_frame().await.unwrap_err().to_string();
        assert!(
            err.contains("middle of a message (message 'S', 3 bytes received)"),
            "{err}"
        );
    }
}
