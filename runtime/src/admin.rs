//! The admin HTTP server both binaries run: `/metrics` (Prometheus text or OpenMetrics by
//! content negotiation, gzip, the reference's security headers and a token-bucket rate limit),
//! `/livez` and `/readyz`.

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter, clock::Clock};
use std::{
    future::Future,
    net::SocketAddr,
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};
use tokio::net::TcpListener;
use tower_http::{compression::CompressionLayer, set_header::SetResponseHeaderLayer};

/// Content type of the Prometheus text exposition format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Writes the current metrics in OpenMetrics text (which the Prometheus text parser also reads).
pub type MetricsEncoder = Arc<dyn Fn(&mut String) -> std::fmt::Result + Send + Sync>;

/// An encoder for a `prometheus-client` registry.
pub fn registry_encoder(registry: Arc<prometheus_client::registry::Registry>) -> MetricsEncoder {
    Arc::new(move |out| prometheus_client::encoding::text::encode(out, &registry))
}

/// Whether the process is ready to serve (`/readyz`); live (`/livez`) is implied by answering.
#[derive(Clone, Default, Debug)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the process ready or not ready.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }
    /// Whether the process is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Requests per second and burst of the `/metrics` rate limit (the reference: 10/s, burst 20).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: NonZeroU32,
    /// Requests allowed at once.
    pub burst: NonZeroU32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self { per_second: NonZeroU32::new(10).unwrap(), burst: NonZeroU32::new(20).unwrap() }
    }
}

#[derive(Clone)]
struct AppState {
    encoder: MetricsEncoder,
    readiness: Readiness,
}

/// The admin router: `/metrics` behind the rate limit, `/livez` and `/readyz` outside it (so
/// kubelet probes are never throttled), security headers and gzip on everything.
pub fn router(
    encoder: MetricsEncoder,
    readiness: Readiness,
    rate_limit: Option<RateLimit>,
) -> Router {
    let mut metrics = Router::new().route("/metrics", get(metrics));
    if let Some(limit) = rate_limit {
        let limiter = Arc::new(RateLimiter::direct(
            Quota::per_second(limit.per_second).allow_burst(limit.burst),
        ));
        metrics = metrics.layer(middleware::from_fn_with_state(limiter, rate_limited));
    }
    let header =
        |name, value| SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value));
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(metrics)
        .with_state(AppState { encoder, readiness })
        .layer(CompressionLayer::new())
        .layer(header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header(header::X_FRAME_OPTIONS, "DENY"))
        .layer(header(header::X_XSS_PROTECTION, "1; mode=block"))
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves, following certificate
/// changes (checked every `reload_every`).
pub async fn serve_tls(
    listener: TcpListener,
    router: Router,
    tls: crate::tls::ReloadingTls,
    reload_every: std::time::Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = axum_server::Handle::new();
    let on_shutdown = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        on_shutdown.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    });
    let follow = tokio::spawn(tls.clone().follow(reload_every));
    let served = axum_server::from_tcp_rustls(listener.into_std()?, tls.config())?
        .handle(handle)
        .serve(router.into_make_service_with_connect_info::<SocketAddr>())
        .await;
    follow.abort();
    served
}

/// Serves `router` on `listener`, over TLS when `tls` is given (see [`serve`], [`serve_tls`]).
pub async fn serve_maybe_tls(
    listener: TcpListener,
    router: Router,
    tls: Option<crate::tls::ReloadingTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        None => serve(listener, router, shutdown).await,
        Some(tls) => serve_tls(listener, router, tls, crate::tls::RELOAD_EVERY, shutdown).await,
    }
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let mut body = String::with_capacity(64 * 1024);
    if let Err(e) = (state.encoder)(&mut body) {
        tracing::error!(error = %e, "encoding metrics failed");
        return (StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed\n").into_response();
    }
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let content_type = if wants_openmetrics { OPENMETRICS_CONTENT_TYPE } else { TEXT_CONTENT_TYPE };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.readiness.get() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn rate_limited(
    State(limiter): State<Arc<DefaultDirectRateLimiter>>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    match limiter.check() {
        Ok(()) => next.run(request).await,
        Err(not_until) => {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, secs.max(1).to_string())],
                "Rate limit exceeded: at most 10 requests per second (burst 20); scrape less often\n",
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn start(rate: Option<RateLimit>) -> (String, Readiness) {
        let readiness = Readiness::default();
        // Large enough for gzip to apply (tower-http skips bodies under 32 bytes).
        let encoder: MetricsEncoder = Arc::new(|out| {
            use std::fmt::Write;
            out.write_str("# TYPE up gauge\nup 1\n")?;
            (0..50).try_for_each(|i| writeln!(out, "filler{{n=\"{i}\"}} {i}"))?;
            out.write_str("# EOF\n")
        });
        let app = router(encoder, readiness.clone(), rate);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(serve(listener, app, std::future::pending()));
        (url, readiness)
    }

    #[tokio::test]
    async fn metrics_negotiates_openmetrics_and_sets_security_headers() {
        let (url, _) = start(None).await;
        let http = reqwest::Client::new();
        let text = http.get(format!("{url}/metrics")).send().await.unwrap();
        assert_eq!(text.headers()[header::CONTENT_TYPE], TEXT_CONTENT_TYPE);
        assert_eq!(text.headers()["x-content-type-options"], "nosniff");
        assert_eq!(text.headers()["x-frame-options"], "DENY");
        assert_eq!(text.headers()["x-xss-protection"], "1; mode=block");
        assert!(text.text().await.unwrap().contains("up 1"));
        let om = http
            .get(format!("{url}/metrics"))
            .header(header::ACCEPT, "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
            .send()
            .await
            .unwrap();
        assert_eq!(om.headers()[header::CONTENT_TYPE], OPENMETRICS_CONTENT_TYPE);
    }

    #[tokio::test]
    async fn metrics_are_gzipped_when_asked() {
        let (url, _) = start(None).await;
        // reqwest with the gzip feature sends Accept-Encoding: gzip and decodes the body.
        let resp = reqwest::Client::builder()
            .build()
            .unwrap()
            .get(format!("{url}/metrics"))
            .send()
            .await
            .unwrap();
        assert!(resp.text().await.unwrap().contains("up 1"));
        let raw = reqwest::Client::builder().no_gzip().build().unwrap();
        let resp = raw
            .get(format!("{url}/metrics"))
            .header(header::ACCEPT_ENCODING, "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()[header::CONTENT_ENCODING], "gzip");
    }

    #[tokio::test]
    async fn readyz_follows_readiness_and_livez_always_answers() {
        let (url, readiness) = start(None).await;
        let get = |path: &str| reqwest::get(format!("{url}{path}"));
        assert_eq!(get("/livez").await.unwrap().status(), 200);
        assert_eq!(get("/readyz").await.unwrap().status(), 503);
        readiness.set(true);
        assert_eq!(get("/readyz").await.unwrap().status(), 200);
    }

    #[tokio::test]
    async fn burst_beyond_the_limit_gets_429_with_retry_after_but_probes_do_not() {
        let (url, _) = start(Some(RateLimit::default())).await;
        let http = reqwest::Client::new();
        let mut statuses = Vec::new();
        for _ in 0..25 {
            let r = http.get(format!("{url}/metrics")).send().await.unwrap();
            if r.status() == 429 {
                assert!(
                    r.headers()[header::RETRY_AFTER].to_str().unwrap().parse::<u64>().unwrap() >= 1
                );
            }
            statuses.push(r.status().as_u16());
        }
        // The burst of 20 passes (plus at most a couple refilled while the loop ran), the rest is 429.
        let ok = statuses.iter().filter(|s| **s == 200).count();
        assert!((20..=22).contains(&ok), "{statuses:?}");
        assert!(statuses.contains(&429));
        assert_eq!(http.get(format!("{url}/livez")).send().await.unwrap().status(), 200);
    }
}
