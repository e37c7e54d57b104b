//! The servers both binaries run beside their work, started the same way: `/metrics`, `/livez`
//! and `/readyz` (plain HTTP, or HTTPS with certificates followed on disk) and
//! `grpc.health.v1`, each until the process's [`Stop`].
//!
//! ```text
//!  Servers::start ─► bind metrics addr ─► admin router (readiness) ─► HTTP | HTTPS (ReloadingTls)
//!                 └► bind health addr ─► grpc.health.v1 ("" + liveness + the binary's services)
//! ```

use axum::Router;
use std::{net::SocketAddr, time::Duration};
use tokio::{net::TcpListener, task::JoinHandle};

use crate::{
    admin::{self, Readiness},
    health::{self, Health},
    shutdown::Stop,
    tls::{ReloadingTls, TlsArgs, TlsError},
};

/// Where a binary serves.
#[derive(Clone, Copy, Debug)]
pub struct Endpoints<'a> {
    /// Address of `/metrics`, `/livez`, `/readyz`.
    pub metrics: SocketAddr,
    /// TLS of that server (plain HTTP without certificate files).
    pub tls: &'a TlsArgs,
    /// Address of `grpc.health.v1`.
    pub health: SocketAddr,
    /// The binary's health services besides `""` and `liveness` (all start NOT_SERVING).
    pub services: &'a [&'a str],
}

/// Why the servers did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The TLS files of `/metrics` do not load.
    #[error("metrics TLS: {0}")]
    Tls(#[from] TlsError),
    /// A socket could not be bound.
    #[error("{what} on {addr}: {source}")]
    Bind {
        /// The server (`metrics`, `grpc health`).
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The running servers.
pub struct Servers {
    /// `/readyz`: false until the binary says it is ready.
    pub readiness: Readiness,
    /// The health services' statuses.
    pub health: Health,
    metrics: JoinHandle<std::io::Result<()>>,
}

impl Servers {
    /// Binds both addresses and serves until `stop`. `router` builds the HTTP router from the
    /// readiness flag it must serve on `/readyz` (see [`admin::router`]).
    pub async fn start(
        endpoints: Endpoints<'_>,
        router: impl FnOnce(Readiness) -> Router,
        stop: &Stop,
    ) -> Result<Servers, ServeError> {
        let bind = |what, addr| move |source| ServeError::Bind { what, addr, source };
        let tls = endpoints.tls.files().map(ReloadingTls::load).transpose()?;
        let listener = TcpListener::bind(endpoints.metrics)
            .await
            .map_err(bind("metrics", endpoints.metrics))?;
        let addr = listener.local_addr().map_err(bind("metrics", endpoints.metrics))?;
        tracing::info!(%addr, tls = tls.is_some(), "serving /metrics, /livez, /readyz");
        let readiness = Readiness::default();
        let router = router(readiness.clone());
        let metrics = tokio::spawn(admin::serve_maybe_tls(listener, router, tls, stop.stopped()));
        let (health, _) = health::serve(endpoints.health, endpoints.services, stop.stopped())
            .await
            .map_err(bind("grpc health", endpoints.health))?;
        Ok(Servers { readiness, health, metrics })
    }

    /// After the stop: waits at most `timeout` for `/metrics` to answer its last requests.
    pub async fn finish(self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.metrics).await;
    }
}
