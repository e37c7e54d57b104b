//! The PodTraceProfile writer: one PodTraceProfile per PodTrace in effect (same namespace and
//! name), server-side-applied (field manager `podtrace-operator`) only when its content hash
//! changed, deleted when the PodTrace is paused, deleted or its profile does not resolve.
//!
//! ```text
//!  marked PodTraces ──plan──► Apply(spec, hash) | Delete      (TraceSet::podtrace_profile)
//!                               │ applies: before the NodeTraces that name them
//!                               │ deletions: after the NodeTraces stopped naming them
//!                               ▼
//!                       PodTraceProfile <ns>/<name>, owned by its PodTrace
//! ```
//!
//! A profile edit is therefore one write here and none of a NodeTrace; a MonitoringProfile
//! edit is none at all (the PodTraceProfile names it, the agents watch it), unless it creates
//! or deletes a MonitoringProfile a PodTraceProfile refers to.

use futures::StreamExt;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use podtrace_api::nodetrace::PodTraceRef;
use podtrace_api::{PodTrace, PodTraceProfile, PodTraceProfileSpec};
use std::collections::BTreeSet;
use std::sync::Arc;

use crate::context::{Context, MANAGED_BY};
use crate::index::Write;
use crate::{Error, FIELD_MANAGER, Result, SPEC_HASH_ANNOTATION};

/// Concurrent PodTraceProfile writes (each ~1 KiB).
const CONCURRENCY: usize = 16;

/// A write the writer will make.
#[derive(Debug, Clone, PartialEq)]
pub enum Planned {
    /// Apply this spec (content hash `hash`), owned by the PodTrace of uid `owner`.
    Apply {
        /// The PodTrace.
        podtrace: PodTraceRef,
        /// The content.
        spec: PodTraceProfileSpec,
        /// Its hash (spec and owner), the `podtrace.dev/spec-hash` annotation.
        hash: String,
        /// The PodTrace's uid, for the owner reference.
        owner: String,
    },
    /// Delete the PodTraceProfile of this PodTrace.
    Delete(PodTraceRef),
}

/// What to write for the PodTraces `refs`: an apply where the desired content differs from
/// what is stored or was written, a deletion where a PodTraceProfile exists that is no longer
/// wanted, nothing otherwise.
pub fn plan(ctx: &Context, refs: impl IntoIterator<Item = PodTraceRef>) -> Vec<Planned> {
    ctx.with_traces(|set, index| {
        refs.into_iter()
            .filter_map(|r| {
                let pt =
                    ctx.podtraces.get(&ObjectRef::<PodTrace>::new(&r.name).within(&r.namespace));
                let wanted = pt.as_ref().and_then(|pt| {
                    let spec = set.podtrace_profile(pt)?;
                    let owner = pt.uid().unwrap_or_default();
                    let hash = podtrace_api::hash::content_hash(&(&spec, &owner));
                    Some((spec, hash, owner))
                });
                match index.profile_hashes.write_for(&r, wanted.as_ref().map(|w| w.1.as_str())) {
                    Write::Nothing => None,
                    Write::Delete => Some(Planned::Delete(r)),
                    Write::Apply => {
                        let (spec, hash, owner) = wanted?;
                        Some(Planned::Apply { podtrace: r, spec, hash, owner })
                    }
                }
            })
            .collect()
    })
}

/// Makes the planned writes, 16 at a time. Failed PodTraces are marked again after the
/// writer's retry delay; the first error is returned.
pub async fn write(ctx: &Arc<Context>, planned: Vec<Planned>) -> Result<()> {
    let results: Vec<(PodTraceRef, Result<()>)> = futures::stream::iter(planned)
        .map(|p| async move {
            match p {
                Planned::Apply { podtrace, spec, hash, owner } => {
                    let result = apply(ctx, &podtrace, &spec, &hash, &owner).await;
                    if result.is_ok() {
                        ctx.metrics.profile_write("apply");
                        tracing::info!(podtrace = %podtrace, hash = %hash, "PodTraceProfile applied");
                        ctx.index.write().profile_hashes.wrote(podtrace.clone(), Some(hash));
                    }
                    (podtrace, result)
                }
                Planned::Delete(podtrace) => {
                    let result = delete(ctx, &podtrace).await;
                    if result.is_ok() {
                        ctx.metrics.profile_write("delete");
                        tracing::info!(podtrace = %podtrace, "PodTraceProfile deleted: its PodTrace is not in effect");
                        ctx.index.write().profile_hashes.wrote(podtrace.clone(), None);
                    }
                    (podtrace, result)
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut first = None;
    for (podtrace, result) in results {
        if let Err(e) = result {
            ctx.metrics.error("podtraceprofile", &e);
            tracing::warn!(podtrace = %podtrace, error = %e, "PodTraceProfile write failed");
            crate::writer::retry_later(ctx, move |ctx| ctx.dirty.profiles.mark([podtrace]));
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

async fn apply(
    ctx: &Context,
    podtrace: &PodTraceRef,
    spec: &PodTraceProfileSpec,
    hash: &str,
    owner: &str,
) -> Result<()> {
    let body = serde_json::json!({
        "apiVersion": "podtrace.dev/v1alpha1",
        "kind": "PodTraceProfile",
        "metadata": {
            "name": podtrace.name,
            "namespace": podtrace.namespace,
            "labels": {MANAGED_BY.0: MANAGED_BY.1},
            "annotations": {SPEC_HASH_ANNOTATION: hash},
            // Garbage collection removes it with its PodTrace even if no operator runs.
            "ownerReferences": [{
                "apiVersion": "podtrace.dev/v1alpha1",
                "kind": "PodTrace",
                "name": podtrace.name,
                "uid": owner,
                "controller": true,
            }],
        },
        "spec": spec,
    });
    let api: Api<PodTraceProfile> = Api::namespaced(ctx.client.clone(), &podtrace.namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let failed = || Error::kube(format!("applying PodTraceProfile/{podtrace}"));
    let request = kube::core::Request::new(api.resource_url())
        .patch(&podtrace.name, &params, &Patch::Apply(&body))
        .map_err(|e| failed()(kube::Error::BuildRequest(e)))?;
    ctx.client.request_text(request).await.map_err(failed())?;
    Ok(())
}

async fn delete(ctx: &Context, podtrace: &PodTraceRef) -> Result<()> {
    let api: Api<PodTraceProfile> = Api::namespaced(ctx.client.clone(), &podtrace.namespace);
    match api.delete(&podtrace.name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::kube(format!("deleting PodTraceProfile/{podtrace}"))(e)),
    }
}

/// Brings the PodTraceProfiles of `refs` to their desired state now (the finalizer's cleanup
/// of a deleted PodTrace).
pub async fn sync_profiles(ctx: &Arc<Context>, refs: BTreeSet<PodTraceRef>) -> Result<()> {
    let _serial = ctx.write_lock.lock().await;
    let planned = plan(ctx, refs);
    write(ctx, planned).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{Fixture, PATIENCE, podtrace, status};
    use http::Method;

    const PROFILE: &str = "/apis/podtrace.dev/v1alpha1/namespaces/ns/podtraceprofiles/t";

    fn t() -> PodTraceRef {
        PodTraceRef { namespace: "ns".into(), name: "t".into() }
    }

    async fn sync(ctx: &Arc<Context>) -> Result<()> {
        let refs = [t()].into();
        tokio::time::timeout(PATIENCE, sync_profiles(ctx, refs)).await.expect("no stray request")
    }

    #[tokio::test]
    async fn a_podtrace_in_effect_gets_its_profile_once_owned_by_it_and_an_unchanged_one_costs_nothing()
     {
        let mut fx = Fixture::new();
        fx.profile("minimal");
        fx.store(&podtrace(true, Some("minimal")));
        let ctx = fx.ctx.clone();
        let task = tokio::spawn(async move { sync(&ctx).await });
        let applied = fx.api.expect(Method::PATCH, PROFILE, serde_json::json!({})).await;
        assert!(applied.uri.contains("fieldManager=podtrace-operator"), "{}", applied.uri);
        assert_eq!(
            applied.body["spec"],
            serde_json::json!({"profiles": [{"profileRef": {"name": "minimal"}}]})
        );
        let owner = &applied.body["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["kind"].as_str(), owner["uid"].as_str()),
            (Some("PodTrace"), Some("pt-uid"))
        );
        assert!(applied.body["metadata"]["annotations"][SPEC_HASH_ANNOTATION].is_string());
        task.await.unwrap().unwrap();
        assert_eq!(fx.ctx.metrics.podtraceprofile_writes.get_or_create(&write("apply")).get(), 1);

        sync(&fx.ctx).await.unwrap(); // unchanged: no request
        assert_eq!(fx.ctx.metrics.podtraceprofile_writes.get_or_create(&write("apply")).get(), 1);
    }

    #[tokio::test]
    async fn a_paused_podtrace_loses_its_profile_and_a_missing_one_is_no_error() {
        let mut fx = Fixture::new();
        fx.ctx.index.write().profile_hashes.listed(t(), Some("h".into()));
        let mut pt = podtrace(true, None);
        pt.spec.paused = true;
        fx.store(&pt);
        let ctx = fx.ctx.clone();
        let task = tokio::spawn(async move { sync(&ctx).await });
        let deleted = fx.api.answer(404, status(404, "NotFound")).await;
        assert_eq!(deleted.method, Method::DELETE);
        assert!(deleted.uri.starts_with(PROFILE), "{}", deleted.uri);
        task.await.unwrap().unwrap();
        assert_eq!(fx.ctx.index.read().profile_hashes.write_for(&t(), None), Write::Nothing);
    }

    #[tokio::test]
    async fn a_refused_write_is_an_error_with_its_reason_and_is_not_recorded() {
        let mut fx = Fixture::new();
        fx.store(&podtrace(true, None));
        let ctx = fx.ctx.clone();
        let task = tokio::spawn(async move { sync(&ctx).await });
        fx.api.answer(409, status(409, "Conflict")).await;
        let err = task.await.unwrap().unwrap_err();
        assert_eq!(err.metric_label(), "conflict");
        assert!(err.to_string().contains("PodTraceProfile/ns/t"), "{err}");
        assert_eq!(plan(&fx.ctx, [t()]).len(), 1, "still to write");
    }

    fn write(op: &'static str) -> crate::metrics::WriteLabels {
        crate::metrics::WriteLabels { op }
    }
}
