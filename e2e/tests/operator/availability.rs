use podtrace_api::presets::Preset;
use serde_json::json;
use std::time::{Duration, Instant};

use super::fixture::{Fixture, Operator, eventually, preset, traced};

async fn leading(op: &Operator) {
    eventually(Duration::from_secs(30), || async {
        let leader = op.try_metric("podtrace_operator_leader").await?;
        anyhow::ensure!(leader == 1.0, "not leader yet");
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; log {}", op.log.display()));
}

#[tokio::test]
async fn a_restarted_operator_writes_nothing_when_nothing_changed() {
    let fx = Fixture::new("restart").await;
    let (n1, n2) = (fx.node("n1").await, fx.node("n2").await);
    let a = fx.pod("a", &n1, &[("app", "web")], &["app"], true).await;
    let b = fx.pod("b", &n2, &[("app", "web")], &["app"], true).await;
    fx.podtrace("t", json!({"selector": {"matchLabels": {"app": "web"}}})).await;
    let mut first = fx.operator("first");
    let (daemon, by) = ([preset(Preset::Daemon)], [fx.pt("t")]);
    fx.expect_node_trace(&n1, Some(vec![traced(&a, &daemon, &by)])).await;
    fx.expect_node_trace(&n2, Some(vec![traced(&b, &daemon, &by)])).await;
    eventually(Duration::from_secs(20), || async {
        let status = fx.podtraces().get("t").await?.status.unwrap_or_default();
        anyhow::ensure!(status.matched_pods == 2, "{status:?}");
        Ok(())
    })
    .await
    .unwrap();
    // Per node: format 1 until its agent reports, then format 2.
    assert_eq!(first.writes().await, 4.0, "two applies per node");
    assert_eq!(first.profile_writes().await, 1.0, "one PodTraceProfile");
    first.stop();

    let second = fx.operator("second");
    second.ready().await;
    leading(&second).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(second.writes().await, 0.0, "no NodeTrace write after a restart");
    assert_eq!(second.profile_writes().await, 0.0, "no PodTraceProfile write after a restart");
    assert_eq!(second.metric("podtrace_operator_status_writes_total").await, 0.0);
    assert!(second.metric("podtrace_operator_reconciles_total").await >= 2.0, "it did reconcile");
    assert_eq!(second.metric("podtrace_operator_pods_indexed").await, 2.0);
    // The heap gauges are read from jemalloc (the default build) within a second of start.
    let heap = second.metric("podtrace_operator_heap_allocated_bytes").await;
    let resident = second.metric("podtrace_operator_heap_resident_bytes").await;
    assert!(heap > 1e5 && resident >= heap, "heap {heap}, resident {resident}");

    // The counter does count: a container restart is one write.
    fx.set_container_id("a", "app", "containerd://a-app-1").await;
    let a = fx.pods().get("a").await.unwrap();
    fx.expect_node_trace(&n1, Some(vec![traced(&a, &daemon, &by)])).await;
    assert_eq!(second.writes().await, 1.0);
}

#[tokio::test]
async fn two_operators_elect_one_writer_and_the_standby_takes_over_when_it_dies() {
    let fx = Fixture::new("leader").await;
    let n1 = fx.node("n1").await;
    let a = fx.pod("a", &n1, &[("app", "web")], &["app"], false).await;
    fx.podtrace("t", json!({"selector": {"matchLabels": {"app": "web"}}})).await;
    let mut one = fx.operator("one");
    one.ready().await;
    leading(&one).await;
    let two = fx.operator("two");
    two.ready().await;
    let (standard, by) = ([preset(Preset::Standard)], [fx.pt("t")]);
    fx.expect_node_trace(&n1, Some(vec![traced(&a, &standard, &by)])).await;
    let b = fx.pod("b", &n1, &[("app", "web")], &["app"], false).await;
    fx.expect_node_trace(&n1, Some(vec![traced(&a, &standard, &by), traced(&b, &standard, &by)]))
        .await;
    // Format 1, then format 2 once the agent reported; creating b and then writing its
    // container ID are one or two writes, depending on timing.
    let leader_writes = one.writes().await;
    assert!((3.0..=4.0).contains(&leader_writes), "{leader_writes}");
    assert_eq!(two.metric("podtrace_operator_leader").await, 0.0);
    assert_eq!(two.writes().await, 0.0, "the standby never writes");
    assert_eq!(two.metric("podtrace_operator_status_writes_total").await, 0.0);

    // The leader dies without releasing its 4 s Lease; the standby takes over.
    one.kill();
    let killed = Instant::now();
    // One change (a container restart) while nobody leads.
    fx.set_container_id("b", "app", "containerd://b-app-1").await;
    let b = fx.pods().get("b").await.unwrap();
    fx.expect_node_trace(&n1, Some(vec![traced(&a, &standard, &by), traced(&b, &standard, &by)]))
        .await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(10), "takeover took {took:?} with a 4 s Lease");
    assert_eq!(two.metric("podtrace_operator_leader").await, 1.0);
    assert_eq!(two.writes().await, 1.0, "the new leader wrote only the change");
}
