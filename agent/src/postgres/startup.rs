//! The client's side of startup: SSLRequest/GSSENCRequest answered 'N',
//! then a StartupMessage or a CancelRequest.

use bytes::Bytes;

use super::{
    error::{PgError, ProtocolError},
    legs::{Reader, Writer, read_err},
    message::StartupPacket,
};
use crate::gate::Side;

/// What the client opened the connection for.
pub(crate) enum Hello {
    Startup {
        minor: u16,
        params: Vec<(String, String)>,
    },
    Cancel {
        pid: i32,
        secret: Bytes,
    },
}

/// Reads the client's first messages. `Ok(None)` if the client left.
/// Errors: malformed packets, more than one SSLRequest/GSSENCRequest, TLS
/// sent directly (not supported yet).
pub(crate) async fn read_hello(r: &mut Reader, w: &mut Writer) -> Result<Option<Hello>, PgError> {
    // SSLRequest and GSSENCRequest may each come once before the startup.
    for _ in 0..3 {
        let Some(frame) = r
            .read_startup()
            .await
            .map_err(|e| read_err(Side::Client, e))?
        else {
            return Ok(None);
        };
        match StartupPacket::decode(&frame).map_err(|e| PgError::protocol(Side::Client, e))? {
            StartupPacket::Ssl | StartupPacket::GssEnc => {
                if r.buffered() > 0 {
                    // Bytes after the request would be read as if encrypted (CVE-2021-23214).
                    return Err(PgError::protocol(
                        Side::Client,
                        ProtocolError::Unexpected("data after an encryption request".into()),
                    ));
                }
                w.send_bytes(b"N").await?;
            }
            StartupPacket::Startup { minor, params } => {
                return Ok(Some(Hello::Startup { minor, params }));
            }
            StartupPacket::Cancel { pid, secret } => {
                return Ok(Some(Hello::Cancel { pid, secret }));
            }
        }
    }
    Err(PgError::protocol(
        Side::Client,
        ProtocolError::Unexpected("repeated encryption requests".into()),
    ))
}
