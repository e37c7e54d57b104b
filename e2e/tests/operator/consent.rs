//! Cross-namespace tracing with consent (`spec.namespaceSelector`) against the real API server:
//! a PodTrace of an allowed namespace traces the matching pods of the namespaces that carry
//! `podtrace.dev/allow-tracing: "true"`, follows that label as it comes and goes, and a
//! PodTrace of any other namespace is refused and traces nothing.

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use podtrace_api::PodTraceStatus;
use podtrace_api::presets::Preset;
use serde_json::json;

use super::fixture::{Fixture, Operator, SCOPE_LABEL, preset, traced};

const CONSENT: &str = "podtrace.dev/allow-tracing";

/// Sets (`Some`) or removes (`None`) label `key` of namespace `name`.
async fn label(fx: &Fixture, name: &str, key: &str, value: Option<&str>) {
    let patch = json!({"metadata": {"labels": {key: value}}});
    let api = Api::<Namespace>::all(fx.client.clone());
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

/// The (status, reason, message) of condition Ready (empty before the first status).
fn ready(status: &PodTraceStatus) -> (String, String, String) {
    let c = status.conditions.iter().find(|c| c.type_ == "Ready");
    c.map(|c| (c.status.clone(), c.reason.clone(), c.message.clone())).unwrap_or_default()
}

#[tokio::test]
async fn only_consenting_namespaces_are_traced_and_consent_can_be_withdrawn() {
    let fx = Fixture::new("consent").await;
    let n1 = fx.node("n1").await;
    let _op = Operator::start(&fx, "a", &["--cluster-trace-namespaces", fx.name()]);
    let (yes, no) = (
        fx.cp.namespace(&fx.client, "consent-yes").await.unwrap(),
        fx.cp.namespace(&fx.client, "consent-no").await.unwrap(),
    );
    for ns in [&yes.name, &no.name] {
        label(&fx, ns, SCOPE_LABEL, Some(fx.name())).await;
    }
    label(&fx, &yes.name, CONSENT, Some("true")).await;
    label(&fx, &no.name, CONSENT, Some("false")).await;
    let web = [("app", "web")];
    let y = fx.pod_in(&yes.name, "web", &n1, &web, &["app"], false).await;
    let n = fx.pod_in(&no.name, "web", &n1, &web, &["app"], false).await;
    fx.pod_in(&yes.name, "db", &n1, &[("app", "db")], &["db"], false).await;
    fx.pod("web", &n1, &web, &["app"], false).await; // the PodTrace's own namespace: no consent
    fx.podtrace(
        "frontends",
        json!({"selector": {"matchLabels": {"app": "web"}},
               "namespaceSelector": {"matchLabels": {SCOPE_LABEL: fx.name()}},
               "profileRef": {"name": "minimal"}}),
    )
    .await;
    let (min, by) = ([preset(Preset::Minimal)], [fx.pt("frontends")]);
    fx.expect_node_trace(&n1, Some(vec![traced(&y, &min, &by)])).await;
    let status = fx.status_when("frontends", |s| s.matched_pods == 1).await;
    assert_eq!(ready(&status).1, "NodeTracesWritten");

    // The second namespace consents: its pod joins, with the same by= reference.
    label(&fx, &no.name, CONSENT, Some("true")).await;
    fx.expect_node_trace(&n1, Some(vec![traced(&y, &min, &by), traced(&n, &min, &by)])).await;

    // The first withdraws its consent: its pod leaves.
    label(&fx, &yes.name, CONSENT, None).await;
    fx.expect_node_trace(&n1, Some(vec![traced(&n, &min, &by)])).await;
    fx.status_when("frontends", |s| s.matched_pods == 1).await;

    // Deleting the PodTrace takes its pods of the other namespace off the node.
    fx.podtraces().delete("frontends", &DeleteParams::default()).await.unwrap();
    fx.expect_node_trace(&n1, None).await;
    yes.delete().await.unwrap();
    no.delete().await.unwrap();
}

#[tokio::test]
async fn a_namespace_selector_in_a_user_namespace_is_refused_and_traces_nothing() {
    let fx = Fixture::new("consent-refused").await;
    let n1 = fx.node("n1").await;
    let _op = fx.operator("a"); // no namespace may trace across namespaces
    label(&fx, fx.name(), CONSENT, Some("true")).await;
    let web = fx.pod("web", &n1, &[("app", "web")], &["app"], false).await;
    let db = fx.pod("db", &n1, &[("app", "db")], &["db"], false).await;
    fx.podtrace(
        "everything",
        json!({"selector": {"matchLabels": {"app": "web"}}, "namespaceSelector": {}}),
    )
    .await;
    let refused =
        fx.status_when("everything", |s| ready(s).1 == "NamespaceSelectorNotAllowed").await;
    let (on, _, message) = ready(&refused);
    assert_eq!(on, "False");
    assert!(message.contains("--cluster-trace-namespaces"), "{message}");
    assert!(message.contains(&format!("not in {}", fx.name())), "{message}");
    assert_eq!((refused.matched_pods, refused.nodes.len()), (0, 0));

    // Another PodTrace is traced on the node, and the refused one is not beside it.
    fx.podtrace("own", json!({"selector": {"matchLabels": {"app": "db"}}})).await;
    let own = [fx.pt("own")];
    fx.expect_node_trace(&n1, Some(vec![traced(&db, &[preset(Preset::Standard)], &own)])).await;

    // Without the namespaceSelector it traces its own namespace.
    fx.podtrace("everything", json!({"selector": {"matchLabels": {"app": "web"}}})).await;
    let both = vec![
        traced(&db, &[preset(Preset::Standard)], &own),
        traced(&web, &[preset(Preset::Standard)], &[fx.pt("everything")]),
    ];
    fx.expect_node_trace(&n1, Some(both)).await;
    let accepted = fx.status_when("everything", |s| s.matched_pods == 1).await;
    assert_eq!(ready(&accepted).1, "NodeTracesWritten");
}
