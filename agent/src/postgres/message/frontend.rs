//! Frontend (client -> server) messages after startup.

use bytes::Bytes;

use super::super::error::ProtocolError;
use super::super::frame::{Frame, Payload, tag_name};
use super::{cursor::Cursor, wire_str::WireStr};

/// A client message; its strings are bytes in the client's encoding.
/// Bodies we never inspect (CopyData, SASL payloads,
/// Bind parameters) stay as bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrontendMessage {
    Query {
        sql: WireStr,
    },
    Parse {
        name: WireStr,
        sql: WireStr,
        param_types: Vec<i32>,
    },
    Bind {
        portal: WireStr,
        statement: WireStr,
        rest: Bytes,
    },
    /// `kind` is b'S' (statement) or b'P' (portal).
    Describe {
        kind: u8,
        name: WireStr,
    },
    Execute {
        portal: WireStr,
        max_rows: i32,
    },
    Sync,
    Flush,
    Close {
        kind: u8,
        name: WireStr,
    },
    CopyData(Bytes),
    CopyDone,
    CopyFail {
        message: WireStr,
    },
    FunctionCall {
        oid: i32,
        rest: Bytes,
    },
    Terminate,
    /// PasswordMessage, SASLInitialResponse and SASLResponse share the type
    /// byte; which one it is depends on the authentication state.
    Password(Bytes),
}

fn kind(c: &mut Cursor) -> Result<u8, ProtocolError> {
    match c.u8()? {
        k @ (b'S' | b'P') => Ok(k),
        k => Err(ProtocolError::malformed(
            "Describe/Close",
            format!("bad kind {}", tag_name(k)),
        )),
    }
}

impl FrontendMessage {
    /// Decodes a tagged client frame. Unknown types and bad layouts are errors.
    pub fn decode(frame: &Frame) -> Result<FrontendMessage, ProtocolError> {
        let tag = frame.tag();
        let mut c = Cursor::new(frame.body(), "frontend message");
        let msg = match tag {
            b'Q' => FrontendMessage::Query { sql: c.wire_str()? },
            b'P' => {
                let name = c.wire_str()?;
                let sql = c.wire_str()?;
                let n = c.count16()?;
                let mut param_types = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    param_types.push(c.i32()?);
                }
                FrontendMessage::Parse {
                    name,
                    sql,
                    param_types,
                }
            }
            b'B' => FrontendMessage::Bind {
                portal: c.wire_str()?,
                statement: c.wire_str()?,
                rest: c.rest(),
            },
            b'D' => FrontendMessage::Describe {
                kind: kind(&mut c)?,
                name: c.wire_str()?,
            },
            b'E' => FrontendMessage::Execute {
                portal: c.wire_str()?,
                max_rows: c.i32()?,
            },
            b'S' => FrontendMessage::Sync,
            b'H' => FrontendMessage::Flush,
            b'C' => FrontendMessage::Close {
                kind: kind(&mut c)?,
                name: c.wire_str()?,
            },
            b'd' => FrontendMessage::CopyData(c.rest()),
            b'c' => FrontendMessage::CopyDone,
            b'f' => FrontendMessage::CopyFail {
                message: c.wire_str()?,
            },
            b'F' => FrontendMessage::FunctionCall {
                oid: c.i32()?,
                rest: c.rest(),
            },
            b'X' => FrontendMessage::Terminate,
            b'p' => FrontendMessage::Password(c.rest()),
            t => return Err(ProtocolError::UnknownTag(tag_name(t))),
        };
        c.finish()?;
        Ok(msg)
    }

    /// Encodes as a frame.
    pub fn encode(&self) -> Frame {
        match self {
            FrontendMessage::Query { sql } => Payload::new(b'Q').wire_str(sql).finish(),
            FrontendMessage::Parse {
                name,
                sql,
                param_types,
            } => {
                let n = i16::try_from(param_types.len()).unwrap_or(i16::MAX);
                let mut p = Payload::new(b'P').wire_str(name).wire_str(sql).i16(n);
                for t in param_types.iter().take(usize::try_from(n).unwrap_or(0)) {
                    p = p.i32(*t);
                }
                p.finish()
            }
            FrontendMessage::Bind {
                portal,
                statement,
                rest,
            } => Payload::new(b'B')
                .wire_str(portal)
                .wire_str(statement)
                .bytes(rest)
                .finish(),
            FrontendMessage::Describe { kind, name } => {
                Payload::new(b'D').u8(*kind).wire_str(name).finish()
            }
            FrontendMessage::Execute { portal, max_rows } => {
                Payload::new(b'E').wire_str(portal).i32(*max_rows).finish()
            }
            FrontendMessage::Sync => Payload::new(b'S').finish(),
            FrontendMessage::Flush => Payload::new(b'H').finish(),
            FrontendMessage::Close { kind, name } => {
                Payload::new(b'C').u8(*kind).wire_str(name).finish()
            }
            FrontendMessage::CopyData(d) => Payload::new(b'd').bytes(d).finish(),
            FrontendMessage::CopyDone => Payload::new(b'c').finish(),
            FrontendMessage::CopyFail { message } => Payload::new(b'f').wire_str(message).finish(),
            FrontendMessage::FunctionCall { oid, rest } => {
                Payload::new(b'F').i32(*oid).bytes(rest).finish()
            }
            FrontendMessage::Terminate => Payload::new(b'X').finish(),
            FrontendMessage::Password(b) => Payload::new(b'p').bytes(b).finish(),
        }
    }

    /// SASLInitialResponse: mechanism name and initial data.
    pub fn sasl_initial(mechanism: &str, data: &[u8]) -> Frame {
        let len = i32::try_from(data.len()).unwrap_or(i32::MAX);
        Payload::new(b'p')
            .cstr(mechanism)
            .i32(len)
            .bytes(data)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let msgs = vec![
            FrontendMessage::Query {
                sql: "select 1; select 2".into(),
            },
            FrontendMessage::Parse {
                name: "s1".into(),
                sql: "select $1".into(),
                param_types: vec![23],
            },
            FrontendMessage::Bind {
                portal: "".into(),
                statement: "s1".into(),
                rest: Bytes::from_static(&[0, 0, 0, 0, 0, 0]),
            },
            FrontendMessage::Describe {
                kind: b'S',
                name: "s1".into(),
            },
            FrontendMessage::Execute {
                portal: "".into(),
                max_rows: 0,
            },
            FrontendMessage::Sync,
            FrontendMessage::Flush,
            FrontendMessage::Close {
                kind: b'P',
                name: "p".into(),
            },
            FrontendMessage::CopyData(Bytes::from_static(b"1\tx\n")),
            FrontendMessage::CopyDone,
            FrontendMessage::CopyFail {
                message: "oops".into(),
            },
            FrontendMessage::FunctionCall {
                oid: 2301,
                rest: Bytes::from_static(&[0, 0, 0, 0, 0, 0]),
            },
            FrontendMessage::Terminate,
            FrontendMessage::Password(Bytes::from_static(b"secret\0")),
        ];
        for m in msgs {
            assert_eq!(FrontendMessage::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn malformed() {
        let unknown = Payload::new(b'Z').finish();
        assert_eq!(
            FrontendMessage::decode(&unknown),
            Err(ProtocolError::UnknownTag("'Z'".into()))
        );
        let unterminated = Payload::new(b'Q').bytes(b"select").finish();
        assert!(FrontendMessage::decode(&unterminated).is_err());
        let trailing = Payload::new(b'S').u8(1).finish();
        assert!(FrontendMessage::decode(&trailing).is_err());
        let bad_kind = Payload::new(b'D').u8(b'X').cstr("").finish();
        assert!(FrontendMessage::decode(&bad_kind).is_err());
        let neg = Payload::new(b'P').cstr("").cstr("x").i16(-1).finish();
        assert!(FrontendMessage::decode(&neg).is_err());
        let short_exec = Payload::new(b'E').cstr("").i16(0).finish();
        assert!(FrontendMessage::decode(&short_exec).is_err());
    }

    #[test]
    fn strings_in_other_encodings_are_kept_as_bytes() {
        let latin1 = Payload::new(b'Q').bytes(b"select '\xe9'\0").finish();
        let m = FrontendMessage::decode(&latin1).unwrap();
        let FrontendMessage::Query { sql } = &m else {
            panic!("{m:?}");
        };
        assert_eq!(sql.as_bytes(), b"select '\xe9'");
        assert_eq!(m.encode(), latin1);
        let named = Payload::new(b'P')
            .bytes(b"s\xff\0select 1\0")
            .i16(0)
            .finish();
        assert_eq!(FrontendMessage::decode(&named).unwrap().encode(), named);
    }
}
