//! A job token as the client's password, for targets with `client_auth: [job_token]`: the
//! client is asked for a password (AuthenticationCleartextPassword) before the session is
//! decided, and what it sends goes to the gate, never upstream. Asked only inside TLS unless
//! the target allows a plain leg: on a plain leg the token would cross in clear.

use super::{
    error::{PgError, ProtocolError},
    legs::{Reader, Writer, read_err},
    message::{AuthRequest, BackendMessage, FrontendMessage},
};
use crate::{
    gate::{ClientLeg, Side},
    oidc::{BearerToken, Presented, TokenSource},
};

/// How a target takes job tokens from PostgreSQL clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AskToken {
    /// Ask on a leg without TLS too.
    pub without_tls: bool,
}

/// Asks the client for its job token. `Ok(None)`: the client left.
///
/// # Errors
/// The client answered with something other than a password, or broke the protocol.
pub(super) async fn ask(
    r: &mut Reader,
    w: &mut Writer,
    leg: ClientLeg,
    ask: AskToken,
) -> Result<Option<Presented>, PgError> {
    if leg == ClientLeg::Plain && !ask.without_tls {
        return Ok(Some(Presented::NotAsked {
            source: TokenSource::PostgresPassword,
            why: "this target takes a job token as the password, and interlock asks for it only over TLS (connect with sslmode=require or verify-full)".into(),
        }));
    }
    w.send(&BackendMessage::Authentication(AuthRequest::Cleartext).encode())
        .await?;
    let Some(frame) = r
        .read_frame()
        .await
        .map_err(|e| read_err(Side::Client, e))?
    else {
        return Ok(None);
    };
    match FrontendMessage::decode(&frame).map_err(|e| PgError::protocol(Side::Client, e))? {
        FrontendMessage::Password(bytes) => {
            let text = bytes.strip_suffix(b"\0").unwrap_or(&bytes);
            // A token is ASCII (base64url and dots); anything else cannot verify.
            let token = String::from_utf8_lossy(text).into_owned();
            Ok(Some(Presented::Token(
                TokenSource::PostgresPassword,
                BearerToken::new(token),
            )))
        }
        other => Err(PgError::protocol(
            Side::Client,
            ProtocolError::Unexpected(format!("{other:?} instead of a password")),
        )),
    }
}
