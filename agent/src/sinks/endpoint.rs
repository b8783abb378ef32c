//! The configured endpoints as a whole, for the control socket: their
//! counters (`interlock status`) and a signed test event to each
//! (`interlock webhook test` without a URL).

use std::sync::Arc;

use reqwest::Url;
use serde::Serialize;

use super::{Secrets, Spool, SpoolStats, webhook};

/// One endpoint: where, how it signs, its spool.
pub(crate) struct Endpoint {
    pub(crate) url: Url,
    /// The URL without credentials or query (for events and logs).
    pub(crate) label: String,
    pub(crate) secrets: Secrets,
    pub(crate) spool: Arc<Spool>,
}

/// Every configured endpoint; cheap to clone.
#[derive(Clone, Default)]
pub struct Endpoints {
    list: Arc<Vec<Arc<Endpoint>>>,
    client: Option<reqwest::Client>,
}

/// One endpoint in `interlock status`.
#[derive(Clone, Debug, Serialize)]
pub struct EndpointStatus {
    pub endpoint: String,
    #[serde(flatten)]
    pub stats: SpoolStats,
}

/// What an endpoint answered to a test event.
#[derive(Clone, Debug, Serialize)]
pub struct TestAnswer {
    pub endpoint: String,
    /// The HTTP status, if the request got an answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The answer's body, or why there was none.
    pub body: String,
}

impl Endpoints {
    pub(crate) fn new(list: Vec<Arc<Endpoint>>, client: reqwest::Client) -> Endpoints {
        Endpoints {
            list: Arc::new(list),
            client: Some(client),
        }
    }

    /// Each endpoint's counters, in configuration order. Only root sees
    /// the endpoints' paths (see [`webhook::redacted_url`]).
    pub fn status(&self, root: bool) -> Vec<EndpointStatus> {
        self.list
            .iter()
            .map(|e| EndpointStatus {
                endpoint: if root {
                    e.label.clone()
                } else {
                    webhook::redacted_url(&e.url)
                },
                stats: e.spool.stats(),
            })
            .collect()
    }

    /// Sends one signed test event (from `host`) to every endpoint, one
    /// after the other; the event is not logged or spooled.
    pub async fn send_test(&self, host: &str) -> Vec<TestAnswer> {
        let Some(client) = &self.client else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in self.list.iter() {
            let (id, body) = crate::audit::test_event_body(host, &e.label);
            let answer = match webhook::post(client, &e.url, Some(&e.secrets), &id, body).await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let body = resp.text().await.unwrap_or_else(|err| err.to_string());
                    TestAnswer {
                        endpoint: e.label.clone(),
                        status: Some(status),
                        body,
                    }
                }
                Err(err) => TestAnswer {
                    endpoint: e.label.clone(),
                    status: None,
                    body: err.to_string(),
                },
            };
            out.push(answer);
        }
        out
    }
}
