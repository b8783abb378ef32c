//! Upstream authentication: injected credentials (SCRAM-SHA-256, md5,
//! cleartext, as the server asks) or a relay of the client's own exchange;
//! then the rest of startup up to the first ReadyForQuery.
//!
//! With injected credentials the client is asked for a password as the
//! target's [`ClientPassword`] says (by default exactly when the server
//! asked interlock for one), and its answer is discarded: drivers then see
//! the exchange they would have seen directly (`PQconnectionUsedPassword`,
//! "no password supplied" for a client without one).

use bytes::{BufMut, BytesMut};
use postgres_protocol::authentication::{
    md5_hash,
    sasl::{ChannelBinding, ScramSha256},
};

use super::{
    cancel::Registration,
    encoding::ClientEncoding,
    error::{PgError, ProtocolError},
    frame::Frame,
    legs::{Legs, proto, read_err},
    message::{AuthRequest, BackendMessage, FrontendMessage, StartupPacket},
    target::{ClientPassword, PgTarget},
};
use crate::gate::Side;

const SCRAM: &str = "SCRAM-SHA-256";

fn password_frame(p: &str) -> Frame {
    let mut b = BytesMut::with_capacity(p.len() + 1);
    b.put_slice(p.as_bytes());
    b.put_u8(0);
    FrontendMessage::Password(b.freeze()).encode()
}

fn scram_err(e: std::io::Error) -> PgError {
    PgError::Auth(format!("SCRAM exchange failed: {e}"))
}

async fn server_frame(legs: &mut Legs) -> Result<(Frame, BackendMessage), PgError> {
    let frame = legs
        .server_r
        .read_frame()
        .await
        .map_err(|e| read_err(Side::Server, e))?
        .ok_or_else(|| {
            PgError::Refused("the server closed the connection during startup".into())
        })?;
    let msg = BackendMessage::decode(&frame).map_err(proto(Side::Server))?;
    Ok((frame, msg))
}

/// Sends the upstream StartupMessage and authenticates. Returns the
/// negotiated protocol minor version and the startup parameters used. The server's own errors are relayed
/// to the client and returned as `Refused`.
pub(crate) async fn authenticate(
    legs: &mut Legs,
    target: &PgTarget,
    minor: u16,
    mut params: Vec<(String, String)>,
) -> Result<(u16, Vec<(String, String)>), PgError> {
    let creds = target.credentials.as_ref();
    if let Some(user) = creds.and_then(|c| c.user.as_ref()) {
        params.retain(|(k, _)| k != "user");
        params.insert(0, ("user".into(), user.clone()));
    }
    if let Some(db) = &target.database {
        params.retain(|(k, _)| k != "database");
        params.push(("database".into(), db.clone()));
    }
    let user = params
        .iter()
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let startup = StartupPacket::Startup {
        minor,
        params: params.clone(),
    }
    .encode();
    legs.server_w.send(&startup).await?;

    let mut negotiated = minor;
    let mut scram: Option<ScramSha256> = None;
    // The first password request the server made of interlock, if any.
    let mut asked: Option<AuthRequest> = None;
    loop {
        let (frame, msg) = server_frame(legs).await?;
        let req = match msg {
            BackendMessage::NegotiateProtocolVersion { version, .. } => {
                negotiated = u16::try_from(version & 0xffff).unwrap_or(0);
                legs.client_w.send(&frame).await?;
                continue;
            }
            BackendMessage::NoticeResponse(_) => {
                legs.client_w.send(&frame).await?;
                continue;
            }
            BackendMessage::ErrorResponse(f) => {
                legs.client_w.send(&frame).await?;
                return Err(PgError::Refused(f.get(b'M').unwrap_or("").to_string()));
            }
            BackendMessage::Authentication(req) => req,
            other => {
                return Err(PgError::protocol(
                    Side::Server,
                    ProtocolError::Unexpected(format!("{other:?} during authentication")),
                ));
            }
        };
        if req == AuthRequest::Ok {
            // A client that gave a job token as its password (asked before
            // the session was decided) has been asked already.
            if creds.is_some()
                && target.client_password == ClientPassword::Mirror
                && target.ask_token.is_none()
                && let Some(asked) = asked
            {
                ask_client(legs, &asked, target.startup_timeout).await?;
            }
            legs.client_w.send(&frame).await?;
            return Ok((negotiated, params));
        }
        if asked.is_none()
            && matches!(
                req,
                AuthRequest::Cleartext | AuthRequest::Md5 { .. } | AuthRequest::Sasl { .. }
            )
        {
            asked = Some(req.clone());
        }
        let Some(creds) = creds else {
            relay_client_auth(legs, req, target.startup_timeout).await?;
            continue;
        };
        if let Some(reply) = answer(req, creds.password.expose(), &user, &mut scram)? {
            legs.server_w.send(&reply).await?;
        }
    }
}

/// The reply to one authentication request with injected credentials;
/// `None` when the request needs none. Errors: unsupported methods, a
/// failed SCRAM exchange (including a server that cannot prove it knows
/// the password).
pub(crate) fn answer(
    req: AuthRequest,
    password: &str,
    user: &str,
    scram: &mut Option<ScramSha256>,
) -> Result<Option<Frame>, PgError> {
    Ok(Some(match req {
        AuthRequest::Cleartext => password_frame(password),
        AuthRequest::Md5 { salt } => {
            password_frame(&md5_hash(user.as_bytes(), password.as_bytes(), salt))
        }
        AuthRequest::Sasl { mechanisms } => {
            if !mechanisms.iter().any(|m| m == SCRAM) {
                return Err(PgError::Auth(format!(
                    "no supported SASL mechanism in {mechanisms:?}"
                )));
            }
            let s = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
            let f = FrontendMessage::sasl_initial(SCRAM, s.message());
            *scram = Some(s);
            f
        }
        AuthRequest::SaslContinue(data) => {
            let s = scram
                .as_mut()
                .ok_or_else(|| PgError::Auth("SASL continue without start".into()))?;
            s.update(&data).map_err(scram_err)?;
            FrontendMessage::Password(bytes::Bytes::copy_from_slice(s.message())).encode()
        }
        AuthRequest::SaslFinal(data) => {
            let s = scram
                .as_mut()
                .ok_or_else(|| PgError::Auth("SASL final without start".into()))?;
            // Verifies the server's signature: a server that does not know the password fails here.
            s.finish(&data).map_err(scram_err)?;
            return Ok(None);
        }
        AuthRequest::Ok => return Ok(None),
        AuthRequest::Other(n) => {
            return Err(PgError::Auth(format!(
                "unsupported authentication method {n}"
            )));
        }
    }))
}

/// Asks the client for a password the way the server asked interlock
/// (cleartext as cleartext; md5 and SCRAM as md5 with a fresh salt, since
/// a SCRAM exchange needs the client's real password on this side) and
/// reads the answer, which is dropped unseen.
async fn ask_client(
    legs: &mut Legs,
    server_asked: &AuthRequest,
    limit: std::time::Duration,
) -> Result<(), PgError> {
    let req = match server_asked {
        AuthRequest::Cleartext => AuthRequest::Cleartext,
        _ => {
            let mut salt = [0u8; 4];
            // A salt without randomness still works: nothing is checked.
            let _ = getrandom::fill(&mut salt);
            AuthRequest::Md5 { salt }
        }
    };
    legs.client_w
        .send(&BackendMessage::Authentication(req).encode())
        .await?;
    client_password(legs, limit).await.map(drop)
}

/// The client's answer to an authentication request: a PasswordMessage
/// (also SASL responses) within `limit`. Errors: anything else, no answer
/// in time, or the client leaving (as libpq does with no password to give).
async fn client_password(legs: &mut Legs, limit: std::time::Duration) -> Result<Frame, PgError> {
    let late = || PgError::protocol(Side::Client, ProtocolError::AuthTimeout(limit.as_secs()));
    let frame = tokio::time::timeout(limit, legs.client_r.read_frame())
        .await
        .map_err(|_| late())?
        .map_err(|e| read_err(Side::Client, e))?
        .ok_or_else(|| PgError::Refused("the client left during authentication".into()))?;
    match FrontendMessage::decode(&frame).map_err(proto(Side::Client))? {
        FrontendMessage::Password(_) => Ok(frame),
        other => Err(PgError::protocol(
            Side::Client,
            ProtocolError::Unexpected(format!("{other:?} during authentication")),
        )),
    }
}

/// Passthrough: forwards one server auth request to the client (without
/// SCRAM-SHA-256-PLUS, since TLS is terminated here) and relays the answer.
/// The client has `limit` to answer each request, as it had to start up.
async fn relay_client_auth(
    legs: &mut Legs,
    req: AuthRequest,
    limit: std::time::Duration,
) -> Result<(), PgError> {
    let needs_answer = !matches!(req, AuthRequest::SaslFinal(_));
    let req = match req {
        AuthRequest::Sasl { mechanisms } => AuthRequest::Sasl {
            mechanisms: mechanisms
                .into_iter()
                .filter(|m| m != "SCRAM-SHA-256-PLUS")
                .collect(),
        },
        other => other,
    };
    legs.client_w
        .send(&BackendMessage::Authentication(req).encode())
        .await?;
    if !needs_answer {
        return Ok(());
    }
    let frame = client_password(legs, limit).await?;
    Ok(legs.server_w.send(&frame).await?)
}

/// Relays ParameterStatus, notices and the first ReadyForQuery, replacing
/// the secret of the server's BackendKeyData with the registration's. Returns the
/// session's client_encoding as the server reported it.
pub(crate) async fn finish_startup(
    legs: &mut Legs,
    reg: &Registration,
) -> Result<ClientEncoding, PgError> {
    let mut encoding = ClientEncoding::Utf8;
    loop {
        let (frame, msg) = server_frame(legs).await?;
        match msg {
            BackendMessage::BackendKeyData { pid, secret } => {
                // The server's pid, interlock's secret (see cancel.rs).
                let (pid, secret) = reg.client_key(pid, secret);
                legs.client_w
                    .send(&BackendMessage::BackendKeyData { pid, secret }.encode())
                    .await?;
            }
            BackendMessage::ParameterStatus { name, value } => {
                if name == "client_encoding" {
                    encoding = ClientEncoding::from_name(&value);
                }
                legs.client_w.send(&frame).await?;
            }
            BackendMessage::NoticeResponse(_) => legs.client_w.send(&frame).await?,
            BackendMessage::ReadyForQuery { .. } => {
                legs.client_w.send(&frame).await?;
                return Ok(encoding);
            }
            BackendMessage::ErrorResponse(f) => {
                legs.client_w.send(&frame).await?;
                return Err(PgError::Refused(f.get(b'M').unwrap_or("").to_string()));
            }
            other => {
                return Err(PgError::protocol(
                    Side::Server,
                    ProtocolError::Unexpected(format!("{other:?} during startup")),
                ));
            }
        }
    }
}
