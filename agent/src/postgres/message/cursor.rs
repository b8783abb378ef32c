//! A bounds-checked reader over a message body.

use bytes::{Buf, Bytes};

use super::{super::error::ProtocolError, wire_str::WireStr};

pub(crate) struct Cursor {
    buf: Bytes,
    what: &'static str,
}

impl Cursor {
    pub(crate) fn new(buf: Bytes, what: &'static str) -> Cursor {
        Cursor { buf, what }
    }

    fn short(&self, need: usize) -> ProtocolError {
        ProtocolError::malformed(
            self.what,
            format!("needs {need} more bytes, {} left", self.buf.len()),
        )
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ProtocolError> {
        if self.buf.remaining() < 1 {
            return Err(self.short(1));
        }
        Ok(self.buf.get_u8())
    }

    pub(crate) fn i16(&mut self) -> Result<i16, ProtocolError> {
        if self.buf.remaining() < 2 {
            return Err(self.short(2));
        }
        Ok(self.buf.get_i16())
    }

    pub(crate) fn i32(&mut self) -> Result<i32, ProtocolError> {
        if self.buf.remaining() < 4 {
            return Err(self.short(4));
        }
        Ok(self.buf.get_i32())
    }

    /// A count that must not be negative.
    pub(crate) fn count16(&mut self) -> Result<usize, ProtocolError> {
        let n = self.i16()?;
        usize::try_from(n).map_err(|_| ProtocolError::malformed(self.what, "negative count"))
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, ProtocolError> {
        if self.buf.remaining() < n {
            return Err(self.short(n));
        }
        Ok(self.buf.split_to(n))
    }

    /// A length-prefixed value; -1 is NULL.
    pub(crate) fn value(&mut self) -> Result<Option<Bytes>, ProtocolError> {
        let len = self.i32()?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len)
            .map_err(|_| ProtocolError::malformed(self.what, "bad value length"))?;
        self.take(len).map(Some)
    }

    /// A NUL-terminated string's bytes.
    pub(crate) fn cbytes(&mut self) -> Result<Bytes, ProtocolError> {
        let Some(end) = self.buf.iter().position(|b| *b == 0) else {
            return Err(ProtocolError::malformed(
                self.what,
                "string without terminator",
            ));
        };
        let s = self.buf.split_to(end);
        self.buf.advance(1);
        Ok(s)
    }

    /// A NUL-terminated UTF-8 string (startup parameters, which are sent
    /// upstream again as decoded).
    pub(crate) fn cstr(&mut self) -> Result<String, ProtocolError> {
        let s = self.cbytes()?;
        String::from_utf8(s.to_vec())
            .map_err(|_| ProtocolError::malformed(self.what, "string is not UTF-8"))
    }

    /// A NUL-terminated string in the client's encoding, as bytes.
    pub(crate) fn wire_str(&mut self) -> Result<WireStr, ProtocolError> {
        self.cbytes().map(WireStr::from_bytes)
    }

    /// A NUL-terminated string from the server, in the client's encoding:
    /// only read (e.g. an error's SQLSTATE), never sent on as decoded, so
    /// bytes that are not UTF-8 become U+FFFD.
    pub(crate) fn cstr_lossy(&mut self) -> Result<String, ProtocolError> {
        let s = self.cbytes()?;
        Ok(String::from_utf8_lossy(&s).into_owned())
    }

    pub(crate) fn rest(&mut self) -> Bytes {
        self.buf.split_off(0)
    }

    /// Fails unless the body was consumed exactly.
    pub(crate) fn finish(&self) -> Result<(), ProtocolError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::malformed(
                self.what,
                format!("{} trailing bytes", self.buf.len()),
            ))
        }
    }
}
