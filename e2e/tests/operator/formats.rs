//! The two NodeTrace spec formats side by side, as in a rolling upgrade of the agents: a node
//! whose agent has not reported format 2 keeps getting format 1 (settings in its NodeTrace),
//! a node whose agent reads format 2 gets none, and a profile change rewrites only the first.

use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use podtrace_api::MonitoringProfile;
use podtrace_api::nodetrace::SpecFormat;
use podtrace_api::profile::MonitoringProfileSpec;
use serde_json::json;

use super::fixture::{Fixture, traced};

#[tokio::test]
async fn a_profile_change_writes_the_podtrace_profile_and_only_format_1_nodetraces() {
    let fx = Fixture::without_agents("formats").await;
    let (n1, n2) = (fx.node("n1").await, fx.node("n2").await);
    // Only n2's agent reads format 2 (already upgraded); n1's is of the previous version.
    let _upgraded = fx.fake_agents(Some(vec![n2.clone()]));
    let profiles: Api<MonitoringProfile> = Api::all(fx.client.clone());
    let fast = format!("{}-fast", fx.name());
    let apply = |interval: &str| {
        json!({"apiVersion": "podtrace.dev/v1alpha1", "kind": "MonitoringProfile",
               "metadata": {"name": fast}, "spec": {"interval": interval}})
    };
    let pp = PatchParams::apply("e2e");
    profiles.patch(&fast, &pp, &Patch::Apply(apply("2s"))).await.unwrap();
    let op = fx.operator("a");
    let a = fx.pod("a", &n1, &[("app", "web")], &["app"], true).await;
    let b = fx.pod("b", &n2, &[("app", "web")], &["app"], true).await;
    fx.podtrace(
        "t",
        json!({"selector": {"matchLabels": {"app": "web"}}, "profileRef": {"name": fast}}),
    )
    .await;
    let spec =
        |interval: &str| MonitoringProfileSpec { interval: interval.into(), ..Default::default() };
    let by = [fx.pt("t")];
    let expect = |interval: &'static str| {
        let (a, b, by, fast) = (&a, &b, &by, fast.as_str());
        let fx = &fx;
        let (n1, n2) = (n1.as_str(), n2.as_str());
        async move {
            let named = [(fast, spec(interval))];
            fx.expect_node_trace_in(n1, Some(vec![traced(a, &named, by)]), SpecFormat::PodSettings)
                .await;
            fx.expect_node_trace_in(n2, Some(vec![traced(b, &named, by)]), SpecFormat::Shared)
                .await;
        }
    };
    expect("2s").await;
    let generation_of_n2 = || async { fx.node_trace(&n2).await.unwrap().metadata.generation };
    let n2_before = generation_of_n2().await;
    let (writes, profile_writes) = (op.writes().await, op.profile_writes().await);
    assert_eq!(profile_writes, 1.0);

    // A MonitoringProfile edit: the format-1 NodeTrace is rewritten with the new settings; the
    // format-2 one is not written at all, and neither is the PodTraceProfile (it names the
    // profile, and the agents read the profile itself).
    profiles.patch(&fast, &pp, &Patch::Apply(apply("3s"))).await.unwrap();
    expect("3s").await;
    assert_eq!(generation_of_n2().await, n2_before, "the format-2 NodeTrace was not written");
    assert_eq!(op.writes().await, writes + 1.0, "only n1's NodeTrace");
    assert_eq!(op.profile_writes().await, profile_writes);

    // A PodTrace edit that changes only its profile: one PodTraceProfile write.
    let inline = json!({"spec": {"profileRef": null, "profile": {"interval": "4s"}}});
    fx.podtraces().patch("t", &PatchParams::default(), &Patch::Merge(&inline)).await.unwrap();
    let inline_spec = [("inline", spec("4s"))];
    fx.expect_node_trace_in(
        &n1,
        Some(vec![traced(&a, &inline_spec, &by)]),
        SpecFormat::PodSettings,
    )
    .await;
    fx.expect_node_trace_in(&n2, Some(vec![traced(&b, &inline_spec, &by)]), SpecFormat::Shared)
        .await;
    assert_eq!(generation_of_n2().await, n2_before, "still not written");
    assert_eq!(op.writes().await, writes + 2.0);
    assert_eq!(op.profile_writes().await, profile_writes + 1.0);

    // n1's agent is upgraded and reports format 2: its NodeTrace is rewritten in format 2.
    let _all = fx.fake_agents(None);
    fx.expect_node_trace_in(&n1, Some(vec![traced(&a, &inline_spec, &by)]), SpecFormat::Shared)
        .await;
    profiles.delete(&fast, &DeleteParams::default()).await.unwrap();
}
