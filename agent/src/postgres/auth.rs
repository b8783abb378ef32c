//! Upstream authentication: injected credentials (SCRAM-SHA-256, md5,
//! cleartext, as the server asks) or a relay of the client's own exchange;
//! then the rest of startup up to the first ReadyForQuery.

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
    target::PgTarget,
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
            legs.client_w.send(&frame).await?;
            return Ok((negotiated, params));
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
    let late = || PgError::protocol(Side::Client, ProtocolError::AuthTimeout(limit.as_secs()));
    let frame = tokio::time::timeout(limit, legs.client_r.read_frame())
        .await
        .map_err(|_| late())?
        .map_err(|e| read_err(Side::Client, e))?
        .ok_or_else(|| PgError::Refused("the client left during authentication".into()))?;
    match FrontendMessage::decode(&frame).map_err(proto(Side::Client))? {
        FrontendMessage::Password(_) => Ok(legs.server_w.send(&frame).await?),
        other => Err(PgError::protocol(
            Side::Client,
            ProtocolError::Unexpected(format!("{other:?} during authentication")),
        )),
    }
}

/// Relays ParameterStatus, notices and the first ReadyForQuery, replacing
/// the server's BackendKeyData with the registration's key. Returns the
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
                reg.set_upstream_key(pid, secret);
                let (pid, secret) = reg.client_key();
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
