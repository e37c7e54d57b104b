//! The `/metrics` endpoint: the runtime's admin router over the series store and the
//! self-metrics registry, with optional bearer-token authentication of `/metrics` (a static token
//! from a file, or in cluster mode a Kubernetes TokenReview + SubjectAccessReview for
//! `get /metrics`, the way kube-rbac-proxy does it, with the decisions cached). The
//! authentication is the runtime router's guard: it runs after the per-client rate limit (a
//! storm of new tokens costs the API server no more than its share) and its 401 and 403 carry
//! the security headers. `/livez` and `/readyz` stay open for probes.

use axum::{
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use prometheus_client::registry::Registry;
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::metrics::{Sources, Store, sources::Source};
use parking_lot::Mutex;
use podtrace_runtime::admin::{MetricsEncoder, MetricsGuard};

/// The encoder of `/metrics`: the enabled sources of the store, then the self-metrics (source
/// `agent`), then `# EOF`.
pub fn encoder(
    store: Arc<Store>,
    sources: Arc<Sources>,
    registry: Arc<Registry>,
    scrape_seconds: prometheus_client::metrics::histogram::Histogram,
) -> MetricsEncoder {
    Arc::new(move |out| {
        let started = Instant::now();
        store.encode(out, |s| sources.enabled(s))?;
        if sources.enabled(Source::Agent) {
            prometheus_client::encoding::text::encode_registry(out, &registry)?;
        }
        prometheus_client::encoding::text::encode_eof(out)?;
        scrape_seconds.observe(started.elapsed().as_secs_f64());
        Ok(())
    })
}

/// How `/metrics` callers are authenticated.
#[derive(Clone)]
pub enum Auth {
    /// Anyone who can connect.
    None,
    /// `Authorization: Bearer <token>` with this token.
    Token(Arc<String>),
    /// A Kubernetes bearer token allowed to `get` the non-resource URL `/metrics`.
    Kubernetes(kube::Client, Arc<Mutex<DecisionCache>>),
}

impl Auth {
    /// Kubernetes authentication through `client`.
    pub fn kubernetes(client: kube::Client) -> Self {
        Auth::Kubernetes(client, Arc::default())
    }

    /// The guard of `/metrics` (none without authentication), for
    /// [`podtrace_runtime::admin::guarded_router`]: it runs after the per-client rate limit and
    /// inside the security headers.
    pub fn guard(self) -> Option<MetricsGuard> {
        if matches!(self, Auth::None) {
            return None;
        }
        Some(Arc::new(move |headers: HeaderMap| {
            let auth = self.clone();
            Box::pin(async move { check(&auth, &headers).await })
        }))
    }
}

/// How long a TokenReview + SubjectAccessReview decision is reused.
pub const DECISION_TTL: Duration = Duration::from_secs(60);
/// Most decisions kept: a client sending a new token with every request must not grow the
/// agent's memory without bound.
pub const MAX_DECISIONS: usize = 1024;

/// The TokenReview + SubjectAccessReview decisions of recent tokens, bounded in entries and
/// time (kube-rbac-proxy keeps such a cache too).
#[derive(Debug, Default)]
pub struct DecisionCache {
    decisions: HashMap<String, (bool, Instant)>,
}

impl DecisionCache {
    /// The decision for `token`, if made within [`DECISION_TTL`] before `now`.
    pub fn get(&self, token: &str, now: Instant) -> Option<bool> {
        let (allowed, at) = self.decisions.get(token)?;
        (now.duration_since(*at) < DECISION_TTL).then_some(*allowed)
    }

    /// Keeps the decision for `token`, made at `now`; when full, expired decisions go first,
    /// then the oldest.
    pub fn insert(&mut self, token: String, allowed: bool, now: Instant) {
        if self.decisions.len() >= MAX_DECISIONS && !self.decisions.contains_key(&token) {
            self.decisions.retain(|_, (_, at)| now.duration_since(*at) < DECISION_TTL);
            if self.decisions.len() >= MAX_DECISIONS {
                let oldest = self.decisions.iter().min_by_key(|(_, (_, at))| *at);
                if let Some(oldest) = oldest.map(|(t, _)| t.clone()) {
                    self.decisions.remove(&oldest);
                }
            }
        }
        self.decisions.insert(token, (allowed, now));
    }

    /// Decisions kept.
    pub fn len(&self) -> usize {
        self.decisions.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.decisions.is_empty()
    }
}

/// `Ok` when `headers` carry a token `auth` accepts; otherwise the 401, 403 or 503 to answer.
async fn check(auth: &Auth, headers: &HeaderMap) -> Result<(), Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .map(String::from);
    let Some(token) = token else {
        return Err((
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "Unauthorized: send Authorization: Bearer <token>\n",
        )
            .into_response());
    };
    let allowed = match auth {
        Auth::None => true,
        Auth::Token(t) => constant_time_eq(t.as_bytes(), token.as_bytes()),
        Auth::Kubernetes(client, cache) => {
            let cached = cache.lock().get(&token, Instant::now());
            match cached {
                Some(ok) => ok,
                None => match review(client, &token).await {
                    Ok(ok) => {
                        cache.lock().insert(token, ok, Instant::now());
                        ok
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "TokenReview/SubjectAccessReview failed");
                        return Err((
                            StatusCode::SERVICE_UNAVAILABLE,
                            "authentication unavailable\n",
                        )
                            .into_response());
                    }
                },
            }
        }
    };
    if allowed {
        Ok(())
    } else {
        Err((StatusCode::FORBIDDEN, "Forbidden: the token may not get /metrics\n").into_response())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// TokenReview, then SubjectAccessReview of `get /metrics` for the reviewed user.
async fn review(client: &kube::Client, token: &str) -> Result<bool, kube::Error> {
    use kube::{Api, api::PostParams};
    let tr = TokenReview {
        spec: TokenReviewSpec { token: token.to_owned(), ..Default::default() },
        ..Default::default()
    };
    let tr = Api::<TokenReview>::all(client.clone()).create(&PostParams::default(), &tr).await?;
    let Some(status) = tr.status.filter(|s| s.authenticated == Some(true)) else {
        return Ok(false);
    };
    let user = status.user.unwrap_or_default();
    let sar = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username,
            groups: user.groups,
            uid: user.uid,
            non_resource_attributes: Some(NonResourceAttributes {
                path: Some("/metrics".into()),
                verb: Some("get".into()),
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let sar = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &sar)
        .await?;
    Ok(sar.status.is_some_and(|s| s.allowed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_token_guards_metrics_but_not_probes() {
        let store = Arc::new(Store::default());
        let sources = Arc::new(Sources::default());
        let enc = encoder(
            store,
            sources,
            Arc::new(Registry::default()),
            prometheus_client::metrics::histogram::Histogram::new([1.0]),
        );
        let guard = Auth::Token(Arc::new("t0ken".into())).guard();
        let router = podtrace_runtime::admin::guarded_router(enc, Default::default(), None, guard);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(podtrace_runtime::admin::serve(listener, router, std::future::pending()));
        let http = reqwest::Client::new();
        let get = |path: &str, token: Option<&str>| {
            let mut r = http.get(format!("{url}{path}"));
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            r.send()
        };
        let unauthorized = get("/metrics", None).await.unwrap();
        assert_eq!(unauthorized.status(), 401);
        let forbidden = get("/metrics", Some("wrong")).await.unwrap();
        assert_eq!(forbidden.status(), 403);
        // The reference's security headers on every answer, refusals included.
        for refused in [&unauthorized, &forbidden] {
            assert_eq!(refused.headers()["x-content-type-options"], "nosniff");
            assert_eq!(refused.headers()["x-frame-options"], "DENY");
            assert_eq!(refused.headers()["x-xss-protection"], "1; mode=block");
        }
        let ok = get("/metrics", Some("t0ken")).await.unwrap();
        assert_eq!(ok.status(), 200);
        assert!(ok.text().await.unwrap().ends_with("# EOF\n"));
        assert_eq!(get("/livez", None).await.unwrap().status(), 200);
    }

    #[test]
    fn the_decision_cache_is_bounded_in_entries_and_time() {
        let mut cache = DecisionCache::default();
        let t0 = Instant::now();
        for i in 0..5 * MAX_DECISIONS {
            cache.insert(format!("token-{i}"), i % 2 == 0, t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(cache.len(), MAX_DECISIONS);
        let last = t0 + Duration::from_millis(5 * MAX_DECISIONS as u64);
        assert_eq!(cache.get(&format!("token-{}", 5 * MAX_DECISIONS - 2), last), Some(true));
        assert_eq!(cache.get("token-0", last), None, "the oldest went first");
        assert_eq!(
            cache.get(&format!("token-{}", 5 * MAX_DECISIONS - 1), last + DECISION_TTL),
            None,
            "expired"
        );
    }

    /// A fake API server (in addition to the e2e tests against a real one) that allows every
    /// token and counts the reviews it was asked for.
    async fn fake_api_server() -> (kube::Client, Arc<std::sync::atomic::AtomicUsize>) {
        use axum::{Json, routing::post};
        let reviews = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = reviews.clone();
        let app = axum::Router::new()
            .route(
                "/apis/authentication.k8s.io/v1/tokenreviews",
                post(move |Json(mut body): Json<serde_json::Value>| {
                    counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    body["status"] =
                        serde_json::json!({"authenticated": true, "user": {"username": "u"}});
                    async move { Json(body) }
                }),
            )
            .route(
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                post(|Json(mut body): Json<serde_json::Value>| async move {
                    body["status"] = serde_json::json!({"allowed": true});
                    Json(body)
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = kube::Config::new(url.parse().unwrap());
        (kube::Client::try_from(config).unwrap(), reviews)
    }

    /// A client sending a new token with every request gets rate-limited before any review:
    /// the API server sees at most the burst of reviews, not one per request.
    #[tokio::test]
    async fn new_tokens_are_rate_limited_before_they_cost_a_review() {
        let (client, reviews) = fake_api_server().await;
        let enc: MetricsEncoder = Arc::new(|out| {
            use std::fmt::Write;
            out.write_str("# EOF\n")
        });
        let guard = Auth::kubernetes(client).guard();
        let limit = podtrace_runtime::admin::RateLimit::default();
        let router =
            podtrace_runtime::admin::guarded_router(enc, Default::default(), Some(limit), guard);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(podtrace_runtime::admin::serve(listener, router, std::future::pending()));
        let http = reqwest::Client::new();
        let started = Instant::now();
        let (mut ok, mut limited) = (0usize, 0usize);
        for i in 0..200 {
            let r = http
                .get(format!("{url}/metrics"))
                .bearer_auth(format!("t-{i}"))
                .send()
                .await
                .unwrap();
            match r.status().as_u16() {
                200 => ok += 1,
                429 => limited += 1,
                other => panic!("status {other}"),
            }
        }
        let reviewed = reviews.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(reviewed, ok, "one review per admitted new token");
        let refill = (started.elapsed().as_secs_f64() * 10.0).ceil() as usize;
        assert!(ok <= 20 + refill, "{ok} reviews in {:?}: more than the limit", started.elapsed());
        assert!(limited > 0);
    }
}
