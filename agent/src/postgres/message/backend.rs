//! Backend (server -> client) messages.

use bytes::Bytes;

use super::super::error::ProtocolError;
use super::super::frame::{Frame, Payload, tag_name};
use super::cursor::Cursor;

/// An Authentication* request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthRequest {
    Ok,
    Cleartext,
    Md5 {
        salt: [u8; 4],
    },
    Sasl {
        mechanisms: Vec<String>,
    },
    SaslContinue(Bytes),
    SaslFinal(Bytes),
    /// Kerberos, GSS, SSPI: not supported by the proxy.
    Other(i32),
}

/// The fields of an ErrorResponse or NoticeResponse, in order.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ErrorFields {
    fields: Vec<(u8, String)>,
}

impl ErrorFields {
    /// Severity `severity`, SQLSTATE `code`, message `message`.
    pub fn new(severity: &str, code: &str, message: &str) -> ErrorFields {
        ErrorFields {
            fields: vec![
                (b'S', severity.to_string()),
                (b'V', severity.to_string()),
                (b'C', code.to_string()),
                (b'M', message.to_string()),
            ],
        }
    }

    /// Adds a field (e.g. b'D' detail, b'H' hint).
    pub fn with(mut self, code: u8, value: &str) -> ErrorFields {
        self.fields.push((code, value.to_string()));
        self
    }

    /// The value of field `code`.
    pub fn get(&self, code: u8) -> Option<&str> {
        self.fields
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_str())
    }

    /// Replaces field values for which `f(code, value)` gives a new one;
    /// whether any changed.
    pub fn rewrite(&mut self, mut f: impl FnMut(u8, &str) -> Option<String>) -> bool {
        let mut changed = false;
        for (code, value) in &mut self.fields {
            if let Some(v) = f(*code, value) {
                *value = v;
                changed = true;
            }
        }
        changed
    }

    /// The SQLSTATE.
    pub fn code(&self) -> Option<&str> {
        self.get(b'C')
    }

    fn decode(c: &mut Cursor) -> Result<ErrorFields, ProtocolError> {
        let mut fields = Vec::new();
        loop {
            let code = c.u8()?;
            if code == 0 {
                return Ok(ErrorFields { fields });
            }
            fields.push((code, c.cstr_lossy()?));
        }
    }

    fn encode(&self, tag: u8) -> Frame {
        self.encode_with(tag, &|v| std::borrow::Cow::Borrowed(v.as_bytes()))
    }

    /// As a frame of type `tag` (b'E' or b'N') with every value converted
    /// by `convert` (into a client's encoding; it must not produce NUL).
    pub(crate) fn encode_with(
        &self,
        tag: u8,
        convert: &dyn Fn(&str) -> std::borrow::Cow<'_, [u8]>,
    ) -> Frame {
        let mut p = Payload::new(tag);
        for (code, v) in &self.fields {
            p = p.u8(*code).bytes(&convert(v)).u8(0);
        }
        p.u8(0).finish()
    }

    /// As an ErrorResponse frame.
    pub fn error_frame(&self) -> Frame {
        self.encode(b'E')
    }

    /// As a NoticeResponse frame.
    pub fn notice_frame(&self) -> Frame {
        self.encode(b'N')
    }
}

/// A server message. Row data and other bodies the proxy does not inspect
/// stay as bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendMessage {
    Authentication(AuthRequest),
    BackendKeyData {
        pid: i32,
        secret: Bytes,
    },
    ParameterStatus {
        name: String,
        value: String,
    },
    NegotiateProtocolVersion {
        /// The newest version the server supports (major << 16 | minor).
        version: i32,
        unsupported: Vec<String>,
    },
    /// `status` is b'I', b'T' or b'E'.
    ReadyForQuery {
        status: u8,
    },
    RowDescription(Bytes),
    DataRow(Vec<Option<Bytes>>),
    CommandComplete {
        tag: String,
    },
    EmptyQueryResponse,
    ErrorResponse(ErrorFields),
    NoticeResponse(ErrorFields),
    CopyInResponse(Bytes),
    CopyOutResponse(Bytes),
    CopyBothResponse(Bytes),
    CopyData(Bytes),
    CopyDone,
    NotificationResponse {
        pid: i32,
        channel: String,
        payload: String,
    },
    ParseComplete,
    BindComplete,
    CloseComplete,
    NoData,
    PortalSuspended,
    ParameterDescription(Bytes),
    FunctionCallResponse(Option<Bytes>),
}

impl BackendMessage {
    /// Decodes a tagged server frame. Unknown types and bad layouts are errors.
    pub fn decode(frame: &Frame) -> Result<BackendMessage, ProtocolError> {
        let mut c = Cursor::new(frame.body(), "backend message");
        let msg = match frame.tag() {
            b'R' => BackendMessage::Authentication(match c.i32()? {
                0 => AuthRequest::Ok,
                3 => AuthRequest::Cleartext,
                5 => {
                    let s = c.take(4)?;
                    let mut salt = [0; 4];
                    salt.copy_from_slice(&s);
                    AuthRequest::Md5 { salt }
                }
                10 => {
                    let mut mechanisms = Vec::new();
                    loop {
                        let m = c.cstr_lossy()?;
                        if m.is_empty() {
                            break;
                        }
                        mechanisms.push(m);
                    }
                    AuthRequest::Sasl { mechanisms }
                }
                11 => AuthRequest::SaslContinue(c.rest()),
                12 => AuthRequest::SaslFinal(c.rest()),
                n => {
                    let _ = c.rest();
                    AuthRequest::Other(n)
                }
            }),
            b'K' => {
                let pid = c.i32()?;
                let secret = c.rest();
                if secret.len() < 4 || secret.len() > 256 {
                    return Err(ProtocolError::malformed("BackendKeyData", "bad key length"));
                }
                BackendMessage::BackendKeyData { pid, secret }
            }
            b'S' => BackendMessage::ParameterStatus {
                name: c.cstr_lossy()?,
                value: c.cstr_lossy()?,
            },
            b'v' => {
                let version = c.i32()?;
                let n = c.i32()?;
                let mut unsupported = Vec::new();
                for _ in 0..n.clamp(0, 1024) {
                    unsupported.push(c.cstr_lossy()?);
                }
                BackendMessage::NegotiateProtocolVersion {
                    version,
                    unsupported,
                }
            }
            b'Z' => match c.u8()? {
                s @ (b'I' | b'T' | b'E') => BackendMessage::ReadyForQuery { status: s },
                s => {
                    return Err(ProtocolError::malformed(
                        "ReadyForQuery",
                        format!("status {}", tag_name(s)),
                    ));
                }
            },
            b'T' => BackendMessage::RowDescription(c.rest()),
            b'D' => {
                let n = c.count16()?;
                let mut cols = Vec::with_capacity(n.min(1600));
                for _ in 0..n {
                    cols.push(c.value()?);
                }
                BackendMessage::DataRow(cols)
            }
            b'C' => BackendMessage::CommandComplete {
                tag: c.cstr_lossy()?,
            },
            b'I' => BackendMessage::EmptyQueryResponse,
            b'E' => BackendMessage::ErrorResponse(ErrorFields::decode(&mut c)?),
            b'N' => BackendMessage::NoticeResponse(ErrorFields::decode(&mut c)?),
            b'G' => BackendMessage::CopyInResponse(c.rest()),
            b'H' => BackendMessage::CopyOutResponse(c.rest()),
            b'W' => BackendMessage::CopyBothResponse(c.rest()),
            b'd' => BackendMessage::CopyData(c.rest()),
            b'c' => BackendMessage::CopyDone,
            b'A' => BackendMessage::NotificationResponse {
                pid: c.i32()?,
                channel: c.cstr_lossy()?,
                payload: c.cstr_lossy()?,
            },
            b'1' => BackendMessage::ParseComplete,
            b'2' => BackendMessage::BindComplete,
            b'3' => BackendMessage::CloseComplete,
            b'n' => BackendMessage::NoData,
            b's' => BackendMessage::PortalSuspended,
            b't' => BackendMessage::ParameterDescription(c.rest()),
            b'V' => BackendMessage::FunctionCallResponse(c.value()?),
            t => return Err(ProtocolError::UnknownTag(tag_name(t))),
        };
        c.finish()?;
        Ok(msg)
    }

    /// Encodes as a frame.
    pub fn encode(&self) -> Frame {
        match self {
            BackendMessage::Authentication(a) => {
                let p = Payload::new(b'R');
                match a {
                    AuthRequest::Ok => p.i32(0),
                    AuthRequest::Cleartext => p.i32(3),
                    AuthRequest::Md5 { salt } => p.i32(5).bytes(salt),
                    AuthRequest::Sasl { mechanisms } => {
                        let mut p = p.i32(10);
                        for m in mechanisms {
                            p = p.cstr(m);
                        }
                        p.u8(0)
                    }
                    AuthRequest::SaslContinue(d) => p.i32(11).bytes(d),
                    AuthRequest::SaslFinal(d) => p.i32(12).bytes(d),
                    AuthRequest::Other(n) => p.i32(*n),
                }
                .finish()
            }
            BackendMessage::BackendKeyData { pid, secret } => {
                Payload::new(b'K').i32(*pid).bytes(secret).finish()
            }
            BackendMessage::ParameterStatus { name, value } => {
                Payload::new(b'S').cstr(name).cstr(value).finish()
            }
            BackendMessage::NegotiateProtocolVersion {
                version,
                unsupported,
            } => {
                let n = i32::try_from(unsupported.len()).unwrap_or(0);
                let mut p = Payload::new(b'v').i32(*version).i32(n);
                for u in unsupported {
                    p = p.cstr(u);
                }
                p.finish()
            }
            BackendMessage::ReadyForQuery { status } => Payload::new(b'Z').u8(*status).finish(),
            BackendMessage::RowDescription(b) => Payload::new(b'T').bytes(b).finish(),
            BackendMessage::DataRow(cols) => {
                let n = i16::try_from(cols.len()).unwrap_or(i16::MAX);
                let mut p = Payload::new(b'D').i16(n);
                for col in cols {
                    p = match col {
                        None => p.i32(-1),
                        Some(v) => p.i32(i32::try_from(v.len()).unwrap_or(i32::MAX)).bytes(v),
                    };
                }
                p.finish()
            }
            BackendMessage::CommandComplete { tag } => Payload::new(b'C').cstr(tag).finish(),
            BackendMessage::EmptyQueryResponse => Payload::new(b'I').finish(),
            BackendMessage::ErrorResponse(f) => f.error_frame(),
            BackendMessage::NoticeResponse(f) => f.notice_frame(),
            BackendMessage::CopyInResponse(b) => Payload::new(b'G').bytes(b).finish(),
            BackendMessage::CopyOutResponse(b) => Payload::new(b'H').bytes(b).finish(),
            BackendMessage::CopyBothResponse(b) => Payload::new(b'W').bytes(b).finish(),
            BackendMessage::CopyData(b) => Payload::new(b'd').bytes(b).finish(),
            BackendMessage::CopyDone => Payload::new(b'c').finish(),
            BackendMessage::NotificationResponse {
                pid,
                channel,
                payload,
            } => Payload::new(b'A')
                .i32(*pid)
                .cstr(channel)
                .cstr(payload)
                .finish(),
            BackendMessage::ParseComplete => Payload::new(b'1').finish(),
            BackendMessage::BindComplete => Payload::new(b'2').finish(),
            BackendMessage::CloseComplete => Payload::new(b'3').finish(),
            BackendMessage::NoData => Payload::new(b'n').finish(),
            BackendMessage::PortalSuspended => Payload::new(b's').finish(),
            BackendMessage::ParameterDescription(b) => Payload::new(b't').bytes(b).finish(),
            BackendMessage::FunctionCallResponse(v) => match v {
                None => Payload::new(b'V').i32(-1).finish(),
                Some(v) => Payload::new(b'V')
                    .i32(i32::try_from(v.len()).unwrap_or(i32::MAX))
                    .bytes(v)
                    .finish(),
            },
        }
    }

    /// Rows from a CommandComplete tag (`INSERT 0 5`, `SELECT 3`, `COPY 2`).
    pub fn rows_from_tag(tag: &str) -> Option<u64> {
        tag.rsplit(' ').next().and_then(|n| n.parse().ok())
    }
}

#[cfg(test)]
mod tests;
