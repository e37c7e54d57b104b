//! The `/metrics` endpoint: the runtime's admin router over the series store and the
//! self-metrics registry, with optional bearer-token authentication of `/metrics` (a static token
//! from a file, or in cluster mode a Kubernetes TokenReview + SubjectAccessReview for
//! `get /metrics`, the way kube-rbac-proxy does it). `/livez` and `/readyz` stay open for probes.

use axum::{
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
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
use podtrace_runtime::admin::MetricsEncoder;

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
    Kubernetes(kube::Client, Arc<Mutex<HashMap<String, (bool, Instant)>>>),
}

impl Auth {
    /// Kubernetes authentication through `client`.
    pub fn kubernetes(client: kube::Client) -> Self {
        Auth::Kubernetes(client, Arc::default())
    }
}

/// How long a TokenReview + SubjectAccessReview decision is reused.
const DECISION_TTL: Duration = Duration::from_secs(60);

/// Wraps `router` so that `/metrics` requires `auth`.
pub fn protect(router: axum::Router, auth: Auth) -> axum::Router {
    match auth {
        Auth::None => router,
        auth => router.layer(middleware::from_fn_with_state(auth, check)),
    }
}

async fn check(State(auth): State<Auth>, request: Request, next: Next) -> Response {
    if request.uri().path() != "/metrics" {
        return next.run(request).await;
    }
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .map(String::from);
    let Some(token) = token else {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "Unauthorized: send Authorization: Bearer <token>\n",
        )
            .into_response();
    };
    let allowed = match &auth {
        Auth::None => true,
        Auth::Token(t) => constant_time_eq(t.as_bytes(), token.as_bytes()),
        Auth::Kubernetes(client, cache) => {
            let cached = cache
                .lock()
                .get(&token)
                .filter(|(_, at)| at.elapsed() < DECISION_TTL)
                .map(|(ok, _)| *ok);
            match cached {
                Some(ok) => ok,
                None => match review(client, &token).await {
                    Ok(ok) => {
                        cache.lock().insert(token, (ok, Instant::now()));
                        ok
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "TokenReview/SubjectAccessReview failed");
                        return (StatusCode::SERVICE_UNAVAILABLE, "authentication unavailable\n")
                            .into_response();
                    }
                },
            }
        }
    };
    if allowed {
        next.run(request).await
    } else {
        (StatusCode::FORBIDDEN, "Forbidden: the token may not get /metrics\n").into_response()
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
        let router = protect(
            podtrace_runtime::admin::router(enc, Default::default(), None),
            Auth::Token(Arc::new("t0ken".into())),
        );
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
        assert_eq!(get("/metrics", None).await.unwrap().status(), 401);
        assert_eq!(get("/metrics", Some("wrong")).await.unwrap().status(), 403);
        let ok = get("/metrics", Some("t0ken")).await.unwrap();
        assert_eq!(ok.status(), 200);
        assert!(ok.text().await.unwrap().ends_with("# EOF\n"));
        assert_eq!(get("/livez", None).await.unwrap().status(), 200);
    }
}
