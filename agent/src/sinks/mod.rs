//! Event delivery beyond the audit log: webhooks signed per Standard
//! Webhooks, each endpoint with its own secrets and a durable on-disk spool
//! under `<state dir>/spool/<endpoint hash>/`. The log thread appends every
//! event to each spool ([`Spool::append`]) right after its audit record;
//! one [`Delivery`] task per endpoint sends them. Policies:
//! docs/design-notes.md, "Webhook sink".

mod audit_sink;
mod endpoint;
mod error;
mod sign;
mod spool;
mod spool_file;
mod spool_state;
mod webhook;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use reqwest::Url;
use sha2::{Digest as _, Sha256};

pub use endpoint::{EndpointStatus, Endpoints, TestAnswer};
pub use error::SinkError;
pub use sign::{Secret, Secrets};
pub use spool::{Spool, SpoolStats};
pub use webhook::{Delivery, client, display_url, post, send_test};

/// One `--webhook` endpoint: its URL and, optionally, its own secret file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookSpec {
    pub url: Url,
    /// Secrets of this endpoint only (else the shared secret file).
    pub secret_file: Option<PathBuf>,
}

/// The suffix that gives an endpoint its own secret file.
const SECRET_SUFFIX: &str = ",secret=";

impl WebhookSpec {
    /// Parses `URL` or `URL,secret=PATH`.
    ///
    /// # Errors
    /// [`SinkError::Url`] naming the value; [`SinkError::SecretPath`] for
    /// an empty path.
    pub fn parse(s: &str) -> Result<WebhookSpec, SinkError> {
        let (url, secret_file) = match s.rfind(SECRET_SUFFIX) {
            Some(i) => {
                let path = s.get(i + SECRET_SUFFIX.len()..).unwrap_or_default();
                if path.is_empty() {
                    return Err(SinkError::SecretPath(s.to_string()));
                }
                (s.get(..i).unwrap_or_default(), Some(PathBuf::from(path)))
            }
            None => (s, None),
        };
        Ok(WebhookSpec {
            url: parse_url(url)?,
            secret_file,
        })
    }
}

/// Webhook settings of `interlock run`.
#[derive(Clone, Debug, Default)]
pub struct WebhookOptions {
    /// Endpoints (any number; none disables webhooks).
    pub endpoints: Vec<WebhookSpec>,
    /// File of `whsec_` secrets, one a line, all used to sign; for every
    /// endpoint without a secret file of its own.
    pub secret_file: Option<PathBuf>,
    /// Events per request (1: one event per request, else a JSON array).
    pub batch: usize,
    /// Bound of each endpoint's undelivered events, in bytes.
    pub spool_bytes: u64,
}

/// Parses an `http://` or `https://` URL.
///
/// # Errors
/// [`SinkError::Url`] naming the value.
pub fn parse_url(s: &str) -> Result<Url, SinkError> {
    match Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u),
        _ => Err(SinkError::Url(s.to_string())),
    }
}

/// The configured endpoints: their spools (for the log thread), their
/// delivery tasks (for the daemon's runtime) and a handle on all of them
/// (for the control socket: status and test events).
pub struct Webhooks {
    spools: Vec<Arc<Spool>>,
    deliveries: Vec<Delivery>,
    endpoints: Endpoints,
}

impl Webhooks {
    /// Reads each endpoint's secrets and opens its spool under `state_dir`.
    ///
    /// # Errors
    /// [`SinkError`] naming the secret file, the endpoint without secrets,
    /// the spool or the client problem.
    pub fn open(opts: &WebhookOptions, state_dir: &Path) -> Result<Webhooks, SinkError> {
        let shared = opts.secret_file.as_deref().map(Secrets::load).transpose()?;
        let client = client()?;
        let mut list = Vec::new();
        let mut deliveries = Vec::new();
        for spec in &opts.endpoints {
            let label = display_url(&spec.url);
            let secrets = match (&spec.secret_file, &shared) {
                (Some(own), _) => Secrets::load(own)?,
                (None, Some(s)) => s.clone(),
                (None, None) => return Err(SinkError::SecretMissing(label)),
            };
            let spool = Arc::new(Spool::open(
                &state_dir.join("spool").join(endpoint_hash(&spec.url)),
                &label,
                opts.spool_bytes,
            )?);
            let ep = Arc::new(endpoint::Endpoint {
                url: spec.url.clone(),
                label,
                secrets,
                spool,
            });
            deliveries.push(Delivery {
                endpoint: ep.clone(),
                batch: opts.batch.max(1),
                client: client.clone(),
            });
            list.push(ep);
        }
        Ok(Webhooks {
            spools: list.iter().map(|e| e.spool.clone()).collect(),
            deliveries,
            endpoints: Endpoints::new(list, client),
        })
    }

    /// Splits into the spools, the delivery tasks and the handle.
    pub fn into_parts(self) -> (Vec<Arc<Spool>>, Vec<Delivery>, Endpoints) {
        (self.spools, self.deliveries, self.endpoints)
    }
}

/// The spool directory name of `url`: 16 hex digits of its SHA-256.
pub fn endpoint_hash(url: &Url) -> String {
    let d = Sha256::digest(url.as_str().as_bytes());
    hex::encode(d.get(..8).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_may_name_their_own_secret_file() {
        let plain = WebhookSpec::parse("https://siem.example/hook?a=1,2").unwrap();
        assert_eq!(plain.url.as_str(), "https://siem.example/hook?a=1,2");
        assert_eq!(plain.secret_file, None);
        let own =
            WebhookSpec::parse("http://127.0.0.1:9/x,secret=/etc/interlock/x.secret").unwrap();
        assert_eq!(own.url.as_str(), "http://127.0.0.1:9/x");
        assert_eq!(
            own.secret_file,
            Some(PathBuf::from("/etc/interlock/x.secret"))
        );
        assert!(matches!(
            WebhookSpec::parse("http://a/,secret="),
            Err(SinkError::SecretPath(_))
        ));
        assert!(matches!(
            WebhookSpec::parse("ftp://a/,secret=/x"),
            Err(SinkError::Url(_))
        ));
    }
}
