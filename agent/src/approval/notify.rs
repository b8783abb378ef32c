//! Notifications of new holds to chat: a Slack-compatible incoming-webhook
//! body (`{"text": ...}`, which Mattermost, Rocket.Chat and Teams'
//! Slack-compatible connectors accept too). The signed, spooled event for
//! SIEMs is the `approval_requested` audit event; this is the human ping,
//! retried a few times, not spooled.

use std::time::Duration;

use tracing::warn;

use super::types::{Pending, RequestView};

const ATTEMPTS: u32 = 4;

/// Posts hold notifications; cheap to clone.
#[derive(Clone, Default)]
pub struct Notifier {
    urls: Vec<reqwest::Url>,
    http: reqwest::Client,
}

impl Notifier {
    /// A notifier posting to every one of `urls` (none: does nothing).
    pub fn new(urls: Vec<reqwest::Url>) -> Notifier {
        Notifier {
            urls,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Announces `p` in the background.
    pub fn held(&self, p: &Pending, how: &str) {
        if self.urls.is_empty() {
            return;
        }
        let body = serde_json::json!({ "text": message(p, how) });
        for url in self.urls.clone() {
            let (http, body) = (self.http.clone(), body.clone());
            tokio::spawn(async move {
                for attempt in 0..ATTEMPTS {
                    match http
                        .post(url.clone())
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.to_string())
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => return,
                        Ok(r) => {
                            warn!(status = %r.status(), endpoint = %url.host_str().unwrap_or("?"), "approval notification refused")
                        }
                        Err(e) => warn!(error = %e.without_url(), "approval notification failed"),
                    }
                    tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                }
            });
        }
    }
}

/// The chat message for a hold.
pub(crate) fn message(p: &Pending, how: &str) -> String {
    let who = match (&p.requester.user, &p.requester.exe) {
        (Some(u), Some(e)) => format!("{u} (uid {}) running {e}", p.requester.uid),
        (None, Some(e)) => format!("uid {} running {e}", p.requester.uid),
        (Some(u), None) => format!("{u} (uid {})", p.requester.uid),
        (None, None) => format!("uid {}", p.requester.uid),
    };
    let what = match &p.request {
        RequestView::Session { destination } => format!("a connection to {destination}"),
        RequestView::Statement { text, .. } => format!("the statement `{}`", clip(text)),
        RequestView::Command { text, .. } => format!("the command `{}`", clip(text)),
    };
    let ci: Vec<String> = p
        .requester
        .ci
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut s = format!(
        ":lock: interlock approval needed: `{}`\n{who} asks for {what} on target `{}` (rule `{}`).",
        p.id, p.target, p.rule
    );
    if !ci.is_empty() {
        s.push_str(&format!("\nCI: {}", ci.join(", ")));
    }
    s.push_str(&format!(
        "\nDenied automatically at {}. To decide, {how}.",
        humantime::format_rfc3339_seconds(p.deadline)
    ));
    s
}

fn clip(s: &str) -> String {
    const MAX: usize = 300;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", s.get(..i).unwrap_or(s)),
        None => s.to_string(),
    }
}
