//! A real browser for the approvals page's tests: Debian's headless Chromium driven over
//! WebDriver (`chromedriver` on loopback) with fantoccini. Each browser has a fresh profile
//! and its own HOME, whose NSS database trusts only the CA the test names (interlock's own,
//! which minted the page's certificate); host resolver rules send the page's name to a
//! loopback address. Background networking, component updates, sync and QUIC are off, so it
//! contacts nothing but what the test points it at. JavaScript can be turned off.

use std::{
    net::TcpListener,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::{scratch, skip_or_fail};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CERTUTIL: &str = "/usr/bin/certutil";
/// How long one page step (navigation, finding an element) may take.
pub const STEP: Duration = Duration::from_secs(30);

/// Whether Chromium, chromedriver and certutil are installed (else skip, or fail under CI).
pub fn available() -> bool {
    for (p, pkg) in [
        (CHROMIUM, "chromium"),
        (CHROMEDRIVER, "chromium-driver"),
        (CERTUTIL, "libnss3-tools"),
    ] {
        if !Path::new(p).exists() {
            return skip_or_fail(pkg, &format!("{p} is missing"));
        }
    }
    true
}

/// How to start a browser.
pub struct BrowserSpec {
    /// Run page scripts (false: JavaScript disabled).
    pub javascript: bool,
    /// A PEM CA certificate the browser trusts (none: only the system's, which is none here).
    pub trust_ca: Option<PathBuf>,
    /// (host name, loopback IP) pairs the browser resolves that way.
    pub hosts: Vec<(String, String)>,
    /// Window size in CSS pixels.
    pub window: (u32, u32),
}

/// A running browser; the driver and browser are killed when it drops.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _home: tempfile::TempDir,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl Browser {
    /// Starts chromedriver and a Chromium session as `spec` says.
    pub async fn start(spec: BrowserSpec) -> Result<Browser> {
        let home = scratch("interlock-browser")?;
        let nss = home.path().join(".pki/nssdb");
        std::fs::create_dir_all(&nss)?;
        let db = format!("sql:{}", nss.display());
        run(Command::new(CERTUTIL).args(["-d", &db, "-N", "--empty-password"]))?;
        if let Some(ca) = &spec.trust_ca {
            run(Command::new(CERTUTIL)
                .args([
                    "-d",
                    &db,
                    "-A",
                    "-t",
                    "C,,",
                    "-n",
                    "interlock-test-ca",
                    "-i",
                ])
                .arg(ca))?;
        }
        let port = free_port()?;
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--silent")
            .env("HOME", home.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so the browser it starts dies with it.
            .process_group(0)
            .spawn()
            .context("start chromedriver")?;
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + STEP;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline || driver.try_wait()?.is_some() {
                let _ = driver.kill();
                bail!("chromedriver did not start");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rules: Vec<String> = spec
            .hosts
            .iter()
            .map(|(h, ip)| format!("MAP {h} {ip}"))
            .collect();
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-default-apps".into(),
            "--disable-extensions".into(),
            "--disable-dev-shm-usage".into(),
            "--password-store=basic".into(),
            format!("--user-data-dir={}", home.path().join("profile").display()),
            format!("--window-size={},{}", spec.window.0, spec.window.1),
        ];
        if !rules.is_empty() {
            args.push(format!("--host-resolver-rules={}", rules.join(",")));
        }
        let mut options = json!({ "binary": CHROMIUM, "args": args });
        if !spec.javascript {
            options["prefs"] = json!({ "profile.managed_default_content_settings.javascript": 2 });
        }
        let caps: serde_json::Map<String, Value> = json!({
            "browserName": "chrome",
            "acceptInsecureCerts": false,
            "goog:chromeOptions": options,
        })
        .as_object()
        .cloned()
        .unwrap_or_default();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = tokio::time::timeout(
            STEP * 2,
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&url),
        )
        .await
        .context("the browser session did not start in time")?
        .context("start a browser session")?;
        Ok(Browser {
            client,
            driver,
            _home: home,
        })
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) -> Result<()> {
        tokio::time::timeout(STEP, self.client.goto(url))
            .await
            .with_context(|| format!("{url} did not load in time"))??;
        Ok(())
    }

    /// Waits for an element matching the CSS selector.
    pub async fn wait_for(&self, css: &str) -> Result<fantoccini::elements::Element> {
        let deadline = Instant::now() + STEP;
        loop {
            match self.client.find(Locator::Css(css)).await {
                Ok(e) => return Ok(e),
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    let src = self.client.source().await.unwrap_or_default();
                    let url = self.client.current_url().await.map(|u| u.to_string());
                    bail!("no `{css}` at {url:?}: {e}\n{src}");
                }
            }
        }
    }

    /// Whether an element matching `css` is on the page now.
    pub async fn has(&self, css: &str) -> bool {
        self.client.find(Locator::Css(css)).await.is_ok()
    }

    /// The text of the element matching `css` (waited for).
    pub async fn text(&self, css: &str) -> Result<String> {
        Ok(self.wait_for(css).await?.text().await?)
    }

    /// Clicks the element matching `css` (waited for).
    pub async fn click(&self, css: &str) -> Result<()> {
        tokio::time::timeout(STEP, self.wait_for(css).await?.click())
            .await
            .with_context(|| format!("clicking {css} took too long"))??;
        Ok(())
    }

    /// Types `text` into the element matching `css` (waited for).
    pub async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        self.wait_for(css).await?.send_keys(text).await?;
        Ok(())
    }

    /// The page's URL now.
    pub async fn url(&self) -> Result<String> {
        Ok(self.client.current_url().await?.to_string())
    }

    /// The page's HTML.
    pub async fn source(&self) -> Result<String> {
        Ok(self.client.source().await?)
    }

    /// Resizes the window (outer size, CSS pixels).
    pub async fn resize(&self, width: u32, height: u32) -> Result<()> {
        self.client.set_window_size(width, height).await?;
        Ok(())
    }

    /// A PNG of the window, written to `path`.
    pub async fn screenshot(&self, path: &Path) -> Result<()> {
        let png = self.client.screenshot().await?;
        std::fs::write(path, png)?;
        Ok(())
    }

    /// The value of cookie `name` (HttpOnly ones included: WebDriver sees them).
    pub async fn cookie(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .client
            .get_all_cookies()
            .await?
            .into_iter()
            .find(|c| c.name() == name)
            .map(|c| c.value().to_string()))
    }

    /// Ends the session and the browser.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(STEP, self.client.clone().close()).await;
        self.kill();
    }

    fn kill(&mut self) {
        // SAFETY: kill with the driver's own process group id.
        unsafe { libc::kill(-(self.driver.id() as i32), libc::SIGKILL) };
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill();
    }
}
