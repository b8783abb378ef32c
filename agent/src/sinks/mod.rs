//! Event delivery beyond the audit log: webhooks signed per Standard
//! Webhooks, each endpoint with a durable on-disk spool under
//! `<state dir>/spool/<endpoint hash>/`. The log thread appends every event
//! to each spool ([`Spool::append`]) before it counts as handed off; one
//! [`Delivery`] task per endpoint sends them. Policies: docs/design-notes.md.

mod error;
mod sign;
mod spool;
mod webhook;

use std::{path::Path, path::PathBuf, sync::Arc};

use reqwest::Url;
use sha2::{Digest as _, Sha256};

pub use error::SinkError;
pub use sign::{Secret, Secrets};
pub use spool::Spool;
pub use webhook::{Delivery, client, display_url, post, send_test};

/// Webhook settings of `interlock run`.
#[derive(Clone, Debug, Default)]
pub struct WebhookOptions {
    /// Endpoints (any number; none disables webhooks).
    pub urls: Vec<Url>,
    /// File of `whsec_` secrets, one a line, all used to sign.
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

/// The configured endpoints: their spools (for the log thread) and their
/// delivery tasks (for the daemon's runtime).
pub struct Webhooks {
    spools: Vec<Arc<Spool>>,
    deliveries: Vec<Delivery>,
}

impl Webhooks {
    /// Reads the secrets and opens each endpoint's spool under `state_dir`.
    ///
    /// # Errors
    /// [`SinkError`] naming the secret file, the spool or the client problem.
    pub fn open(opts: &WebhookOptions, state_dir: &Path) -> Result<Webhooks, SinkError> {
        let mut out = Webhooks {
            spools: Vec::new(),
            deliveries: Vec::new(),
        };
        if opts.urls.is_empty() {
            return Ok(out);
        }
        let secrets = Secrets::load(
            opts.secret_file
                .as_deref()
                .ok_or(SinkError::SecretMissing)?,
        )?;
        let client = client()?;
        for url in &opts.urls {
            let spool = Arc::new(Spool::open(
                &state_dir.join("spool").join(endpoint_hash(url)),
                opts.spool_bytes,
            )?);
            out.spools.push(spool.clone());
            out.deliveries.push(Delivery {
                url: url.clone(),
                label: display_url(url),
                secrets: secrets.clone(),
                batch: opts.batch.max(1),
                spool,
                client: client.clone(),
            });
        }
        Ok(out)
    }

    /// Splits into the spools and the delivery tasks.
    pub fn into_parts(self) -> (Vec<Arc<Spool>>, Vec<Delivery>) {
        (self.spools, self.deliveries)
    }
}

/// The spool directory name of `url`: 16 hex digits of its SHA-256.
pub fn endpoint_hash(url: &Url) -> String {
    let d = Sha256::digest(url.as_str().as_bytes());
    hex::encode(d.get(..8).unwrap_or_default())
}
