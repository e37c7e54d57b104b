//! The admin HTTP server both binaries run: `/metrics` (Prometheus text or OpenMetrics by
//! content negotiation, gzip, the reference's security headers and a token-bucket rate limit),
//! `/livez` and `/readyz`.
//!
//! ```text
//!  request ─► security headers (every answer: 200, 401, 403, 429, 503)
//!             └─► /metrics: rate limit per client address ─► guard (authentication) ─► encode
//!             └─► /livez, /readyz: never limited or authenticated
//! ```
//!
//! The limit comes before the guard, so that a client sending new bearer tokens costs the API
//! server (TokenReview, SubjectAccessReview) no more than its share of requests, and per client
//! address, so that one client's storm of scrapes does not take a well-behaved Prometheus's.

use axum::{
    Router,
    extract::{ConnectInfo, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    pin::Pin,
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

/// Decides whether a `/metrics` request may be served (authentication): `Err` is the answer to
/// send instead (401, 403, 503). It runs after the rate limit and inside the security headers.
pub type MetricsGuard = Arc<
    dyn Fn(HeaderMap) -> Pin<Box<dyn Future<Output = Result<(), Response>> + Send>> + Send + Sync,
>;

/// Client addresses the rate limiter remembers before it forgets those whose bucket is full
/// again (the same as never seen): bounds its memory under a storm from many addresses.
const MAX_CLIENTS: usize = 10_000;

/// Requests per second and burst of the `/metrics` rate limit (the reference: 10/s, burst 20),
/// per client address.
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
    guarded_router(encoder, readiness, rate_limit, None)
}

/// [`router`] with `/metrics` behind `guard` too: the rate limit per client first, then the
/// guard, both inside the security headers (see the module documentation).
pub fn guarded_router(
    encoder: MetricsEncoder,
    readiness: Readiness,
    rate_limit: Option<RateLimit>,
    guard: Option<MetricsGuard>,
) -> Router {
    let mut metrics = Router::new().route("/metrics", get(metrics));
    if let Some(guard) = guard {
        metrics = metrics.layer(middleware::from_fn_with_state(guard, guarded));
    }
    if let Some(limit) = rate_limit {
        let quota = Quota::per_second(limit.per_second).allow_burst(limit.burst);
        let limiter = Arc::new((RateLimiter::keyed(quota), limit));
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

async fn guarded(
    State(guard): State<MetricsGuard>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    match guard(request.headers().clone()).await {
        Ok(()) => next.run(request).await,
        Err(answer) => answer,
    }
}

async fn rate_limited(
    State(limiter): State<Arc<(DefaultKeyedRateLimiter<IpAddr>, RateLimit)>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    let (limiter, limit) = &*limiter;
    // An IPv4 client seen through an IPv6 socket is the same client.
    let client = client.ip().to_canonical();
    let checked = limiter.check_key(&client);
    if limiter.len() > MAX_CLIENTS {
        limiter.retain_recent();
    }
    match checked {
        Ok(()) => next.run(request).await,
        Err(not_until) => {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let message = format!(
                "Rate limit exceeded: at most {} requests per second (burst {}) per client; scrape less often\n",
                limit.per_second, limit.burst
            );
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, secs.max(1).to_string())],
                message,
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
        let started = std::time::Instant::now();
        // Until the bucket is empty (refilled at 10/s meanwhile, so the count of successes
        // depends on how long the loop took: bounded below by the burst, above by the refill).
        while !statuses.contains(&429) {
            let r = http.get(format!("{url}/metrics")).send().await.unwrap();
            if r.status() == 429 {
                assert!(
                    r.headers()[header::RETRY_AFTER].to_str().unwrap().parse::<u64>().unwrap() >= 1
                );
                assert_eq!(r.headers()["x-content-type-options"], "nosniff", "headers on 429");
            }
            statuses.push(r.status().as_u16());
            assert!(statuses.len() < 10_000, "never limited");
        }
        let refilled = (started.elapsed().as_secs_f64() * 10.0).ceil() as usize;
        let ok = statuses.iter().filter(|s| **s == 200).count();
        assert!((20..=20 + refilled).contains(&ok), "{ok} within {:?}", started.elapsed());
        assert_eq!(http.get(format!("{url}/livez")).send().await.unwrap().status(), 200);
    }

    /// One client's storm of scrapes does not take another's budget: the limit is per client
    /// address (127.0.0.2 and 127.0.0.1 are two clients on loopback).
    #[tokio::test]
    async fn a_storming_client_does_not_starve_another() {
        let (url, _) = start(Some(RateLimit::default())).await;
        let from = |ip: [u8; 4]| {
            let ip = std::net::IpAddr::from(ip);
            reqwest::Client::builder().local_address(ip).build().unwrap()
        };
        let (storm, prometheus) = (from([127, 0, 0, 2]), from([127, 0, 0, 1]));
        let mut limited = 0;
        for _ in 0..50 {
            if storm.get(format!("{url}/metrics")).send().await.unwrap().status() == 429 {
                limited += 1;
            }
        }
        assert!(limited > 0, "the storm is limited");
        let r = prometheus.get(format!("{url}/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200, "the well-behaved scraper is not");
    }

    /// The guard runs after the rate limit and its answers carry the security headers.
    #[tokio::test]
    async fn the_guard_answers_after_the_limit_with_the_security_headers() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        let guard: MetricsGuard = Arc::new(move |_headers| {
            counted.fetch_add(1, Ordering::Relaxed);
            Box::pin(async { Err((StatusCode::UNAUTHORIZED, "no\n").into_response()) })
        });
        let encoder: MetricsEncoder = Arc::new(|out| {
            use std::fmt::Write;
            out.write_str("# EOF\n")
        });
        let app =
            guarded_router(encoder, Readiness::default(), Some(RateLimit::default()), Some(guard));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(serve(listener, app, std::future::pending()));
        let http = reqwest::Client::new();
        let first = http.get(format!("{url}/metrics")).send().await.unwrap();
        assert_eq!(first.status(), 401);
        for h in ["x-content-type-options", "x-frame-options", "x-xss-protection"] {
            assert!(first.headers().contains_key(h), "{h} on a 401: {:?}", first.headers());
        }
        let mut statuses = vec![401];
        while !statuses.contains(&429) {
            statuses
                .push(http.get(format!("{url}/metrics")).send().await.unwrap().status().as_u16());
            assert!(statuses.len() < 10_000, "never limited");
        }
        let guarded = calls.load(Ordering::Relaxed);
        assert_eq!(
            guarded,
            statuses.iter().filter(|s| **s == 401).count(),
            "limited requests never reach the guard"
        );
    }
}
