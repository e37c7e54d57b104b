use kube::Api;
use podtrace_api::MonitoringProfile;
use podtrace_api::presets::Preset;
use serde_json::json;
use std::time::Duration;

use super::fixture::{Fixture, eventually, preset, traced};

#[tokio::test]
async fn pods_on_three_nodes_get_one_node_trace_per_node_with_their_runtime_ids() {
    let fx = Fixture::new("three-nodes").await;
    let (n1, n2, n3) = (fx.node("n1").await, fx.node("n2").await, fx.node("n3").await);
    let _op = fx.operator("a");
    let a = fx.pod("web-a", &n1, &[("app", "web")], &["app", "sidecar"], true).await;
    let b = fx.pod("web-b", &n1, &[("app", "web")], &["app"], false).await;
    let c = fx.pod("web-c", &n2, &[("app", "web")], &["app"], true).await;
    fx.pod("db", &n3, &[("app", "db")], &["db"], true).await;
    // No profile: daemon for ReplicaSet-owned pods, standard for the bare one.
    fx.podtrace("web", json!({"selector": {"matchLabels": {"app": "web"}}})).await;

    let by = [fx.pt("web")];
    fx.expect_node_trace(
        &n1,
        Some(vec![
            traced(&a, &[preset(Preset::Daemon)], &by),
            traced(&b, &[preset(Preset::Standard)], &by),
        ]),
    )
    .await;
    fx.expect_node_trace(&n2, Some(vec![traced(&c, &[preset(Preset::Daemon)], &by)])).await;
    fx.expect_node_trace(&n3, None).await;

    let status = eventually(Duration::from_secs(20), || async {
        let pt = fx.podtraces().get("web").await?;
        let status = pt.status.clone().unwrap_or_default();
        anyhow::ensure!(status.matched_pods == 3 && status.nodes.len() == 2, "{status:?}");
        Ok((pt, status))
    })
    .await
    .unwrap();
    let (pt, status) = status;
    assert_eq!(pt.metadata.finalizers, Some(vec!["podtrace.dev/cleanup".to_string()]));
    assert_eq!(status.effective_profile.as_deref(), Some("daemon+standard"));
    assert_eq!(status.ready_nodes.as_deref(), Some("0/2"), "no agent has attached yet");
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "NodeTracesWritten"));
    let nodes: Vec<(&str, i32)> = status.nodes.iter().map(|n| (n.node.as_str(), n.pods)).collect();
    assert_eq!(nodes, [(n1.as_str(), 2), (n2.as_str(), 1)]);

    // The presets were installed at start.
    let standard = Api::<MonitoringProfile>::all(fx.client.clone()).get("standard").await.unwrap();
    assert_eq!(standard.spec, Preset::Standard.spec());
}

#[tokio::test]
async fn two_podtraces_over_the_same_pods_merge_their_profiles() {
    let fx = Fixture::new("merge").await;
    let (n1, n2) = (fx.node("n1").await, fx.node("n2").await);
    let _op = fx.operator("a");
    let a = fx.pod("a", &n1, &[("app", "web"), ("tier", "fe")], &["app"], true).await;
    let b = fx.pod("b", &n2, &[("app", "web")], &["app"], true).await;
    fx.podtrace(
        "batch",
        json!({"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]},
               "profileRef": {"name": "batch"}}),
    )
    .await;
    fx.podtrace(
        "api",
        json!({"selector": {"matchLabels": {"tier": "fe"}}, "profileRef": {"name": "realtime-api"}}),
    )
    .await;
    let both = [preset(Preset::Batch), preset(Preset::RealtimeApi)];
    let spec = vec![traced(&a, &both, &[fx.pt("batch"), fx.pt("api")])];
    assert_eq!(spec[0].1.interval, "5s", "the smallest interval wins");
    assert_eq!(spec[0].1.history.size, 500, "the largest history wins");
    fx.expect_node_trace(&n1, Some(spec)).await;
    fx.expect_node_trace(&n2, Some(vec![traced(&b, &[preset(Preset::Batch)], &[fx.pt("batch")])]))
        .await;
}
