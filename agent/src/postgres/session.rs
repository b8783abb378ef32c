//! One proxied client connection, start to end: client startup, the gate's
//! session decision, upstream connect and authentication, then the relay.

use std::sync::Arc;

use tokio::net::TcpStream;

use super::{
    auth,
    cancel::CancelRegistry,
    catalog::Catalog,
    error::PgError,
    frame::{FrameReader, FrameWriter},
    legs::{Legs, Writer, fatal},
    message::ErrorFields,
    relay::Relay,
    startup::{ClientLeg, Hello, negotiate, read_hello},
    target::PgTarget,
    tls::{self, BoxIo},
};
use crate::gate::{Gate, HoldOutcome, Record, Request, Verdict};

/// Proxies one client connection to `target`, asking `gate` about the
/// session and every statement. `cancels` is shared by all sessions of the
/// daemon so CancelRequests on new connections find their session.
///
/// Returns when either side closes. Errors: I/O failures, protocol
/// violations (the client got a FATAL and a `ProtocolError` was recorded),
/// upstream TLS or authentication failures, the server refusing the
/// session (its error was relayed), or the gate blocking the session.
pub async fn serve(
    client: TcpStream,
    target: PgTarget,
    gate: Arc<dyn Gate>,
    cancels: CancelRegistry,
) -> Result<(), PgError> {
    let _ = client.set_nodelay(true);
    let (client, leg) = match negotiate(client, target.client_tls.clone()).await {
        Ok(Some(negotiated)) => negotiated,
        Ok(None) => return Ok(()),
        Err(e) => {
            // Nothing can be said to a client whose TLS failed; a protocol
            // error is still recorded.
            if let PgError::Protocol { side, source } = &e {
                gate.record(Record::ProtocolError {
                    side: *side,
                    message: source.to_string(),
                })
                .await;
            }
            return Err(e);
        }
    };
    if leg != ClientLeg::Plain {
        tracing::debug!(?leg, "client leg encrypted");
    }
    let (r, w) = tokio::io::split(client);
    let mut client_r = FrameReader::new(r, target.max_frame);
    let mut client_w = FrameWriter::new(w);

    let opened = open(
        &mut client_r,
        &mut client_w,
        &target,
        gate.as_ref(),
        &cancels,
    )
    .await;
    let (minor, params, upstream) = match opened {
        Ok(Some(o)) => o,
        Ok(None) => return Ok(()),
        Err(e) => {
            report(&e, &mut client_w, gate.as_ref()).await;
            client_w.shutdown().await;
            return Err(e);
        }
    };
    let (server_r, server_w) = tokio::io::split(upstream);
    let mut legs = Legs {
        client_r,
        client_w,
        server_r: FrameReader::new(server_r, target.max_frame),
        server_w: FrameWriter::new(server_w),
    };
    let result = async {
        let (minor, params) = auth::authenticate(&mut legs, &target, minor, params).await?;
        let catalog = Catalog::new(target.clone(), params);
        let registration = cancels.register(target.upstream, minor);
        auth::finish_startup(&mut legs, &registration).await?;
        let signal = registration.signal.clone();
        let r = Relay::new(&mut legs, gate.clone(), signal, catalog)
            .run()
            .await;
        drop(registration);
        r
    }
    .await;
    if let Err(e) = &result {
        report(e, &mut legs.client_w, gate.as_ref()).await;
    }
    legs.client_w.shutdown().await;
    legs.server_w.shutdown().await;
    result
}

type Opened = (u16, Vec<(String, String)>, BoxIo);

/// Client startup, the session decision and the upstream connection.
/// `Ok(None)`: nothing more to do (client left, or it was a cancel).
async fn open(
    r: &mut super::legs::Reader,
    w: &mut Writer,
    target: &PgTarget,
    gate: &dyn Gate,
    cancels: &CancelRegistry,
) -> Result<Option<Opened>, PgError> {
    let (minor, params) = match read_hello(r).await? {
        None => return Ok(None),
        Some(Hello::Cancel { pid, secret }) => {
            cancels.cancel(pid, secret).await;
            return Ok(None);
        }
        Some(Hello::Startup { minor, params }) => (minor, params),
    };
    // Fail closed: anything but Allow or an approved hold ends the session.
    match gate.decide(&Request::Session).await {
        Verdict::Allow { .. } => {}
        Verdict::Block { rule, message } => {
            let msg = format!("interlock: session blocked by rule \"{rule}\": {message}");
            w.send(&fatal("42501", &msg)).await?;
            return Err(PgError::Blocked(rule));
        }
        Verdict::Hold(held) => {
            let (id, rule) = (held.approval_id.clone(), held.rule.clone());
            let notice = ErrorFields::new(
                "NOTICE",
                "01000",
                &format!(
                    "interlock: session held for approval {id} (rule \"{rule}\"); {}",
                    held.how_to_approve
                ),
            );
            w.send(&notice.notice_frame()).await?;
            if !matches!(held.outcome().await, HoldOutcome::Approved { .. }) {
                let msg =
                    format!("interlock: session not approved (approval {id}, rule \"{rule}\")");
                w.send(&fatal("42501", &msg)).await?;
                return Err(PgError::Blocked(rule));
            }
        }
    }
    let upstream = tls::connect(target).await?;
    Ok(Some((minor, params, upstream)))
}

/// Tells the client why its session ends (unless the server or the gate
/// already did) and records protocol errors.
async fn report(e: &PgError, w: &mut Writer, gate: &dyn Gate) {
    let reply = match e {
        PgError::Protocol { side, source } => {
            gate.record(Record::ProtocolError {
                side: *side,
                message: source.to_string(),
            })
            .await;
            let who = match side {
                crate::gate::Side::Client => "the client",
                crate::gate::Side::Server => "the server",
            };
            Some(fatal(
                "08P01",
                &format!("interlock: protocol violation by {who}: {source}"),
            ))
        }
        PgError::Tls(_) | PgError::Auth(_) => Some(fatal(
            "08006",
            &format!("interlock: cannot open the upstream session: {e}"),
        )),
        PgError::Io(_) | PgError::ClientTls(_) | PgError::Refused(_) | PgError::Blocked(_) => None,
    };
    if let Some(reply) = reply {
        let _ = w.send(&reply).await;
    }
}
