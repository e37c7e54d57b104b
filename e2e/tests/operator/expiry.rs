//! Time-bounded traces (`spec.duration`) against the real API server: the pods leave the
//! NodeTraces when the duration has elapsed, not before, the status says when, and an edit of
//! the duration traces them again.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use podtrace_api::PodTraceStatus;
use podtrace_api::presets::Preset;
use serde_json::json;

use super::fixture::{Fixture, preset, traced};

/// The (status, reason, message) of condition `type_`.
fn condition(status: &PodTraceStatus, type_: &str) -> Option<(String, String, String)> {
    let c = status.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn a_duration_stops_tracing_at_its_end_and_a_new_duration_traces_again() {
    let fx = Fixture::new("expiry").await;
    let n1 = fx.node("n1").await;
    let _op = fx.operator("a");
    let a = fx.pod("a", &n1, &[("app", "web")], &["app"], false).await;
    let before = Timestamp::now();
    let spec = |duration: Option<&str>| {
        let mut spec = json!({"selector": {"matchLabels": {"app": "web"}}});
        if let Some(d) = duration {
            spec["duration"] = json!(d);
        }
        spec
    };
    fx.podtrace("brief", spec(Some("8s"))).await;
    let expected = vec![traced(&a, &[preset(Preset::Standard)], &[fx.pt("brief")])];
    fx.expect_node_trace(&n1, Some(expected.clone())).await;

    // The countdown: started when the operator saw the value, ends 8 s later.
    let counting = fx.status_when("brief", |s| s.expires_at.is_some()).await;
    let countdown = counting.countdown.clone().unwrap();
    let end = counting.expires_at.clone().unwrap().0;
    assert_eq!(countdown.duration, "8s");
    let start = countdown.started_at.0;
    assert!(start >= Timestamp::from_second(before.as_second()).unwrap(), "{start} < {before}");
    assert!(start <= Timestamp::now(), "{start}");
    assert_eq!(end.duration_since(start), SignedDuration::from_secs(8));
    let (on, reason, message) = condition(&counting, "Expired").unwrap();
    assert_eq!((on.as_str(), reason.as_str()), ("False", "Counting"));
    assert!(message.contains(&end.to_string()), "{message}");

    // Still traced well before the end (checked when there is time enough to ask)…
    let asked = Timestamp::now();
    let still = fx.node_trace(&n1).await;
    if end.duration_since(asked) > SignedDuration::from_secs(3) {
        assert!(still.is_some(), "untraced at {asked}, before the end {end}");
    }
    // …and at the end the pods leave the NodeTrace (its last pod: the NodeTrace goes), at once:
    // the operator wakes at the end (its safety net alone would take 300 s).
    fx.expect_node_trace(&n1, None).await;
    let left = Timestamp::now();
    assert!(left >= end, "untraced at {left}, before the end {end}");
    assert!(left.duration_since(end) < SignedDuration::from_secs(10), "untraced only at {left}");
    let expired =
        fx.status_when("brief", |s| condition(s, "Expired").is_some_and(|c| c.0 == "True")).await;
    let (_, reason, message) = condition(&expired, "Expired").unwrap();
    assert_eq!(reason, "DurationElapsed");
    assert!(message.contains(&format!("elapsed at {end}")), "{message}");
    let ready = condition(&expired, "Ready").unwrap();
    assert_eq!((ready.0.as_str(), ready.1.as_str()), ("False", "Expired"));
    assert_eq!(expired.expires_at.map(|t| t.0), Some(end), "the time stays");
    assert_eq!(expired.matched_pods, 1, "the PodTrace stays, with its selection");

    // A new duration starts a new countdown: traced again until its end.
    fx.podtrace("brief", spec(Some("1h"))).await;
    fx.expect_node_trace(&n1, Some(expected.clone())).await;
    let extended =
        fx.status_when("brief", |s| s.countdown.as_ref().is_some_and(|c| c.duration == "1h")).await;
    let new_end = extended.expires_at.clone().unwrap().0;
    assert!(new_end >= end.checked_add(SignedDuration::from_hours(1)).unwrap(), "{new_end}");
    let (on, reason, _) = condition(&extended, "Expired").unwrap();
    assert_eq!((on.as_str(), reason.as_str()), ("False", "Counting"));

    // Without a duration: no countdown, no Expired condition, traced without end.
    fx.podtrace("brief", spec(None)).await;
    let endless = fx.status_when("brief", |s| s.countdown.is_none()).await;
    assert_eq!((&endless.expires_at, condition(&endless, "Expired")), (&None, None));
    fx.expect_node_trace(&n1, Some(expected)).await;
}
