//! The writer: the one task that writes PodTraceProfiles and NodeTraces while this process
//! leads, in an order that never leaves an agent without settings.
//!
//! ```text
//!  Writes ──wait, +20 ms──► PodTraceProfiles: applies      (new or changed settings first)
//!                                │
//!                                ▼
//!                           NodeTraces, 64 nodes at a time ──► between slices: newly marked
//!                                │                              PodTraceProfile applies
//!                                ▼
//!                           PodTraceProfiles: deletions    (once no NodeTrace names them)
//! ```
//!
//! Marks coalesce: while a round writes, new marks of the same node or PodTrace collect into
//! one entry of the next round, so a burst of pod events (a rollout, pod churn) costs each node
//! at most one write per round, however many events it had.

use podtrace_api::nodetrace::PodTraceRef;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tracing::instrument;

use crate::context::Context;
use crate::podtraceprofile::{self, Planned};
use crate::{Result, nodetrace};

/// How long the writer waits after a mark for more marks, so that a burst of events becomes one
/// round.
const BATCH_DELAY: Duration = Duration::from_millis(20);
/// Nodes whose specs are computed and written together: bounds the specs alive at once and how
/// long a newly marked PodTraceProfile waits behind NodeTrace writes.
const NODE_SLICE: usize = 64;
/// When a write failed, the object is marked again after this delay.
pub const RETRY_DELAY: Duration = Duration::from_secs(2);

/// Runs the writer until the future is dropped (while this process leads).
pub async fn run(ctx: Arc<Context>) {
    // A new leader (or a restarted operator) checks every node and PodTrace once, and every
    // PodTraceProfile it finds (an orphan is deleted); the hashes make this free of writes when
    // nothing changed.
    {
        let index = ctx.index.read();
        ctx.dirty.nodes.mark(index.pods.nodes().chain(index.nodetraces()).cloned());
        ctx.dirty.profiles.mark(index.profile_hashes.keys().cloned());
    }
    ctx.dirty.profiles.mark(ctx.podtraces.state().iter().map(|pt| crate::desired::reference(pt)));
    loop {
        ctx.dirty.wait().await;
        tokio::time::sleep(BATCH_DELAY).await;
        let profiles = ctx.dirty.profiles.take_now();
        let nodes = ctx.dirty.nodes.take_now();
        if let Err(e) = sync(&ctx, profiles, nodes).await {
            tracing::warn!(error = %e, "sync failed; retrying");
        }
    }
}

/// Brings the PodTraceProfiles of `profiles` and the NodeTraces of `nodes` to their desired
/// state: applies of PodTraceProfiles, then NodeTraces (with the applies of PodTraceProfiles
/// marked meanwhile between slices), then deletions of PodTraceProfiles. Returns the first
/// error; failed objects are retried after [`RETRY_DELAY`].
#[instrument(skip_all, fields(profiles = profiles.len(), nodes = nodes.len()))]
pub async fn sync(
    ctx: &Arc<Context>,
    profiles: BTreeSet<PodTraceRef>,
    nodes: BTreeSet<Arc<str>>,
) -> Result<()> {
    let _serial = ctx.write_lock.lock().await;
    let _timer = ctx.metrics.reconcile("nodetrace");
    let mut first = None;
    let mut deletions = Vec::new();
    let mut keep = |result: Result<()>| {
        if let Err(e) = result {
            first.get_or_insert(e);
        }
    };
    keep(apply_profiles(ctx, profiles, &mut deletions).await);
    let nodes: Vec<Arc<str>> = nodes.into_iter().collect();
    for slice in nodes.chunks(NODE_SLICE) {
        keep(nodetrace::write_nodes(ctx, slice).await);
        if !ctx.dirty.profiles.is_empty() {
            let marked = ctx.dirty.profiles.take_now();
            keep(apply_profiles(ctx, marked, &mut deletions).await);
        }
    }
    keep(podtraceprofile::write(ctx, deletions).await);
    first.map_or(Ok(()), Err)
}

/// Writes the applies planned for `refs` now and adds their deletions to `deletions`.
async fn apply_profiles(
    ctx: &Arc<Context>,
    refs: BTreeSet<PodTraceRef>,
    deletions: &mut Vec<Planned>,
) -> Result<()> {
    if refs.is_empty() {
        return Ok(());
    }
    let (applies, deletes): (Vec<_>, Vec<_>) = podtraceprofile::plan(ctx, refs)
        .into_iter()
        .partition(|p| matches!(p, Planned::Apply { .. }));
    deletions.extend(deletes);
    podtraceprofile::write(ctx, applies).await
}

/// Runs `mark` on `ctx` after [`RETRY_DELAY`]: a failed object is written again in a later
/// round.
pub fn retry_later(ctx: &Arc<Context>, mark: impl FnOnce(&Context) + Send + 'static) {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(RETRY_DELAY).await;
        mark(&ctx);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{Fixture, PATIENCE, deleted, podtrace, reporting};
    use http::Method;
    use podtrace_api::NodeTrace;

    /// A new PodTrace on a format-2 node: its PodTraceProfile is written before the NodeTrace
    /// that names it, so the agent never reads a pod whose settings do not exist yet.
    #[tokio::test]
    async fn the_profile_is_written_before_the_nodetrace_that_names_it() {
        let mut fx = Fixture::new();
        fx.pod_on("n1", "a");
        fx.profile("minimal");
        fx.store(&podtrace(true, Some("minimal")));
        let listed = reporting(&NodeTrace::new("n1", Default::default()), 2);
        fx.ctx.index.write().nodetrace_listed(&listed);
        let t = PodTraceRef { namespace: "ns".into(), name: "t".into() };
        let ctx = fx.ctx.clone();
        let task =
            tokio::spawn(async move { sync(&ctx, [t].into(), [Arc::from("n1")].into()).await });
        let profile = "/apis/podtrace.dev/v1alpha1/namespaces/ns/podtraceprofiles/t";
        fx.api.expect(Method::PATCH, profile, serde_json::json!({})).await;
        let nodetrace = "/apis/podtrace.dev/v1alpha1/nodetraces/n1";
        let applied = fx.api.expect(Method::PATCH, nodetrace, serde_json::json!({})).await;
        assert_eq!(
            applied.body["spec"]["pods"][0].as_str().map(|l| l.contains("by=ns/t")),
            Some(true)
        );
        tokio::time::timeout(PATIENCE, task).await.unwrap().unwrap().unwrap();
    }

    /// A paused PodTrace on a format-2 node: its pods leave the NodeTrace first, then its
    /// PodTraceProfile goes.
    #[tokio::test]
    async fn a_profile_is_deleted_after_the_nodetrace_stopped_naming_it() {
        let mut fx = Fixture::new();
        fx.pod_on("n1", "a");
        let mut pt = podtrace(true, None);
        pt.spec.paused = true;
        fx.store(&pt);
        let t = PodTraceRef { namespace: "ns".into(), name: "t".into() };
        {
            let mut index = fx.ctx.index.write();
            index.profile_hashes.listed(t.clone(), Some("h".into()));
            index.nodetrace_listed(&reporting(&crate::fixtures::nodetrace("n1", "h1"), 2));
        }
        let ctx = fx.ctx.clone();
        let task =
            tokio::spawn(async move { sync(&ctx, [t].into(), [Arc::from("n1")].into()).await });
        fx.api.expect(Method::DELETE, "/apis/podtrace.dev/v1alpha1/nodetraces/n1", deleted()).await;
        let profile = "/apis/podtrace.dev/v1alpha1/namespaces/ns/podtraceprofiles/t";
        fx.api.expect(Method::DELETE, profile, deleted()).await;
        tokio::time::timeout(PATIENCE, task).await.unwrap().unwrap().unwrap();
    }
}
