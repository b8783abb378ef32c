//! Delivery of one endpoint's spool: signed POSTs in event order, retried
//! with exponential backoff and jitter (or after the receiver's
//! `Retry-After`), 410 Gone disables the endpoint. Runs as its own task, so sessions never wait on it.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use reqwest::{StatusCode, Url};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Secrets, SinkError, endpoint::Endpoint, spool::Batch};
use crate::audit::{EventKind, EventSink};

const FIRST_DELAY: Duration = Duration::from_millis(500);
const MAX_DELAY: Duration = Duration::from_secs(60);
/// A `Retry-After` beyond this is capped (a receiver cannot park us for days).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle task looks at the spool without being woken.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// The HTTP client every request uses (rustls, timeouts on every request).
///
/// # Errors
/// [`SinkError::Client`] if the TLS backend cannot be set up.
pub fn client() -> Result<reqwest::Client, SinkError> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("interlock/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(SinkError::Client)
}

/// `url` without credentials or query, safe for events and logs.
pub fn display_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// `url` for callers who are not root (`interlock status` is open to every
/// local user): scheme, host and port only, since some collectors put
/// their token in the path, and the endpoint's spool name so endpoints on
/// one host can still be told apart.
pub fn redacted_url(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = if matches!(url.path(), "" | "/") {
        "/"
    } else {
        "/…"
    };
    format!(
        "{}://{host}{port}{path} (spool {})",
        url.scheme(),
        super::endpoint_hash(url)
    )
}

/// Delay before retry `attempt` (0-based): 0.5 s doubling to 60 s, +-20% jitter.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = FIRST_DELAY
        .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
        .min(MAX_DELAY);
    let mut r = [0u8; 2];
    let _ = getrandom::fill(&mut r);
    // 0.8 ..= 1.2
    let factor = 0.8 + 0.4 * f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX);
    base.mul_f64(factor)
}

/// `Retry-After` as seconds or an HTTP-date (`Wed, 21 Oct 2015 07:28:00
/// GMT`, counted from `now`; a date in the past is zero), capped at
/// [`MAX_RETRY_AFTER`]; `None` when absent or neither form.
pub(crate) fn retry_after(value: Option<&str>, now: SystemTime) -> Option<Duration> {
    let v = value?.trim();
    let wait = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(v).ok()?;
            at.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// One endpoint's delivery task.
pub struct Delivery {
    pub(crate) endpoint: Arc<Endpoint>,
    pub(crate) batch: usize,
    pub(crate) client: reqwest::Client,
}

enum Outcome {
    Delivered,
    Gone(u16),
    /// Retry, after the receiver's `Retry-After` if it gave one.
    Retry(Option<Duration>),
}

impl Delivery {
    /// Delivers until `shutdown`; undelivered events stay in the spool for
    /// the next run. A 410 is reported through `events`.
    pub async fn run(self, events: EventSink, shutdown: CancellationToken) {
        let (spool, label) = (&self.endpoint.spool, &self.endpoint.label);
        if spool.is_disabled() {
            info!(endpoint = %label, "webhook endpoint disabled (410 earlier); not delivering");
            return;
        }
        let _persist = PersistAcksOnExit(spool);
        loop {
            let batch = match spool.peek(self.batch) {
                Ok(b) => b,
                Err(e) => {
                    warn!(endpoint = %label, error = %e, "cannot read webhook spool");
                    None
                }
            };
            let Some(batch) = batch else {
                // Idle: what was delivered is written down now, not at the next ack.
                if let Err(e) = spool.persist_acks() {
                    warn!(endpoint = %label, error = %e, "cannot record webhook delivery");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = spool.appended() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                }
                continue;
            };
            let mut attempt = 0u32;
            loop {
                let outcome = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    o = self.send(&batch) => o,
                };
                let delay = match outcome {
                    Outcome::Delivered => {
                        spool.set_last_error(None);
                        if let Err(e) = spool.ack(batch.end) {
                            warn!(endpoint = %label, error = %e, "cannot record webhook delivery");
                        }
                        break;
                    }
                    Outcome::Gone(status) => {
                        warn!(endpoint = %label, status, "webhook receiver is gone: endpoint disabled");
                        if let Err(e) = spool.disable(status) {
                            warn!(endpoint = %label, error = %e, "cannot persist disabled endpoint");
                        }
                        events
                            .record(EventKind::WebhookDisabled {
                                endpoint: label.clone(),
                                status,
                            })
                            .await;
                        return;
                    }
                    Outcome::Retry(after) => after.unwrap_or_else(|| backoff(attempt)),
                };
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }

    async fn send(&self, batch: &Batch) -> Outcome {
        let (ep, label) = (&self.endpoint, &self.endpoint.label);
        let (id, body) = batch_body(batch, self.batch > 1);
        match post(&self.client, &ep.url, Some(&ep.secrets), &id, body).await {
            Ok(resp) => {
                let status = resp.status();
                if status.is_success() {
                    Outcome::Delivered
                } else if status == StatusCode::GONE {
                    Outcome::Gone(status.as_u16())
                } else {
                    let after = retry_after(
                        resp.headers()
                            .get(reqwest::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok()),
                        SystemTime::now(),
                    );
                    warn!(endpoint = %label, status = status.as_u16(), retry_after_secs = after.map(|d| d.as_secs()), "webhook rejected; retrying");
                    ep.spool
                        .set_last_error(Some(format!("HTTP {}", status.as_u16())));
                    Outcome::Retry(after)
                }
            }
            Err(e) => {
                warn!(endpoint = %label, error = %e, "webhook delivery failed; retrying");
                ep.spool.set_last_error(Some(e.to_string()));
                Outcome::Retry(None)
            }
        }
    }
}

/// Writes the spool's deferred acknowledgements however [`Delivery::run`] returns (shutdown,
/// 410, or a cancelled task), so a clean stop redelivers nothing.
struct PersistAcksOnExit<'a>(&'a super::spool::Spool);

impl Drop for PersistAcksOnExit<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.persist_acks() {
            warn!(endpoint = %self.0.label(), error = %e, "cannot record webhook delivery");
        }
    }
}

/// The `webhook-id` and body of a batch. Without batching (`array`
/// false) the one event as itself, with its id; with batching always a
/// JSON array (also of one), id `<first event id>_<count>`, so a receiver
/// set up for batches only ever parses arrays.
pub(crate) fn batch_body(batch: &Batch, array: bool) -> (String, Vec<u8>) {
    let first = batch.ids.first().cloned().unwrap_or_default();
    if let (false, [body]) = (array, batch.bodies.as_slice()) {
        return (first, body.clone());
    }
    let mut body = vec![b'['];
    for (i, b) in batch.bodies.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b);
    }
    body.push(b']');
    (format!("{first}_{}", batch.ids.len()), body)
}

/// POSTs `body` with the Standard Webhooks headers (signed when `secrets`).
///
/// # Errors
/// [`SinkError::Request`] on connection failure or timeout.
pub async fn post(
    client: &reqwest::Client,
    url: &Url,
    secrets: Option<&Secrets>,
    id: &str,
    body: Vec<u8>,
) -> Result<reqwest::Response, SinkError> {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut req = client
        .post(url.clone())
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string());
    if let Some(s) = secrets {
        req = req.header("webhook-signature", s.signature(id, ts, &body));
    }
    // reqwest names the URL in its errors; paths and queries may hold a
    // collector's token, and errors reach logs and `interlock status`.
    req.body(body)
        .send()
        .await
        .map_err(|e| SinkError::Request(e.without_url()))
}

/// `interlock webhook test URL`: POSTs one test event (from `host`, signed
/// with the secrets in `secret_file`, if given) and returns the
/// receiver's status and body.
///
/// # Errors
/// [`SinkError`] for the secret file, the client, or a failed request.
pub async fn send_test(
    url: &Url,
    secret_file: Option<&std::path::Path>,
    host: &str,
) -> Result<(StatusCode, String), SinkError> {
    let secrets = secret_file.map(Secrets::load).transpose()?;
    let (id, body) = crate::audit::test_event_body(host, &display_url(url));
    let resp = post(&client()?, url, secrets.as_ref(), &id, body).await?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| SinkError::Request(e.without_url()))?;
    Ok((status, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_with_bounded_jitter() {
        for _ in 0..200 {
            let d = backoff(0).as_secs_f64();
            assert!((0.4..=0.6).contains(&d), "{d}");
            let d = backoff(3).as_secs_f64();
            assert!((3.2..=4.8).contains(&d), "{d}");
            let d = backoff(40).as_secs_f64();
            assert!((48.0..=72.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates_capped() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let at = |s| retry_after(Some(s), now);
        assert_eq!(at("7"), Some(Duration::from_secs(7)));
        assert_eq!(at(" 0 "), Some(Duration::ZERO));
        assert_eq!(at("99999"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            at("Wed, 21 Oct 2015 07:28:09 GMT"),
            Some(Duration::from_secs(9))
        );
        assert_eq!(at("Wed, 21 Oct 2015 07:27:00 GMT"), Some(Duration::ZERO));
        assert_eq!(at("Thu, 22 Oct 2015 07:28:00 GMT"), Some(MAX_RETRY_AFTER));
        assert_eq!(at("-1"), None);
        assert_eq!(at("soon"), None);
        assert_eq!(retry_after(None, now), None);
    }

    #[test]
    fn batches_get_a_derived_id_and_an_array_body() {
        let one = Batch {
            ids: vec!["a".into()],
            bodies: vec![b"{}".to_vec()],
            end: 0,
        };
        assert_eq!(batch_body(&one, false), ("a".into(), b"{}".to_vec()));
        assert_eq!(batch_body(&one, true), ("a_1".into(), b"[{}]".to_vec()));
        let two = Batch {
            ids: vec!["a".into(), "b".into()],
            bodies: vec![b"{\"x\":1}".to_vec(), b"{}".to_vec()],
            end: 0,
        };
        assert_eq!(
            batch_body(&two, true),
            ("a_2".into(), b"[{\"x\":1},{}]".to_vec())
        );
    }

    #[test]
    fn urls_are_shown_without_credentials() {
        let u = Url::parse("https://user:pw@siem.example/hook?token=abc").unwrap();
        assert_eq!(display_url(&u), "https://siem.example/hook");
    }

    #[test]
    fn redacted_urls_keep_only_scheme_host_and_port() {
        let u = Url::parse("https://user:pw@hooks.example:8443/services/T0/B0/tok3n?x=1").unwrap();
        let shown = redacted_url(&u);
        assert!(
            shown.starts_with("https://hooks.example:8443/… (spool "),
            "{shown}"
        );
        for secret in ["user", "pw", "services", "tok3n", "x=1"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let other = Url::parse("https://hooks.example:8443/services/T0/B0/other").unwrap();
        assert_ne!(
            redacted_url(&other),
            shown,
            "endpoints stay distinguishable"
        );
        let bare = Url::parse("http://[::1]:9000").unwrap();
        assert!(redacted_url(&bare).starts_with("http://[::1]:9000/ (spool "));
    }
}
