//! Startup-phase messages (untagged): StartupMessage, SSLRequest,
//! GSSENCRequest, CancelRequest.

use bytes::Bytes;

use super::super::error::ProtocolError;
use super::super::frame::{Frame, Payload};
use super::cursor::Cursor;

/// The request code of SSLRequest.
pub const SSL_CODE: i32 = 80877103;
/// The request code of GSSENCRequest.
pub const GSSENC_CODE: i32 = 80877104;
/// The request code of CancelRequest.
pub const CANCEL_CODE: i32 = 80877102;

/// The first message of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartupPacket {
    /// Protocol 3.x startup: `minor` and the parameters in order (`user`, `database`, `options`, ...).
    Startup {
        minor: u16,
        params: Vec<(String, String)>,
    },
    Ssl,
    GssEnc,
    /// Cancel the statement running on the backend with this key (the
    /// secret is 4 bytes in 3.0 and up to 256 in 3.2).
    Cancel {
        pid: i32,
        secret: Bytes,
    },
}

impl StartupPacket {
    /// Decodes an untagged frame. Fails on unknown codes, protocol majors
    /// other than 3 and bad parameter lists.
    pub fn decode(frame: &Frame) -> Result<StartupPacket, ProtocolError> {
        let mut c = Cursor::new(frame.body(), "startup packet");
        let code = c.i32()?;
        match code {
            SSL_CODE => c.finish().map(|()| StartupPacket::Ssl),
            GSSENC_CODE => c.finish().map(|()| StartupPacket::GssEnc),
            CANCEL_CODE => {
                let pid = c.i32()?;
                let secret = c.rest();
                if secret.len() < 4 || secret.len() > 256 {
                    return Err(ProtocolError::malformed("CancelRequest", "bad key length"));
                }
                Ok(StartupPacket::Cancel { pid, secret })
            }
            v if v >> 16 == 3 => {
                let minor = u16::try_from(v & 0xffff).unwrap_or(0);
                let mut params = Vec::new();
                loop {
                    let k = c.cstr()?;
                    if k.is_empty() {
                        break;
                    }
                    let v = c.cstr()?;
                    params.push((k, v));
                }
                c.finish()?;
                if !params.iter().any(|(k, _)| k == "user") {
                    return Err(ProtocolError::malformed(
                        "StartupMessage",
                        "no user name specified",
                    ));
                }
                Ok(StartupPacket::Startup { minor, params })
            }
            v => Err(ProtocolError::Unexpected(format!(
                "unsupported frontend protocol {}.{}",
                v >> 16,
                v & 0xffff
            ))),
        }
    }

    /// Encodes as an untagged frame.
    pub fn encode(&self) -> Frame {
        match self {
            StartupPacket::Startup { minor, params } => {
                let mut p = Payload::new(0).i32((3 << 16) | i32::from(*minor));
                for (k, v) in params {
                    p = p.cstr(k).cstr(v);
                }
                p.u8(0).finish()
            }
            StartupPacket::Ssl => Payload::new(0).i32(SSL_CODE).finish(),
            StartupPacket::GssEnc => Payload::new(0).i32(GSSENC_CODE).finish(),
            StartupPacket::Cancel { pid, secret } => Payload::new(0)
                .i32(CANCEL_CODE)
                .i32(*pid)
                .bytes(secret)
                .finish(),
        }
    }

    /// A startup parameter's value.
    pub fn param(&self, key: &str) -> Option<&str> {
        match self {
            StartupPacket::Startup { params, .. } => params
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for p in [
            StartupPacket::Startup {
                minor: 0,
                params: vec![("user".into(), "u".into()), ("database".into(), "d".into())],
            },
            StartupPacket::Startup {
                minor: 2,
                params: vec![("user".into(), "u".into())],
            },
            StartupPacket::Ssl,
            StartupPacket::GssEnc,
            StartupPacket::Cancel {
                pid: 7,
                secret: Bytes::from_static(&[1; 32]),
            },
        ] {
            assert_eq!(StartupPacket::decode(&p.encode()).unwrap(), p);
        }
    }

    #[test]
    fn malformed() {
        let bad_version = Payload::new(0).i32(2 << 16).finish();
        assert!(StartupPacket::decode(&bad_version).is_err());
        let no_user = Payload::new(0)
            .i32(3 << 16)
            .cstr("database")
            .cstr("d")
            .u8(0)
            .finish();
        assert!(StartupPacket::decode(&no_user).is_err());
        let unterminated = Payload::new(0).i32(3 << 16).bytes(b"user\0u").finish();
        assert!(StartupPacket::decode(&unterminated).is_err());
        let short_key = Payload::new(0)
            .i32(CANCEL_CODE)
            .i32(1)
            .bytes(&[1, 2])
            .finish();
        assert!(StartupPacket::decode(&short_key).is_err());
        let ssl_trailing = Payload::new(0).i32(SSL_CODE).u8(1).finish();
        assert!(StartupPacket::decode(&ssl_trailing).is_err());
    }
}
