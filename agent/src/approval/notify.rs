//! Notifications of new holds: a Slack-compatible incoming-webhook body
//! (`{"text": ...}`, which Mattermost, Rocket.Chat and Teams' Slack-compatible
//! connectors accept too), and a generic JSON body for bots (the held request
//! as `approval_requested` records it, plus its page URL). Both carry the
//! hold's URL on the approvals page when it is served. The signed, spooled
//! event for SIEMs is the `approval_requested` audit event; this is the human
//! ping, retried a few times, not spooled.

use std::time::Duration;

use tracing::warn;

use super::types::{Pending, RequestView};

const ATTEMPTS: u32 = 4;

/// Posts hold notifications; cheap to clone.
#[derive(Clone, Default)]
pub struct Notifier {
    /// Slack-compatible incoming webhooks.
    chat: Vec<reqwest::Url>,
    /// Generic JSON receivers.
    json: Vec<reqwest::Url>,
    http: reqwest::Client,
}

impl Notifier {
    /// A notifier posting chat messages to every one of `chat` and JSON bodies to every one
    /// of `json` (none: does nothing).
    pub fn new(chat: Vec<reqwest::Url>, json: Vec<reqwest::Url>) -> Notifier {
        Notifier {
            chat,
            json,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Announces `p` in the background; `url` is its page, when the page is served.
    pub fn held(&self, p: &Pending, how: &str, url: Option<&str>) {
        let chat = serde_json::json!({ "text": message(p, how, url) });
        let json = generic(p, how, url);
        let sends = self
            .chat
            .iter()
            .map(|u| (u.clone(), chat.clone()))
            .chain(self.json.iter().map(|u| (u.clone(), json.clone())));
        for (url, body) in sends {
            let http = self.http.clone();
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

/// The generic JSON body for a hold: `type`, the request as `approval_requested` records it
/// (`approval`), its page `url` (null without the page) and `how` to decide it.
pub(crate) fn generic(p: &Pending, how: &str, url: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "type": "approval_requested",
        "approval": p,
        "url": url,
        "how": how,
    })
}

/// The chat message for a hold.
pub(crate) fn message(p: &Pending, how: &str, url: Option<&str>) -> String {
    let who = match (
        &p.requester.user.as_deref().map(slack_escape),
        &p.requester.exe.as_deref().map(slack_escape),
    ) {
        (Some(u), Some(e)) => format!("{u} (uid {}) running {e}", p.requester.uid),
        (None, Some(e)) => format!("uid {} running {e}", p.requester.uid),
        (Some(u), None) => format!("{u} (uid {})", p.requester.uid),
        (None, None) => format!("uid {}", p.requester.uid),
    };
    let what = match &p.request {
        RequestView::Session { destination } => format!("a connection to {destination}"),
        RequestView::Statement { text, .. } => {
            format!("the statement `{}`", slack_escape(&clip(text)))
        }
        RequestView::Command { text, .. } => {
            format!("the command `{}`", slack_escape(&clip(text)))
        }
        RequestView::Login { user } => format!("a login as `{}`", slack_escape(&clip(user))),
        RequestView::Env { name } => format!("the variable `{}`", slack_escape(&clip(name))),
    };
    let ci: Vec<String> = p
        .requester
        .ci
        .iter()
        .map(|(k, v)| format!("{k}={}", slack_escape(v)))
        .collect();
    let mut s = match url {
        // Slack's link syntax; other receivers show it as text with the URL.
        Some(u) => format!(
            ":lock: interlock approval needed: <{u}|{}>\n{who} asks for {what} on target `{}` (rule `{}`).",
            p.id, p.target, p.rule
        ),
        None => format!(
            ":lock: interlock approval needed: `{}`\n{who} asks for {what} on target `{}` (rule `{}`).",
            p.id, p.target, p.rule
        ),
    };
    if !ci.is_empty() {
        s.push_str(&format!("\nCI: {}", ci.join(", ")));
    }
    s.push_str(&format!(
        "\nDenied automatically at {}. To decide, {how}.",
        humantime::format_rfc3339_seconds(p.deadline)
    ));
    s
}

/// Job-controlled text in a Slack message: `&`, `<` and `>` escaped as Slack asks, so a
/// statement cannot make a link (`<https://...|Approve>`) or a mention; control characters
/// escaped so it cannot fake lines.
fn slack_escape(s: &str) -> String {
    crate::text::escape_controls(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn clip(s: &str) -> String {
    const MAX: usize = 300;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", s.get(..i).unwrap_or(s)),
        None => s.to_string(),
    }
}
