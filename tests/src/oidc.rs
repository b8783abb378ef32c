//! A real OpenID provider for the tests: npm `oidc-provider` (pinned in
//! `tests/oidc-provider/package.json`, installed by `cargo xtask setup` with `npm ci`), run by
//! `tests/oidc-provider/provider.mjs` on a loopback address and killed on drop. It issues
//! signed JWTs to job clients (client_credentials grant, JWT access tokens per resource
//! indicator: RS256 or ES256, audience per resource) and rotates its keys on request. It also
//! signs people in: web clients (authorization code flow with PKCE) and interactive accounts
//! whose ID tokens carry e-mail, name, user name and groups ([`OidcProvider::start_with`]).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{scratch, skip_or_fail, workspace};

/// The resource indicator whose tokens are RS256 for audience `interlock`.
pub const RS256: &str = "urn:interlock:rs256";
/// The resource indicator whose tokens are ES256 for audience `interlock`.
pub const ES256: &str = "urn:interlock:es256";
/// The resource indicator whose tokens are for audience `someone-else`.
pub const OTHER_AUDIENCE: &str = "urn:other:api";

/// A job client: its id is the tokens' `sub`.
pub struct JobClient {
    pub id: String,
    pub secret: String,
    pub claims: Value,
    /// Token lifetime in seconds.
    pub ttl: u64,
}

impl JobClient {
    /// A client `id` whose tokens carry `claims`, valid for 10 minutes.
    pub fn new(id: &str, claims: Value) -> JobClient {
        JobClient {
            id: id.into(),
            secret: format!("secret-{id}"),
            claims,
            ttl: 600,
        }
    }
}

/// A web client (the approvals page): its id, secret and redirect URI.
pub struct WebClient {
    pub id: String,
    pub secret: String,
    pub redirect_uri: String,
}

/// A person who signs in on the provider's login form with `id` as login name (any
/// password); `claims` go into their ID token (e.g. `email`, `email_verified`, `name`,
/// `preferred_username`, `groups`).
pub struct Account {
    pub id: String,
    pub claims: Value,
}

/// Everything a provider serves.
#[derive(Default)]
pub struct ProviderSpec<'a> {
    pub jobs: &'a [JobClient],
    pub web: &'a [WebClient],
    pub accounts: &'a [Account],
    /// Extra resource indicators: (indicator, audience), RS256 JWT access tokens.
    pub resources: &'a [(&'a str, &'a str)],
}

/// A running provider.
pub struct OidcProvider {
    pub issuer: String,
    pub port: u16,
    host: String,
    clients: Vec<(String, String)>,
    child: Child,
    _dir: tempfile::TempDir,
}

/// Whether node and the installed provider are here (else skip, or fail under CI).
pub fn available() -> bool {
    let installed = provider_dir().join("node_modules/oidc-provider/package.json");
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    match (node, installed.is_file()) {
        (true, true) => true,
        (false, _) => skip_or_fail("node", "node is not installed"),
        (true, false) => skip_or_fail(
            "the test OpenID provider",
            &format!("{} is missing (npm ci)", installed.display()),
        ),
    }
}

fn provider_dir() -> PathBuf {
    workspace().join("tests/oidc-provider")
}

impl OidcProvider {
    /// Starts a provider on `host` for `clients`. `issuer`: claim this issuer instead of its
    /// own URL (a forger with its own keys); `kid_prefix` names its keys.
    pub fn start(
        host: &str,
        clients: &[JobClient],
        issuer: Option<&str>,
        kid_prefix: &str,
    ) -> Result<OidcProvider> {
        Self::start_spec(
            host,
            &ProviderSpec {
                jobs: clients,
                ..ProviderSpec::default()
            },
            issuer,
            kid_prefix,
        )
    }

    /// Starts a provider on `host` serving `spec`: job clients, web clients, accounts.
    pub fn start_with(host: &str, spec: &ProviderSpec<'_>) -> Result<OidcProvider> {
        Self::start_spec(host, spec, None, "k")
    }

    fn start_spec(
        host: &str,
        spec: &ProviderSpec<'_>,
        issuer: Option<&str>,
        kid_prefix: &str,
    ) -> Result<OidcProvider> {
        let dir = scratch("interlock-oidc")?;
        let mut client_list: Vec<Value> = spec
            .jobs
            .iter()
            .map(|c| {
                json!({
                    "client_id": c.id, "client_secret": c.secret,
                    "grant_types": ["client_credentials"], "redirect_uris": [],
                    "response_types": [], "token_endpoint_auth_method": "client_secret_basic",
                    "job_claims": c.claims, "ttl": c.ttl,
                })
            })
            .collect();
        client_list.extend(spec.web.iter().map(|w| {
            json!({
                "client_id": w.id, "client_secret": w.secret,
                "grant_types": ["authorization_code"], "response_types": ["code"],
                "redirect_uris": [w.redirect_uri],
                "token_endpoint_auth_method": "client_secret_basic",
            })
        }));
        let mut resources = json!({
            RS256: {"audience": "interlock", "alg": "RS256"},
            ES256: {"audience": "interlock", "alg": "ES256"},
            OTHER_AUDIENCE: {"audience": "someone-else", "alg": "RS256"},
        });
        for (indicator, audience) in spec.resources {
            resources[*indicator] = json!({"audience": audience, "alg": "RS256"});
        }
        let accounts: serde_json::Map<String, Value> = spec
            .accounts
            .iter()
            .map(|a| (a.id.clone(), a.claims.clone()))
            .collect();
        let mut config = json!({
            "host": host, "port": 0, "kid_prefix": kid_prefix, "clients": client_list,
            "resources": resources, "accounts": accounts,
        });
        if let Some(i) = issuer {
            config["issuer"] = json!(i);
        }
        let path = dir.path().join("provider.json");
        std::fs::write(&path, config.to_string())?;
        let log = std::fs::File::create(dir.path().join("provider.log"))?;
        let mut child = Command::new("node")
            .arg(provider_dir().join("provider.mjs"))
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("start node provider.mjs")?;
        let stdout = child.stdout.take().context("provider stdout")?;
        // The first line says where it listens; bounded so a broken install cannot hang.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep reading: the provider prints notices later, and a closed pipe kills it.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) if !l.trim().is_empty() => l,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the OpenID provider did not start");
            }
        };
        let ready: Value = serde_json::from_str(&line)?;
        Ok(OidcProvider {
            issuer: ready["issuer"].as_str().context("issuer")?.to_string(),
            port: u16::try_from(ready["port"].as_u64().context("port")?)?,
            host: host.to_string(),
            clients: spec
                .jobs
                .iter()
                .map(|c| (c.id.clone(), c.secret.clone()))
                .collect(),
            child,
            _dir: dir,
        })
    }

    /// A signed job token for `client` from `resource` (its audience and algorithm).
    pub fn token(&self, client: &str, resource: &str) -> Result<String> {
        let secret = self
            .clients
            .iter()
            .find(|(id, _)| id == client)
            .map(|(_, s)| s.clone())
            .context("unknown client")?;
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{client}:{secret}"));
        let body = format!(
            "grant_type=client_credentials&scope=job&resource={}",
            resource.replace(':', "%3A")
        );
        let reply = self.http(
            "POST",
            "/token",
            &format!(
                "authorization: Basic {basic}\r\ncontent-type: application/x-www-form-urlencoded\r\n"
            ),
            &body,
        )?;
        let v: Value = serde_json::from_str(&reply).with_context(|| reply.clone())?;
        Ok(v["access_token"]
            .as_str()
            .with_context(|| format!("no access_token: {reply}"))?
            .to_string())
    }

    /// What the provider wrote to stderr so far (warnings, errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("provider.log")).unwrap_or_default()
    }

    /// New signing keys (new key ids) from now on; the old ones stay published.
    pub fn rotate(&self) -> Result<Vec<String>> {
        let reply = self.http("POST", "/admin/rotate", "", "")?;
        let v: Value = serde_json::from_str(&reply)?;
        Ok(v["kids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k.as_str().map(String::from))
            .collect())
    }

    fn http(&self, method: &str, path: &str, headers: &str, body: &str) -> Result<String> {
        let mut s = TcpStream::connect((self.host.as_str(), self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nhost: {}:{}\r\nconnection: close\r\ncontent-length: {}\r\n{headers}\r\n{body}",
            self.host,
            self.port,
            body.len()
        )?;
        let mut raw = String::new();
        s.read_to_string(&mut raw)?;
        let (head, rest) = raw.split_once("\r\n\r\n").context("no HTTP head")?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("{method} {path}: {head}\n{rest}");
        }
        // Chunked or not, the JSON object is what lies between the outer braces.
        let start = rest.find('{').context("no JSON")?;
        let end = rest.rfind('}').context("no JSON")?;
        Ok(rest.get(start..=end).unwrap_or_default().to_string())
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The claims of a token (its payload), unverified, for assertions.
pub fn claims_of(token: &str) -> Result<Value> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).context("not a JWT")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// The key id in a token's header.
pub fn kid_of(token: &str) -> Result<String> {
    use base64::Engine as _;
    let header = token.split('.').next().context("not a JWT")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header)?;
    let v: Value = serde_json::from_slice(&bytes)?;
    Ok(v["kid"].as_str().unwrap_or_default().to_string())
}
