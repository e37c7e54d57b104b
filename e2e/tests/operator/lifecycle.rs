use kube::api::{DeleteParams, Patch, PatchParams};
use podtrace_api::presets::Preset;
use serde_json::json;
use std::time::Duration;

use super::fixture::{Fixture, eventually, preset, traced};

#[tokio::test]
async fn label_change_container_restart_pod_and_node_deletion_are_reflected() {
    let fx = Fixture::new("lifecycle").await;
    let (n1, n2) = (fx.node("n1").await, fx.node("n2").await);
    let _op = fx.operator("a");
    let a = fx.pod("a", &n1, &[("app", "web")], &["app", "side"], false).await;
    let b = fx.pod("b", &n1, &[("app", "web")], &["app"], false).await;
    let c = fx.pod("c", &n2, &[("app", "web")], &["app"], false).await;
    fx.podtrace(
        "t",
        json!({"selector": {"matchLabels": {"app": "web"}}, "profileRef": {"name": "minimal"}}),
    )
    .await;
    let (min, by) = ([preset(Preset::Minimal)], [fx.pt("t")]);
    fx.expect_node_trace(&n1, Some(vec![traced(&a, &min, &by), traced(&b, &min, &by)])).await;
    fx.expect_node_trace(&n2, Some(vec![traced(&c, &min, &by)])).await;

    // A label change makes b leave.
    let relabel = json!({"metadata": {"labels": {"app": "other"}}});
    fx.pods().patch("b", &PatchParams::default(), &Patch::Merge(&relabel)).await.unwrap();
    fx.expect_node_trace(&n1, Some(vec![traced(&a, &min, &by)])).await;

    // A container restart gives it a new runtime ID.
    fx.set_container_id("a", "side", "containerd://a-side-1").await;
    let restarted = fx.pods().get("a").await.unwrap();
    let spec = vec![traced(&restarted, &min, &by)];
    assert_eq!(spec[0].0.containers[1].runtime_id.as_deref(), Some("containerd://a-side-1"));
    fx.expect_node_trace(&n1, Some(spec)).await;

    // Deleting the last traced pod of a node deletes its NodeTrace.
    let now = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
    fx.pods().delete("c", &now).await.unwrap();
    fx.expect_node_trace(&n2, None).await;

    // So does deleting the node.
    fx.delete_node(&n1).await;
    fx.expect_node_trace(&n1, None).await;
}

#[tokio::test]
async fn deleting_a_podtrace_removes_its_pods_before_the_finalizer_is_released() {
    let fx = Fixture::new("finalizer").await;
    let n1 = fx.node("n1").await;
    let _op = fx.operator("a");
    let a = fx.pod("a", &n1, &[("app", "web")], &["app"], false).await;
    fx.podtrace(
        "x",
        json!({"selector": {"matchLabels": {"app": "web"}}, "profileRef": {"name": "batch"}}),
    )
    .await;
    fx.podtrace("y", json!({"selector": {}, "profileRef": {"name": "minimal"}})).await;
    let both = [preset(Preset::Batch), preset(Preset::Minimal)];
    fx.expect_node_trace(&n1, Some(vec![traced(&a, &both, &[fx.pt("x"), fx.pt("y")])])).await;
    eventually(Duration::from_secs(20), || async {
        let x = fx.podtraces().get("x").await?;
        anyhow::ensure!(x.metadata.finalizers.is_some(), "no finalizer yet");
        Ok(())
    })
    .await
    .unwrap();

    fx.podtraces().delete("x", &DeleteParams::default()).await.unwrap();
    fx.expect_node_trace(&n1, Some(vec![traced(&a, &[preset(Preset::Minimal)], &[fx.pt("y")])]))
        .await;
    let gone = eventually(Duration::from_secs(20), || async {
        match fx.podtraces().get_opt("x").await? {
            None => Ok(()),
            Some(_) => anyhow::bail!("PodTrace x still exists"),
        }
    })
    .await;
    assert!(gone.is_ok(), "the finalizer was never released");

    fx.podtraces().delete("y", &DeleteParams::default()).await.unwrap();
    fx.expect_node_trace(&n1, None).await;
}

#[tokio::test]
async fn pausing_removes_the_targets_and_resuming_restores_them() {
    let fx = Fixture::new("pause").await;
    let n1 = fx.node("n1").await;
    let _op = fx.operator("a");
    let a = fx.pod("a", &n1, &[("app", "web")], &["app"], false).await;
    fx.podtrace("p", json!({"selector": {"matchLabels": {"app": "web"}}})).await;
    let expected = vec![traced(&a, &[preset(Preset::Standard)], &[fx.pt("p")])];
    fx.expect_node_trace(&n1, Some(expected.clone())).await;

    let pause = json!({"spec": {"paused": true}});
    fx.podtraces().patch("p", &PatchParams::default(), &Patch::Merge(&pause)).await.unwrap();
    fx.expect_node_trace(&n1, None).await;
    let conditions = eventually(Duration::from_secs(20), || async {
        let pt = fx.podtraces().get("p").await?;
        let status = pt.status.unwrap_or_default();
        let c: Vec<(String, String, String)> =
            status.conditions.into_iter().map(|c| (c.type_, c.status, c.reason)).collect();
        anyhow::ensure!(c.iter().any(|c| c.0 == "Paused" && c.1 == "True"), "{c:?}");
        Ok(c)
    })
    .await
    .unwrap();
    let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        conditions,
        [
            s("Ready", "False", "Paused"),
            s("Degraded", "False", "AllAttached"),
            s("Paused", "True", "Paused")
        ]
    );

    let resume = json!({"spec": {"paused": false}});
    fx.podtraces().patch("p", &PatchParams::default(), &Patch::Merge(&resume)).await.unwrap();
    fx.expect_node_trace(&n1, Some(expected)).await;
}
