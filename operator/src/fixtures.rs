//! A mocked API server for the reconcile tests, as kube-rs/controller-rs's `fixtures.rs` does
//! it: the code under test runs in a task against a client whose every request the test
//! receives, checks and answers in order. A request the test does not expect fails it; one the
//! code should not make shows as a test that does not finish (each test bounds its wait).
//!
//! ```text
//!  reconcile / sync_nodes ──HTTP request──► tower-test mock ──► ApiServer::answer (the test)
//!                        ◄──JSON answer─────────────────────────┘
//! ```

use http::{Method, Request, Response};
use kube::client::Body;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use kube::{Client, Resource};
use podtrace_api::nodetrace::{PodTraceRef, TracedPod};
use podtrace_api::podtrace::{PodTraceSpec, ProfileRef};
use podtrace_api::{MonitoringProfile, NodeTrace, NodeTraceSpec, NodeTraceStatus, PodTrace};
use std::sync::Arc;
use std::time::Duration;
use tower_test::mock::{self, Handle};

use crate::context::{Context, Scope};
use crate::metrics::Metrics;

/// How long a test waits for a request, or for the code under test to finish.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// The test's side of the mocked API server.
pub struct ApiServer(Handle<Request<Body>, Response<Body>>);

/// A request as the API server received it.
#[derive(Debug)]
pub struct Received {
    /// GET, POST, PATCH, DELETE.
    pub method: Method,
    /// Path and query.
    pub uri: String,
    /// The body, as JSON (`Null` when empty).
    pub body: serde_json::Value,
}

impl ApiServer {
    /// Receives the next request and answers it with `code` and `answer`.
    pub async fn answer(&mut self, code: u16, answer: serde_json::Value) -> Received {
        let next = tokio::time::timeout(PATIENCE, self.0.next_request()).await;
        let (request, send) = next.expect("no request in time").expect("the client is gone");
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("a readable body");
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        let response = Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&answer).expect("JSON")))
            .expect("a response");
        send.send_response(response);
        Received { method: parts.method, uri: parts.uri.to_string(), body }
    }

    /// Receives the next request, which must be `method` on a path starting with `path`,
    /// and answers 200 with `answer`.
    pub async fn expect(
        &mut self,
        method: Method,
        path: &str,
        answer: serde_json::Value,
    ) -> Received {
        let received = self.answer(200, answer).await;
        assert_eq!(received.method, method, "{received:?}");
        assert!(received.uri.starts_with(path), "expected {method} {path}…, got {received:?}");
        received
    }

    /// Receives the Event the code publishes and returns its reason and type.
    pub async fn event(&mut self) -> (String, String) {
        let received = self.answer(200, serde_json::json!({})).await;
        assert_eq!(received.method, Method::POST, "{received:?}");
        assert!(received.uri.starts_with("/apis/events.k8s.io/v1/namespaces/ns/events"));
        let field = |f: &str| received.body[f].as_str().unwrap_or_default().to_owned();
        (field("reason"), field("type"))
    }
}

/// A kube `Status` answer with `code`.
pub fn status(code: u16, reason: &str) -> serde_json::Value {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": reason, "reason": reason, "code": code,
    })
}

/// The API server's answer to a deletion that completed.
pub fn deleted() -> serde_json::Value {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 200})
}

/// A context on a mocked API server, with the writers of its stores.
pub struct Fixture {
    /// The context under test.
    pub ctx: Arc<Context>,
    /// The mocked API server.
    pub api: ApiServer,
    /// Fills the PodTrace store.
    pub podtraces: Writer<PodTrace>,
    /// Fills the MonitoringProfile store.
    pub profiles: Writer<MonitoringProfile>,
}

impl Fixture {
    /// An empty context (no pods, nodes or objects) leading, on a mocked API server.
    pub fn new() -> Self {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let (podtraces, podtraces_writer) = reflector::store();
        let (profiles, profiles_writer) = reflector::store();
        let (triggers, _) = futures::channel::mpsc::unbounded();
        let stores = (podtraces, profiles);
        let ctx = Context::new(client, Scope::default(), stores, triggers, Metrics::new().0, "");
        ctx.leading.store(true, std::sync::atomic::Ordering::SeqCst);
        Fixture {
            ctx: Arc::new(ctx),
            api: ApiServer(handle),
            podtraces: podtraces_writer,
            profiles: profiles_writer,
        }
    }

    /// Puts `pt` into the PodTrace store (as its watch would).
    pub fn store(&mut self, pt: &PodTrace) {
        self.podtraces.apply_watcher_event(&watcher::Event::Apply(pt.clone()));
    }

    /// Puts the preset MonitoringProfile `name` into the profile store.
    pub fn profile(&mut self, name: &str) {
        let preset = podtrace_api::presets::Preset::from_name(name).expect("a preset name");
        let profile = MonitoringProfile::new(name, preset.spec());
        self.profiles.apply_watcher_event(&watcher::Event::Apply(profile));
    }

    /// Adds node `node` with a pod `name` labelled `app=web`, its container started.
    pub fn pod_on(&self, node: &str, name: &str) {
        let mut index = self.ctx.index.write();
        index.pods.set_node(node, true);
        let pod = crate::index::tests::pod(
            "ns",
            name,
            Some(node),
            &[("app", "web")],
            &[("app", Some("containerd://1"))],
        );
        index.pods.apply(pod);
    }
}

/// PodTrace `ns/name` selecting the pods labelled `app`; `profile` names a MonitoringProfile
/// (none: the automatic choice).
pub fn podtrace_of(ns: &str, name: &str, app: &str, profile: Option<&str>) -> PodTrace {
    let spec = PodTraceSpec {
        selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
            match_labels: Some([("app".to_string(), app.to_string())].into()),
            ..Default::default()
        },
        containers: vec![],
        profile_ref: profile.map(|name| ProfileRef { name: name.into() }),
        profile: None,
        paused: false,
        namespace_selector: None,
        duration: None,
    };
    let mut pt = PodTrace::new(name, spec);
    pt.meta_mut().namespace = Some(ns.into());
    pt
}

/// PodTrace `ns/t` selecting `app=web`, with uid, generation and, when `finalized`, the
/// finalizer.
pub fn podtrace(finalized: bool, profile: Option<&str>) -> PodTrace {
    let mut pt = podtrace_of("ns", "t", "web", profile);
    let meta = pt.meta_mut();
    meta.uid = Some("pt-uid".into());
    meta.generation = Some(1);
    if finalized {
        meta.finalizers = Some(vec![crate::podtrace::FINALIZER.into()]);
    }
    pt
}

/// The NodeTrace of `node` as the watch would show it: one pod selected by `ns/t`, the spec
/// hash `hash`.
pub fn nodetrace(node: &str, hash: &str) -> NodeTrace {
    let pod = TracedPod {
        uid: "u".into(),
        namespace: "ns".into(),
        name: "a".into(),
        settings_key: None,
        requested_by: vec![PodTraceRef { namespace: "ns".into(), name: "t".into() }],
        ..Default::default()
    };
    let mut nt = NodeTrace::new(node, NodeTraceSpec { pods: vec![pod], ..Default::default() });
    let annotations = [(crate::SPEC_HASH_ANNOTATION.into(), hash.into())];
    nt.meta_mut().annotations = Some(annotations.into());
    nt
}

/// `nt` with a status whose agent reads spec format `format`.
pub fn reporting(nt: &NodeTrace, format: i32) -> NodeTrace {
    let mut nt = nt.clone();
    nt.status = Some(NodeTraceStatus { spec_format: Some(format), ..Default::default() });
    nt
}
