//! The approvals page: an HTTPS page and JSON API the daemon serves (off unless the policy's
//! `web:` section and a listen address are given) for approvers who are not on the runner.
//! They sign in with the organisation's OpenID provider (authorization code flow with PKCE),
//! see the held requests whose rules name them (by identity-provider group, e-mail or
//! subject), and approve or deny them with a reason; bots do the same over the API with
//! bearer tokens. Decisions go through the approval registry like the CLI's, which refuses
//! the human who started the job (four eyes) and records each decision with the approver's
//! issuer, subject, e-mail, reason and channel.
//!
//! This module owns serving (TLS, routes, pages, API), sign-in and the page's sessions; who
//! may see and decide what is `approval`'s.

mod api;
mod app;
mod auth;
mod error;
mod pages;
mod sessions;
mod signin;
mod tls;
mod view;

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::DefaultBodyLimit,
    routing::{get, post},
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

pub use error::WebError;

use crate::{context::AppContext, policy::WebPolicy};

/// Most connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 256;
/// How long a client may take for its TLS handshake, and for a request's headers.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Largest request body (a form with a reason).
const MAX_BODY: usize = 16 * 1024;

/// A bound, not yet serving, approvals page.
pub struct WebServer {
    listener: TcpListener,
    tls: TlsAcceptor,
    policy: WebPolicy,
}

impl WebServer {
    /// Binds the page at `listen` with `policy`'s certificate (interlock's CA lives in
    /// `state_dir`).
    ///
    /// # Errors
    /// The address cannot be bound; the certificate cannot be loaded or minted.
    pub async fn bind(
        policy: &WebPolicy,
        listen: SocketAddr,
        state_dir: &Path,
    ) -> Result<WebServer, WebError> {
        let tls = TlsAcceptor::from(tls::server_config(&policy.tls, state_dir)?);
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| WebError::Listen {
                addr: listen,
                source,
            })?;
        Ok(WebServer {
            listener,
            tls,
            policy: policy.clone(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `ctx` shuts down.
    ///
    /// # Errors
    /// The sign-in client cannot be built.
    pub async fn serve(self, ctx: AppContext) -> Result<(), WebError> {
        let shutdown = ctx.shutdown().clone();
        let app = Arc::new(app::App::new(ctx, self.policy)?);
        let router = routes(Arc::clone(&app));
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        info!(address = ?self.listener.local_addr().ok(), url = %app.policy.url, "approvals page is serving");
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = Arc::clone(&slots).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.listener.accept() => match r {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(error = %e, "approvals page: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let (tls, router) = (self.tls.clone(), router.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let stream = match tokio::time::timeout(HANDSHAKE, tls.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        debug!(%peer, error = %e, "approvals page: TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        debug!(%peer, "approvals page: TLS handshake timed out");
                        return;
                    }
                };
                let service = hyper_util::service::TowerToHyperService::new(router);
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HANDSHAKE)
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    debug!(%peer, error = %e, "approvals page connection ended");
                }
            });
        }
        Ok(())
    }
}

/// Every route of the page and its API.
fn routes(app: app::Shared) -> Router {
    Router::new()
        .route("/", get(pages::list))
        .route("/holds/{id}", get(pages::detail))
        .route("/holds/{id}/decide", post(pages::decide))
        .route("/signin", get(pages::sign_in))
        .route("/auth/start", get(auth::start))
        .route("/auth/callback", get(auth::callback))
        .route("/auth/signout", post(auth::sign_out))
        .route("/static/app.css", get(pages::stylesheet))
        .route("/api/v1/holds", get(api::list))
        .route("/api/v1/holds/{id}", get(api::show))
        .route("/api/v1/holds/{id}/{verb}", post(api::decide))
        .fallback(pages::not_found)
        .layer(axum::middleware::map_response(app::secure_headers))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}
