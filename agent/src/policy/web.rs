//! The policy's `web:` section: the approvals page the daemon serves for approvers who are
//! not on the runner — where it listens, its public URL, its TLS certificate, sign-in with
//! the organisation's OpenID provider, how long a sign-in lasts, bearer tokens for bots, and
//! which claims of a job token and of an approver's sign-in name the same human (four eyes).
//! Validated here into plain values; `crate::web` serves them.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{
    locate::Step::{self, Index, Key},
    scalar::parse_str,
    upstream::SecretRef,
};

/// Default sign-in lifetime.
pub const DEFAULT_SESSION: Duration = Duration::from_secs(8 * 3600);

/// The validated `web:` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebPolicy {
    /// Where to listen; `None`: only with `interlock run --web-listen`.
    pub listen: Option<SocketAddr>,
    /// The page's public base URL (links in notifications, the sign-in redirect).
    pub url: reqwest::Url,
    pub tls: WebTls,
    pub sign_in: SignIn,
    /// How long a sign-in lasts.
    pub session: Duration,
    /// Bearer tokens for the JSON API (chat bots); `None`: the API takes sign-in cookies only.
    pub api: Option<ApiTokens>,
    /// Pairs (job token claim, approver claim) that name the same human.
    pub four_eyes: Vec<FourEyesPair>,
}

impl WebPolicy {
    /// The page's URL for held request `id`.
    pub fn hold_url(&self, id: &str) -> String {
        format!("{}/holds/{id}", self.url.as_str().trim_end_matches('/'))
    }

    /// Where the provider sends the browser back after sign-in.
    pub fn redirect_url(&self) -> String {
        format!("{}/auth/callback", self.url.as_str().trim_end_matches('/'))
    }
}

/// The page's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebTls {
    /// PEM files: the certificate chain and its private key.
    Files { cert: PathBuf, key: PathBuf },
    /// Minted by interlock's CA (`interlock ca export`) for these names.
    Minted { names: Vec<String> },
}

/// Sign-in with an OpenID provider (authorization code flow with PKCE).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignIn {
    /// The issuer URL (`iss`); its discovery document is fetched from it.
    pub issuer: String,
    pub client_id: String,
    /// `None`: a public client (PKCE only).
    pub client_secret: Option<SecretRef>,
    /// Scopes asked for besides `openid`.
    pub scopes: Vec<String>,
    /// The ID token claim holding the approver's groups.
    pub groups_claim: String,
    /// Whether `oidc_emails` need `email_verified: true` in the ID token.
    pub require_verified_email: bool,
}

/// Bearer tokens for the JSON API: JWTs the sign-in issuer signed for `audience`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiTokens {
    pub audience: String,
}

/// A job token claim and an approver claim that, when equal, name the same human.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FourEyesPair {
    /// A claim of the requester's verified job token (`actor`, `user_login`, `user_email`).
    pub job: String,
    /// A claim of the approver's ID token (`preferred_username`, `email`).
    pub approver: String,
}

/// The default pairs: GitHub's `actor` and GitLab's `user_login` against the approver's
/// `preferred_username`, GitLab's `user_email` against the approver's `email`.
pub fn default_four_eyes() -> Vec<FourEyesPair> {
    [
        ("actor", "preferred_username"),
        ("user_login", "preferred_username"),
        ("user_email", "email"),
    ]
    .into_iter()
    .map(|(job, approver)| FourEyesPair {
        job: job.into(),
        approver: approver.into(),
    })
    .collect()
}

/// `web:` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWeb {
    #[serde(default)]
    listen: Option<SocketAddr>,
    url: String,
    tls: RawTls,
    sign_in: RawSignIn,
    #[serde(default, deserialize_with = "de_opt_duration")]
    session: Option<Duration>,
    #[serde(default)]
    api: Option<RawApi>,
    #[serde(default)]
    four_eyes: Option<Vec<FourEyesPair>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default)]
    cert: Option<PathBuf>,
    #[serde(default)]
    key: Option<PathBuf>,
    #[serde(default)]
    names: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignIn {
    issuer: String,
    client_id: String,
    #[serde(default)]
    client_secret: Option<SecretRef>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    groups_claim: Option<String>,
    #[serde(default)]
    require_verified_email: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    audience: String,
}

fn de_opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    parse_str(d, |s| {
        humantime::parse_duration(s)
            .ok()
            .filter(|d| !d.is_zero())
            .map(Some)
            .ok_or_else(|| format!("`{s}` is not a duration such as `8h` or `30m`"))
    })
}

/// Where in `web:` a problem is, and what it is.
pub(super) type Problem = (Vec<Step<'static>>, String);

fn at(keys: &[&'static str]) -> Vec<Step<'static>> {
    std::iter::once(Key("web"))
        .chain(keys.iter().map(|k| Key(k)))
        .collect()
}

impl RawWeb {
    /// Validates the section.
    pub(super) fn validate(self) -> Result<WebPolicy, Problem> {
        let url = reqwest::Url::parse(&self.url)
            .ok()
            .filter(|u| u.scheme() == "https" && u.host().is_some())
            .filter(|u| u.query().is_none() && u.fragment().is_none())
            .ok_or_else(|| {
                (
                    at(&["url"]),
                    format!(
                        "`{}` is not an https URL without query or fragment (the page is only served over TLS)",
                        self.url
                    ),
                )
            })?;
        let tls = match (self.tls.cert, self.tls.key, self.tls.names.is_empty()) {
            (Some(cert), Some(key), true) => WebTls::Files { cert, key },
            (None, None, false) => {
                if let Some(bad) = self.tls.names.iter().find(|n| n.trim().is_empty()) {
                    return Err((at(&["tls", "names"]), format!("`{bad}` is not a host name")));
                }
                WebTls::Minted {
                    names: self.tls.names,
                }
            }
            _ => {
                return Err((
                    at(&["tls"]),
                    "`tls` needs either `cert` and `key` (PEM files) or `names` (a certificate minted by interlock's CA)".into(),
                ));
            }
        };
        let s = self.sign_in;
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            s.issuer.trim_end_matches('/')
        );
        if !reqwest::Url::parse(&discovery).is_ok_and(|u| crate::oidc::fetchable_url(&u)) {
            return Err((
                at(&["sign_in", "issuer"]),
                format!("`{}` is not an https URL (http only on loopback)", s.issuer),
            ));
        }
        if s.client_id.trim().is_empty() {
            return Err((at(&["sign_in", "client_id"]), "`client_id` is empty".into()));
        }
        let scopes = s
            .scopes
            .unwrap_or_else(|| vec!["email".into(), "profile".into()]);
        if let Some((i, bad)) = scopes
            .iter()
            .enumerate()
            .find(|(_, sc)| sc.is_empty() || sc.contains(char::is_whitespace))
        {
            return Err((
                vec![Key("web"), Key("sign_in"), Key("scopes"), Index(i)],
                format!("`{bad}` is not a scope"),
            ));
        }
        let api = match self.api {
            Some(a) if a.audience.trim().is_empty() => {
                return Err((
                    at(&["api", "audience"]),
                    "`audience` is empty: tokens for any audience would be accepted".into(),
                ));
            }
            Some(a) if a.audience == s.client_id => {
                return Err((
                    at(&["api", "audience"]),
                    "`audience` must differ from `sign_in.client_id`, or every ID token issued for the page would be accepted as an API token".into(),
                ));
            }
            Some(a) => Some(ApiTokens {
                audience: a.audience,
            }),
            None => None,
        };
        let four_eyes = self.four_eyes.unwrap_or_else(default_four_eyes);
        if let Some((i, _)) = four_eyes
            .iter()
            .enumerate()
            .find(|(_, p)| p.job.is_empty() || p.approver.is_empty())
        {
            return Err((
                vec![Key("web"), Key("four_eyes"), Index(i)],
                "a four_eyes pair names an empty claim".into(),
            ));
        }
        Ok(WebPolicy {
            listen: self.listen,
            url,
            tls,
            sign_in: SignIn {
                issuer: s.issuer,
                client_id: s.client_id,
                client_secret: s.client_secret,
                scopes,
                groups_claim: s.groups_claim.unwrap_or_else(|| "groups".into()),
                require_verified_email: s.require_verified_email.unwrap_or(true),
            },
            session: self.session.unwrap_or(DEFAULT_SESSION),
            api,
            four_eyes,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::policy::{PolicyError, parse};

    const RULE: &str = "rules:
  - name: writes
    match: {statement: [write]}
    action: require_approval
    approval: {approvers: {oidc_groups: [sre], oidc_emails: [Dba@Corp.example]}}
";

    fn with_web(web: &str) -> Result<crate::policy::Policy, PolicyError> {
        parse(
            Path::new("p.yaml"),
            &format!(
                "version: 1\ntargets:\n  - {{name: db, protocol: tcp, match: [{{port: 5432}}]}}\n{RULE}{web}"
            ),
        )
    }

    const GOOD: &str = "web:
  url: https://approvals.example.com:8443/
  tls: {names: [approvals.example.com]}
  sign_in:
    issuer: https://login.example.com
    client_id: interlock
    client_secret: {file: /etc/interlock/oidc-secret}
";

    #[test]
    fn a_web_section_is_read_with_its_defaults() {
        let p = with_web(GOOD).unwrap();
        let w = p.web().unwrap();
        assert_eq!(w.listen, None);
        assert_eq!(w.session, DEFAULT_SESSION);
        assert_eq!(w.sign_in.scopes, ["email", "profile"]);
        assert_eq!(w.sign_in.groups_claim, "groups");
        assert!(w.sign_in.require_verified_email);
        assert_eq!(w.four_eyes, default_four_eyes());
        assert_eq!(
            w.hold_url("0123456789ab"),
            "https://approvals.example.com:8443/holds/0123456789ab"
        );
        assert_eq!(
            w.redirect_url(),
            "https://approvals.example.com:8443/auth/callback"
        );
        let a = &p.rules()[0].approval.as_ref().unwrap().approvers;
        assert!(a.admits_signed_in("x", Some("dba@corp.example"), &[]));
        assert!(a.admits_signed_in("x", None, &["sre".into()]));
        assert!(!a.admits_signed_in("x", Some("dev@corp.example"), &["dev".into()]));
        assert!(
            !a.admits(Some("sre"), &["sre".into()]),
            "local names do not count"
        );
    }

    #[test]
    fn web_errors_name_position_and_fix() {
        let cases = [
            (
                GOOD.replace("https://approvals", "http://approvals"),
                "not an https URL",
                2,
            ),
            (
                GOOD.replace(
                    "{names: [approvals.example.com]}",
                    "{names: [a], cert: /c, key: /k}",
                ),
                "either `cert` and `key`",
                3,
            ),
            (
                GOOD.replace("https://login.example.com", "http://login.example.com"),
                "http only on loopback",
                5,
            ),
            (
                format!("{GOOD}  api: {{audience: interlock}}\n"),
                "must differ from `sign_in.client_id`",
                8,
            ),
            (
                GOOD.replace("client_id: interlock", "client_id: ' '"),
                "is empty",
                6,
            ),
            (
                GOOD.replace(
                    "client_secret: {file: /etc/interlock/oidc-secret}",
                    "client_secret: hunter2",
                ),
                "inline secrets are not allowed",
                // serde reports the mapping that holds it.
                5,
            ),
            (String::new(), "no `web:` section", 0),
        ];
        for (web, needle, line) in cases {
            match with_web(&web) {
                Err(PolicyError::Syntax {
                    message, line: l, ..
                }) => {
                    assert!(message.contains(needle), "{needle}: {message}");
                    if line > 0 {
                        // Lines of the web section follow the target (2) and the rule (5).
                        assert_eq!(l, line + 8, "{needle}: {message}");
                    }
                }
                other => panic!("{needle}: {other:?}"),
            }
        }
    }
}
