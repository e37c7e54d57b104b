//! The PodTrace controller: the finalizer, the status (server-side apply of the status
//! subresource, only when it changed) and the Events of notable transitions. The
//! PodTraceProfile and NodeTrace content a PodTrace causes is written by `writer.rs`; this
//! controller only waits for it when the PodTrace is deleted.

use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use podtrace_api::{PodTrace, PodTraceStatus};
use std::sync::Arc;
use std::time::Duration;
use tracing::instrument;

use crate::context::Context;
use crate::desired::reference;
use crate::status::{self, READY, podtrace_status};
use crate::{Error, FIELD_MANAGER, Result, writer};

/// PodTraces reconciled at once. Unbounded, a start (or a profile edit) reconciled every
/// PodTrace together: one request each in flight, each on a TLS connection of its own (the
/// client speaks HTTP/1.1), which the client's pool then kept for 90 s, ~40 KiB each.
const RECONCILE_CONCURRENCY: u16 = 16;

/// The shortest time between two status writes of a PodTrace that only move counts and
/// roll-ups (see [`crate::index::Index::status_wait`]).
const STATUS_GAP: Duration = Duration::from_secs(2);

/// The finalizer that keeps a deleted PodTrace until its pods are gone from every NodeTrace.
pub const FINALIZER: &str = "podtrace.dev/cleanup";

/// Runs the controller over the PodTrace store until the future is dropped (while leading).
/// Reconciles come from `triggers` (fed by the watches) and from requeues.
pub async fn run(ctx: Arc<Context>, triggers: UnboundedReceiver<ObjectRef<PodTrace>>) {
    let all: Vec<_> = ctx.podtraces.state().iter().map(|pt| ObjectRef::from_obj(&**pt)).collect();
    let initial = futures::stream::iter(all);
    Controller::for_stream(
        futures::stream::pending::<Result<PodTrace, watcher::Error>>(),
        ctx.podtraces.clone(),
    )
    .with_config(controller::Config::default().concurrency(RECONCILE_CONCURRENCY))
    .reconcile_on(initial.chain(triggers))
    .run(reconcile, error_policy, ctx)
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::debug!(error = %e, "PodTrace reconcile failed");
        }
    })
    .await;
}

/// Reconciles one PodTrace: finalizer first, then status or cleanup.
#[instrument(skip_all, fields(podtrace = %format!("{}/{}", pt.namespace().unwrap_or_default(), pt.name_any())))]
pub async fn reconcile(pt: Arc<PodTrace>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("podtrace");
    let ns = pt.namespace().unwrap_or_default();
    let api: Api<PodTrace> = Api::namespaced(ctx.client.clone(), &ns);
    let name = format!("{ns}/{}", pt.name_any());
    finalizer(&api, FINALIZER, pt, |event| async {
        match event {
            Finalizer::Apply(pt) => apply(&pt, &ctx).await,
            Finalizer::Cleanup(pt) => cleanup(&pt, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer { name, source: Box::new(other) },
    })
}

/// Counts the error and retries soon: most failures are conflicts or a busy API server.
pub fn error_policy(_pt: Arc<PodTrace>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error("podtrace", error);
    tracing::warn!(error = %error, "PodTrace reconcile failed");
    Action::requeue(Duration::from_secs(2))
}

async fn apply(pt: &PodTrace, ctx: &Context) -> Result<Action> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let (status, changed, wait) = ctx.with_traces(|set, index| {
        let status = podtrace_status(pt, &index.pods, set, |node| index.node_status(node), &now);
        let changed = index.status_changed(pt, &status);
        let wait = index.status_wait(pt, &status, std::time::Instant::now(), STATUS_GAP);
        (status, changed, wait)
    });
    if let (true, Some(wait)) = (changed, wait) {
        return Ok(Action::requeue(wait));
    }
    if changed {
        publish_transitions(pt, pt.status.as_ref(), &status, ctx).await;
        let api: Api<PodTrace> =
            Api::namespaced(ctx.client.clone(), &pt.namespace().unwrap_or_default());
        let body = serde_json::json!({
            "apiVersion": "podtrace.dev/v1alpha1",
            "kind": "PodTrace",
            "status": status,
        });
        api.patch_status(
            &pt.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await
        .map_err(Error::kube(format!("applying status of PodTrace/{}", pt.name_any())))?;
        ctx.metrics.status_writes.inc();
        ctx.index.write().status_written(&pt.uid().unwrap_or_default(), std::time::Instant::now());
    }
    // Agents' results arrive through NodeTrace events; the requeue is a safety net, or the
    // instant spec.duration elapses (the status written then takes the pods off the nodes).
    let now = k8s_openapi::jiff::Timestamp::now();
    Ok(Action::requeue(until_expiry(&status, now).map_or(SAFETY_NET, |d| d.min(SAFETY_NET))))
}

/// The longest wait between two reconciles of a PodTrace.
const SAFETY_NET: Duration = Duration::from_secs(300);

/// How long until `status.expiresAt`, if it is still ahead (plus a millisecond, so that the
/// reconcile then finds it passed).
fn until_expiry(status: &PodTraceStatus, now: k8s_openapi::jiff::Timestamp) -> Option<Duration> {
    let end = status.expires_at.as_ref()?.0;
    let left = end.duration_since(now);
    let left = Duration::try_from(left).ok().filter(|d| !d.is_zero())?;
    Some(left + Duration::from_millis(1))
}

async fn cleanup(pt: &PodTrace, ctx: &Arc<Context>) -> Result<Action> {
    let nodes = crate::watch::nodes_of(ctx, pt);
    let count = nodes.len();
    writer::sync(ctx, [reference(pt)].into(), nodes).await?;
    publish(
        ctx,
        pt,
        EventType::Normal,
        "TargetsRemoved",
        "Cleanup",
        format!("PodTrace deleted: its pods were removed from the NodeTraces of {count} nodes"),
    )
    .await;
    Ok(Action::await_change())
}

/// An Event when Ready changes status or reason (ProfileNotFound, ProfileResolved, Paused,
/// Expired, NamespaceSelectorNotAllowed, Resumed, Configured), never on an unchanged status.
async fn publish_transitions(
    pt: &PodTrace,
    old: Option<&PodTraceStatus>,
    new: &PodTraceStatus,
    ctx: &Context,
) {
    let reason = |s: Option<&PodTraceStatus>, t| {
        status::find(s, t).map(|c| (c.status.clone(), c.reason.clone()))
    };
    let (old_ready, new_ready) = (reason(old, READY), reason(Some(new), READY));
    if old_ready != new_ready
        && let Some(c) = status::find(Some(new), READY)
    {
        let (type_, reason) = match c.reason.as_str() {
            "ProfileNotFound" => (EventType::Warning, "ProfileNotFound"),
            "NamespaceSelectorNotAllowed" => (EventType::Warning, "NamespaceSelectorNotAllowed"),
            "Paused" => (EventType::Normal, "Paused"),
            "Expired" => (EventType::Normal, "Expired"),
            _ if old_ready.as_ref().is_some_and(|(_, r)| r == "ProfileNotFound") => {
                (EventType::Normal, "ProfileResolved")
            }
            _ if old_ready.as_ref().is_some_and(|(_, r)| r == "Paused" || r == "Expired") => {
                (EventType::Normal, "Resumed")
            }
            _ => (EventType::Normal, "Configured"),
        };
        publish(ctx, pt, type_, reason, "Reconcile", c.message.clone()).await;
    }
}

async fn publish(
    ctx: &Context,
    pt: &PodTrace,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &pt.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "publishing an Event failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{Fixture, PATIENCE, nodetrace, podtrace};
    use http::Method;
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(PATIENCE, f).await.expect("finished without an unexpected request")
    }

    fn json(pt: &PodTrace) -> serde_json::Value {
        serde_json::to_value(pt).unwrap()
    }

    const PODTRACE: &str = "/apis/podtrace.dev/v1alpha1/namespaces/ns/podtraces/t";

    #[tokio::test]
    async fn a_new_podtrace_gets_the_finalizer_and_nothing_else() {
        let mut fx = Fixture::new();
        let pt = podtrace(false, None);
        let task = tokio::spawn(reconcile(Arc::new(pt), fx.ctx.clone()));
        let patch = fx.api.expect(Method::PATCH, PODTRACE, json(&podtrace(true, None))).await;
        let add = json!({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]});
        assert_eq!(patch.body[1], add);
        assert_eq!(within(task).await.unwrap().unwrap(), Action::await_change());
    }

    #[tokio::test]
    async fn a_podtrace_gets_its_status_once_with_a_configured_event() {
        let mut fx = Fixture::new();
        fx.pod_on("n1", "a");
        let pt = podtrace(true, None);
        fx.store(&pt);
        let task = tokio::spawn(reconcile(Arc::new(pt.clone()), fx.ctx.clone()));
        assert_eq!(fx.api.event().await, ("Configured".into(), "Normal".into()));
        let applied = fx.api.expect(Method::PATCH, &format!("{PODTRACE}/status?"), json(&pt)).await;
        assert!(applied.uri.contains("fieldManager=podtrace-operator"), "{}", applied.uri);
        let status: PodTraceStatus =
            serde_json::from_value(applied.body["status"].clone()).unwrap();
        assert_eq!(
            (status.matched_pods, status.effective_profile.as_deref()),
            (1, Some("standard"))
        );
        let ready = status::find(Some(&status), READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "NodeTracesWritten"));
        within(task).await.unwrap().unwrap();
        assert_eq!(fx.ctx.metrics.status_writes.get(), 1);

        // The watch brings the status back (status.nodes as a fingerprint): nothing to write.
        fx.ctx.index.write().podtrace_status_nodes("pt-uid", &status.nodes);
        let stored = PodTrace { status: Some(PodTraceStatus { nodes: vec![], ..status }), ..pt };
        within(reconcile(Arc::new(stored), fx.ctx.clone())).await.unwrap();
        assert_eq!(fx.ctx.metrics.status_writes.get(), 1);
    }

    #[tokio::test]
    async fn a_count_that_moves_right_after_a_write_waits_for_the_gap_and_news_do_not() {
        let mut fx = Fixture::new();
        fx.pod_on("n1", "a");
        let pt = podtrace(true, None);
        fx.store(&pt);
        let task = tokio::spawn(reconcile(Arc::new(pt.clone()), fx.ctx.clone()));
        fx.api.event().await;
        let applied = fx.api.expect(Method::PATCH, &format!("{PODTRACE}/status?"), json(&pt)).await;
        within(task).await.unwrap().unwrap();
        let status: PodTraceStatus =
            serde_json::from_value(applied.body["status"].clone()).unwrap();
        fx.ctx.index.write().podtrace_status_nodes("pt-uid", &status.nodes);
        let stored = PodTrace { status: Some(PodTraceStatus { nodes: vec![], ..status }), ..pt };

        // A second pod: only counts move, and the last write was just now.
        fx.pod_on("n2", "b");
        let action = within(reconcile(Arc::new(stored.clone()), fx.ctx.clone())).await.unwrap();
        assert!(action != Action::requeue(Duration::from_secs(300)), "{action:?}");
        assert_eq!(fx.ctx.metrics.status_writes.get(), 1, "not written within the gap");

        // Paused is news: written at once, with its Event.
        let mut paused = stored;
        paused.spec.paused = true;
        paused.metadata.generation = Some(2);
        let task = tokio::spawn(reconcile(Arc::new(paused.clone()), fx.ctx.clone()));
        assert_eq!(fx.api.event().await, ("Paused".into(), "Normal".into()));
        fx.api.expect(Method::PATCH, &format!("{PODTRACE}/status?"), json(&paused)).await;
        within(task).await.unwrap().unwrap();
        assert_eq!(fx.ctx.metrics.status_writes.get(), 2);
    }

    #[tokio::test]
    async fn a_missing_profile_is_a_warning_event_and_ready_false() {
        let mut fx = Fixture::new();
        let pt = podtrace(true, Some("nope"));
        fx.store(&pt);
        let task = tokio::spawn(reconcile(Arc::new(pt.clone()), fx.ctx.clone()));
        assert_eq!(fx.api.event().await, ("ProfileNotFound".into(), "Warning".into()));
        let applied = fx.api.expect(Method::PATCH, &format!("{PODTRACE}/status?"), json(&pt)).await;
        let status: PodTraceStatus =
            serde_json::from_value(applied.body["status"].clone()).unwrap();
        let ready = status::find(Some(&status), READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "ProfileNotFound"));
        within(task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_deleted_podtrace_leaves_every_nodetrace_then_releases_its_finalizer() {
        let mut fx = Fixture::new();
        fx.ctx.index.write().nodetrace_listed(&nodetrace("n1", "h1"));
        fx.ctx.index.write().profile_hashes.listed(
            podtrace_api::nodetrace::PodTraceRef { namespace: "ns".into(), name: "t".into() },
            Some("h".into()),
        );
        let mut pt = podtrace(true, None);
        pt.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        fx.store(&pt);
        let task = tokio::spawn(reconcile(Arc::new(pt.clone()), fx.ctx.clone()));
        let node = serde_json::to_value(nodetrace("n1", "h1")).unwrap();
        fx.api.expect(Method::DELETE, "/apis/podtrace.dev/v1alpha1/nodetraces/n1", node).await;
        let profile = "/apis/podtrace.dev/v1alpha1/namespaces/ns/podtraceprofiles/t";
        fx.api.expect(Method::DELETE, profile, crate::fixtures::deleted()).await;
        assert_eq!(fx.api.event().await, ("TargetsRemoved".into(), "Normal".into()));
        let released = fx.api.expect(Method::PATCH, PODTRACE, json(&podtrace(false, None))).await;
        assert_eq!(released.body[1], json!({"op": "remove", "path": "/metadata/finalizers/0"}));
        assert_eq!(within(task).await.unwrap().unwrap(), Action::await_change());
        let deleted = crate::index::Write::Nothing;
        assert_eq!(fx.ctx.index.read().write_for("n1", None), deleted, "deleted by us");
    }

    /// A PodTrace whose counted duration has ended: Ready False, Expired True, written at once
    /// with an Event; the same PodTrace with a new duration is written as Resumed.
    #[tokio::test]
    async fn an_elapsed_duration_is_written_with_an_expired_event_and_a_new_one_resumes() {
        let mut fx = Fixture::new();
        fx.pod_on("n1", "a");
        let mut pt = podtrace(true, None);
        pt.spec.duration = Some("1s".into());
        let started = Time(Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(5));
        let countdown =
            podtrace_api::podtrace::Countdown { duration: "1s".into(), started_at: started };
        pt.status = Some(PodTraceStatus { countdown: Some(countdown), ..Default::default() });
        fx.store(&pt);
        let task = tokio::spawn(reconcile(Arc::new(pt.clone()), fx.ctx.clone()));
        assert_eq!(fx.api.event().await, ("Expired".into(), "Normal".into()));
        let applied = fx.api.expect(Method::PATCH, &format!("{PODTRACE}/status?"), json(&pt)).await;
        let written: PodTraceStatus =
            serde_json::from_value(applied.body["status"].clone()).unwrap();
        let expired = status::find(Some(&written), status::EXPIRED).unwrap();
        assert_eq!((expired.status.as_str(), expired.reason.as_str()), ("True", "DurationElapsed"));
        assert!(written.nodes.is_empty(), "not traced");
        assert_eq!(within(task).await.unwrap().unwrap(), Action::requeue(SAFETY_NET));

        // A new duration: traced again, with a new countdown.
        fx.ctx.index.write().podtrace_status_nodes("pt-uid", &written.nodes);
        let mut extended = PodTrace { status: Some(written), ..pt };
        extended.spec.duration = Some("1h".into());
        extended.metadata.generation = Some(2);
        fx.store(&extended);
        let task = tokio::spawn(reconcile(Arc::new(extended.clone()), fx.ctx.clone()));
        assert_eq!(fx.api.event().await, ("Resumed".into(), "Normal".into()));
        let applied =
            fx.api.expect(Method::PATCH, &format!("{PODTRACE}/status?"), json(&extended)).await;
        let written: PodTraceStatus =
            serde_json::from_value(applied.body["status"].clone()).unwrap();
        assert_eq!(written.countdown.unwrap().duration, "1h");
        assert_eq!(written.nodes.len(), 1);
        let action = within(task).await.unwrap().unwrap();
        assert_eq!(action, Action::requeue(SAFETY_NET), "an hour away: the safety net first");
    }

    #[test]
    fn the_next_reconcile_is_at_the_expiry_instant_and_none_after_it() {
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let status = PodTraceStatus {
            expires_at: Some(Time(at("2026-12-06T11:15:00Z"))),
            ..Default::default()
        };
        let wait = until_expiry(&status, at("2026-12-06T11:14:50Z"));
        assert_eq!(wait, Some(Duration::from_millis(10_001)));
        assert_eq!(until_expiry(&status, at("2026-12-06T11:15:00Z")), None);
        assert_eq!(until_expiry(&PodTraceStatus::default(), at("2026-12-06T11:15:00Z")), None);
    }

    #[tokio::test]
    async fn a_failed_reconcile_is_counted_by_reason_and_retried_soon() {
        let fx = Fixture::new();
        let err = Error::Profile(podtrace_api::ProfileError::NotFound { name: "x".into() });
        let action = error_policy(Arc::new(podtrace(true, None)), &err, fx.ctx.clone());
        assert_eq!(action, Action::requeue(Duration::from_secs(2)));
        let labels =
            crate::metrics::ErrorLabels { controller: "podtrace", reason: "profile_not_found" };
        assert_eq!(fx.ctx.metrics.errors.get_or_create(&labels).get(), 1);
    }
}
