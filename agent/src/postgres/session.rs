//! One proxied client connection, start to end: client startup, the gate's
//! session decision, upstream connect and authentication, then the relay.

use std::sync::Arc;

use tokio::{
    net::TcpStream,
    time::{Instant, timeout_at},
};

use super::{
    auth,
    cancel::CancelRegistry,
    catalog::Catalog,
    decide::AUDIT_UNWRITABLE,
    error::{PgError, ProtocolError},
    frame::{FrameReader, FrameWriter, tag_name},
    legs::{CLOSE_GRACE, Legs, Writer, fatal, read_err},
    message::ErrorFields,
    relay::Relay,
    startup::{Hello, Offer, closed_silently, negotiate, read_hello},
    target::{PgTarget, UpstreamTls},
    tls::{self, BoxIo},
};
use crate::gate::{Gate, HoldOutcome, Record, Request, Side, Verdict};

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
    // The client's whole startup (TLS handshake included) has one deadline,
    // so an idle or slow socket cannot pin the task.
    let deadline = Instant::now() + target.startup_timeout;
    let late = || {
        PgError::protocol(
            Side::Client,
            ProtocolError::StartupTimeout(target.startup_timeout.as_secs()),
        )
    };
    let negotiated = timeout_at(deadline, negotiate(client, offer(&target)))
        .await
        .unwrap_or_else(|_| Err(late()));
    let negotiated = match negotiated {
        Ok(Some(n)) => n,
        Ok(None) => return Ok(()),
        Err(e) => {
            // Negotiation told a plaintext client why, if it could (a TLS
            // client cannot be told); a protocol error is recorded.
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
    let leg = negotiated.leg;
    gate.record(Record::ClientLeg {
        leg,
        tls_unavailable: negotiated.tls_unavailable,
    })
    .await;
    let (r, w) = tokio::io::split(negotiated.io);
    let mut client_r = FrameReader::new(r, target.max_frame);
    let mut client_w = FrameWriter::new(w);

    let hello = timeout_at(deadline, read_hello(&mut client_r))
        .await
        .unwrap_or_else(|_| Err(late()));
    let hello = match hello {
        Err(e) if closed_silently(&e) => {
            // As the server: nothing is sent, the error is recorded.
            report(&e, None, gate.as_ref()).await;
            client_w.shutdown().await;
            return Err(e);
        }
        other => other,
    };
    let opened = match hello {
        Ok(Some(hello)) => {
            open(
                hello,
                (&mut client_r, &mut client_w, leg),
                &target,
                gate.as_ref(),
                &cancels,
            )
            .await
        }
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    };
    let (minor, params, upstream) = match opened {
        Ok(Some(o)) => o,
        Ok(None) => return Ok(()),
        Err(e) => {
            report(&e, Some(&mut client_w), gate.as_ref()).await;
            // A client that does not read cannot hold the task.
            let _ = timeout_at(Instant::now() + CLOSE_GRACE, client_w.shutdown()).await;
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
        let encoding = auth::finish_startup(&mut legs, &registration).await?;
        let signal = registration.signal.clone();
        let mut relay = Relay::new(&mut legs, gate.clone(), signal, catalog);
        relay.encoding = encoding;
        let r = relay.run().await;
        drop(registration);
        r
    }
    .await;
    if let Err(e) = &result {
        report(e, Some(&mut legs.client_w), gate.as_ref()).await;
    }
    legs.close().await;
    result
}

type Opened = (u16, Vec<(String, String)>, BoxIo);

/// Why the client leg of a passthrough target with a TLS upstream stays
/// plain: libpq then offers channel binding with flag 'y' ("supported by
/// me, not by you", since interlock strips SCRAM-SHA-256-PLUS), which a
/// server on TLS rejects as a downgrade; on a plain leg the flag is 'n'.
pub(crate) const PASSTHROUGH_PLAIN: &str = "passthrough authentication to a TLS upstream \
     keeps the client leg plain (SCRAM channel binding cannot cross interlock)";

/// What a client asking for TLS is offered on this target.
fn offer(target: &PgTarget) -> Offer<'_> {
    match &target.client_tls {
        None => Offer::Refuse(None),
        Some(_) if target.credentials.is_none() && target.tls != UpstreamTls::Disable => {
            Offer::Refuse(Some(PASSTHROUGH_PLAIN))
        }
        Some(tls) => Offer::Tls(tls),
    }
}

/// The session decision and the upstream connection for a client's
/// startup. `Ok(None)`: nothing more to do (client left, or it was a
/// cancel).
async fn open(
    hello: Hello,
    (r, w, leg): (
        &mut super::legs::Reader,
        &mut Writer,
        crate::gate::ClientLeg,
    ),
    target: &PgTarget,
    gate: &dyn Gate,
    cancels: &CancelRegistry,
) -> Result<Option<Opened>, PgError> {
    let (minor, params) = match hello {
        Hello::Cancel { pid, secret } => {
            cancels.cancel(pid, secret).await;
            return Ok(None);
        }
        Hello::Startup { minor, params } => (minor, params),
    };
    // A job token as the password is asked for before the session is decided: the
    // decision verifies it (super::job_token).
    if let Some(ask) = target.ask_token {
        let limit = target.startup_timeout;
        let late = || PgError::protocol(Side::Client, ProtocolError::AuthTimeout(limit.as_secs()));
        let asked = tokio::time::timeout(limit, super::job_token::ask(r, w, leg, ask))
            .await
            .map_err(|_| late())??;
        match asked {
            Some(presented) => gate.present_token(presented),
            None => return Ok(None),
        }
    }
    // Fail closed: anything but Allow or an approved hold ends the session.
    match gate.decide(&Request::Session).await {
        Verdict::Allow { .. } => {}
        Verdict::Block { rule, message } => {
            let msg = format!("interlock: session blocked by rule \"{rule}\": {message}");
            w.send(&fatal("42501", &msg)).await?;
            return Err(PgError::Blocked(rule));
        }
        Verdict::Unavailable { message } => {
            w.send(&fatal(AUDIT_UNWRITABLE, &message)).await?;
            return Err(PgError::AuditUnwritable);
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
            // The client waits for authentication: it sends nothing, so a
            // read ends only when it leaves (withdrawing the hold, which
            // dropping `held` does) or breaks the protocol.
            let outcome = tokio::select! {
                o = held.outcome() => o,
                r = r.read_frame() => {
                    return match r.map_err(|e| read_err(Side::Client, e))? {
                        None => Ok(None),
                        Some(f) => Err(PgError::protocol(
                            Side::Client,
                            ProtocolError::Unexpected(format!(
                                "message {} before authentication",
                                tag_name(f.tag())
                            )),
                        )),
                    };
                }
            };
            if !matches!(outcome, HoldOutcome::Approved { .. }) {
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
/// already did, or the server closed it, or `w` is `None`) and records
/// protocol errors.
async fn report(e: &PgError, w: Option<&mut Writer>, gate: &dyn Gate) {
    let reply = match e {
        PgError::Protocol { side, source } => {
            gate.record(Record::ProtocolError {
                side: *side,
                message: source.to_string(),
            })
            .await;
            let who = match side {
                Side::Client => "the client",
                Side::Server => "the server",
            };
            Some(fatal(
                "08P01",
                &format!("interlock: protocol violation by {who}: {source}"),
            ))
        }
        PgError::Tls(_) | PgError::Auth(_) | PgError::Connect(_) => Some(fatal(
            "08006",
            &format!("interlock: cannot open the upstream session: {e}"),
        )),
        // The server ended the session: the client gets what it sent (its
        // FATAL, if any, was relayed) and then the same close, as it
        // would directly; a word of interlock's own would be one more
        // error than the server gave.
        PgError::UpstreamClosed
        | PgError::Io(_)
        | PgError::ClientTls(_)
        | PgError::Refused(_)
        | PgError::Blocked(_)
        | PgError::AuditUnwritable => None,
    };
    if let (Some(reply), Some(w)) = (reply, w) {
        // Written out when the session's legs close.
        w.push(&reply);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::{io::AsyncWriteExt, net::TcpListener};

    use super::*;
    use crate::gate::BoxFuture;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Record>>);

    impl Gate for Recorder {
        fn decide<'a>(&'a self, _: &'a Request) -> BoxFuture<'a, Verdict> {
            Box::pin(async {
                Verdict::Allow {
                    rule: None,
                    mask: vec![],
                }
            })
        }
        fn possible_masks(&self) -> Vec<crate::gate::MaskRule> {
            vec![]
        }
        fn record(&self, record: Record) -> BoxFuture<'_, ()> {
            if let Ok(mut r) = self.0.lock() {
                r.push(record);
            }
            Box::pin(async {})
        }
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        (l.accept().await.unwrap().0, c)
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_starts_up_is_closed_at_the_deadline() {
        let target = PgTarget::new("127.0.0.1:9".parse().unwrap());
        let gate = Arc::new(Recorder::default());
        // silent from the first byte
        let (server, _client) = pair().await;
        let err = serve(server, target.clone(), gate.clone(), CancelRegistry::new())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("no startup packet within 30 s"),
            "{err}"
        );
        // half a startup packet, after negotiation
        let (server, mut client) = pair().await;
        client
            .write_all(&[0, 0, 0, 40, 0, 3, 0, 0, b'u'])
            .await
            .unwrap();
        let err = serve(server, target, gate.clone(), CancelRegistry::new())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("no startup packet within 30 s"),
            "{err}"
        );
        let records = gate.0.lock().unwrap().clone();
        let timeouts = records
            .iter()
            .filter(|r| matches!(r, Record::ProtocolError { message, .. } if message.contains("within 30 s")))
            .count();
        assert_eq!(timeouts, 2, "{records:?}");
    }
}
