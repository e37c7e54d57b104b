use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use podtrace_api::{MonitoringProfile, MonitoringProfileSpec};
use serde_json::json;
use std::time::Duration;

use super::fixture::{Fixture, eventually, traced};

#[tokio::test]
async fn a_missing_profile_is_reported_recovers_once_created_and_its_edits_reach_the_node_traces() {
    let fx = Fixture::new("profiles").await;
    let n1 = fx.node("n1").await;
    let _op = fx.operator("a");
    let a = fx.pod("a", &n1, &[("app", "web")], &["app"], false).await;
    let profile = format!("{}-fast", fx.name());
    fx.podtrace(
        "t",
        json!({"selector": {"matchLabels": {"app": "web"}}, "profileRef": {"name": profile}}),
    )
    .await;

    // Missing: Ready=False/ProfileNotFound, a Warning Event, and nothing traced.
    let ready = eventually(Duration::from_secs(20), || async {
        let pt = fx.podtraces().get("t").await?;
        let ready =
            pt.status.unwrap_or_default().conditions.into_iter().find(|c| c.type_ == "Ready");
        let ready = ready.ok_or_else(|| anyhow::anyhow!("no Ready condition yet"))?;
        Ok((ready.status, ready.reason, ready.message))
    })
    .await
    .unwrap();
    assert_eq!((ready.0.as_str(), ready.1.as_str()), ("False", "ProfileNotFound"));
    assert!(ready.2.contains(&profile), "{}", ready.2);
    let events: Api<Event> = Api::namespaced(fx.client.clone(), fx.name());
    let warned = eventually(Duration::from_secs(20), || async {
        let list = events.list(&ListParams::default()).await?;
        let found = list.items.iter().find(|e| e.reason.as_deref() == Some("ProfileNotFound"));
        let e = found.ok_or_else(|| anyhow::anyhow!("no ProfileNotFound Event"))?;
        Ok((e.type_.clone(), e.regarding.as_ref().and_then(|r| r.name.clone())))
    })
    .await
    .unwrap();
    assert_eq!(warned, (Some("Warning".to_string()), Some("t".to_string())));
    assert_eq!(fx.node_trace(&n1).await, None);

    // Created: the PodTrace recovers by itself.
    let profiles: Api<MonitoringProfile> = Api::all(fx.client.clone());
    let apply = |interval: &str| {
        json!({"apiVersion": "podtrace.dev/v1alpha1", "kind": "MonitoringProfile",
               "metadata": {"name": profile}, "spec": {"interval": interval}})
    };
    let pp = PatchParams::apply("e2e");
    profiles.patch(&profile, &pp, &Patch::Apply(apply("2s"))).await.unwrap();
    let spec =
        |interval: &str| MonitoringProfileSpec { interval: interval.into(), ..Default::default() };
    let by = [fx.pt("t")];
    let named = |interval| [(profile.as_str(), spec(interval))];
    fx.expect_node_trace(&n1, Some(vec![traced(&a, &named("2s"), &by)])).await;
    eventually(Duration::from_secs(20), || async {
        let pt = fx.podtraces().get("t").await?;
        let ready =
            pt.status.unwrap_or_default().conditions.into_iter().find(|c| c.type_ == "Ready");
        anyhow::ensure!(ready.as_ref().is_some_and(|c| c.status == "True"), "{ready:?}");
        Ok(())
    })
    .await
    .unwrap();

    // Edited: every NodeTrace using it follows.
    profiles.patch(&profile, &pp, &Patch::Apply(apply("3s"))).await.unwrap();
    fx.expect_node_trace(&n1, Some(vec![traced(&a, &named("3s"), &by)])).await;
    profiles.delete(&profile, &DeleteParams::default()).await.unwrap();
}
