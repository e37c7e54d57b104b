//! The NodeTrace writer: recomputes the NodeTrace of every marked node, server-side-applies its
//! spec (field manager `podtrace-operator`) only when the content hash changed, and deletes the
//! NodeTraces of nodes with no traced pods or that no longer exist. It never writes `status`:
//! the applied object has no status, so the agent's status fields are never claimed.

use futures::StreamExt;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use podtrace_api::{NodeTrace, NodeTraceSpec};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tracing::instrument;

use crate::SPEC_HASH_ANNOTATION;
use crate::context::Context;
use crate::desired::spec_hash;
use crate::index::Write;
use crate::{Error, FIELD_MANAGER, Result};

/// How long the writer waits after a mark for more marks, so that a burst of pod events (a
/// rollout, the initial list) becomes one batch.
const BATCH_DELAY: Duration = Duration::from_millis(20);
/// Concurrent NodeTrace writes. Since pods refer to a shared settings table a NodeTrace of 100
/// pods is ~30 KiB, so 16 specs and bodies in flight cost well under a MiB, and the API server's
/// round trips (admission, etcd) overlap.
const CONCURRENCY: usize = 16;
/// When a write failed, the node is retried after this delay.
const RETRY_DELAY: Duration = Duration::from_secs(2);

/// Runs the writer until the future is dropped (while this process leads).
pub async fn run(ctx: Arc<Context>) {
    // A new leader (or a restarted operator) checks every node once; the hashes make this free
    // of writes when nothing changed.
    let all: BTreeSet<Arc<str>> = {
        let index = ctx.index.read();
        index.pods.nodes().chain(index.nodetraces()).cloned().collect()
    };
    ctx.dirty.mark(all);
    loop {
        let mut nodes = ctx.dirty.take().await;
        tokio::time::sleep(BATCH_DELAY).await;
        nodes.extend(ctx.dirty.take_now());
        if let Err(e) = sync_nodes(&ctx, nodes).await {
            tracing::warn!(error = %e, "NodeTrace sync failed; retrying");
        }
    }
}

/// Brings the NodeTraces of `nodes` to their desired state. Failed nodes are marked again after
/// `RETRY_DELAY`; the first error is returned.
#[instrument(skip_all, fields(nodes = nodes.len()))]
pub async fn sync_nodes(ctx: &Arc<Context>, nodes: BTreeSet<Arc<str>>) -> Result<()> {
    let _serial = ctx.write_lock.lock().await;
    let _timer = ctx.metrics.reconcile("nodetrace");
    // Each node's spec is computed right before its write, so only CONCURRENCY specs (~100 KiB
    // each at 100 pods) are alive at once instead of every node's.
    let results: Vec<(Arc<str>, Result<()>)> = futures::stream::iter(nodes)
        .map(|node| async move {
            let spec = ctx.with_traces(|set, index| set.node_trace(&index.pods, &node));
            let result = sync_node(ctx, &node, spec).await;
            (node, result)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut first = None;
    for (node, result) in results {
        if let Err(e) = result {
            ctx.metrics.error("nodetrace", &e);
            tracing::warn!(node = %node, error = %e, "NodeTrace write failed");
            let ctx = ctx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(RETRY_DELAY).await;
                ctx.dirty.mark([node]);
            });
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// A NodeTrace as applied: metadata and spec, never status.
#[derive(serde::Serialize)]
struct ApplyBody<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    metadata: ApplyMeta<'a>,
    spec: &'a NodeTraceSpec,
}

#[derive(serde::Serialize)]
struct ApplyMeta<'a> {
    name: &'a str,
    labels: std::collections::BTreeMap<String, String>,
    annotations: std::collections::BTreeMap<&'static str, &'a str>,
}

async fn sync_node(ctx: &Context, node: &Arc<str>, spec: Option<NodeTraceSpec>) -> Result<()> {
    let hash = spec.as_ref().map(spec_hash);
    let write = ctx.index.read().write_for(node, hash.as_deref());
    match (write, spec, hash) {
        (Write::Apply, Some(spec), Some(hash)) => {
            apply(ctx, node, &spec, &hash).await?;
            ctx.metrics.write("apply");
            tracing::info!(node = %node, pods = spec.pods.len(), hash = %hash, "NodeTrace applied");
            ctx.index.write().wrote(node.clone(), Some(hash));
        }
        (Write::Delete, ..) => {
            let api: Api<NodeTrace> = Api::all(ctx.client.clone());
            match api.delete(node, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(Error::kube(format!("deleting NodeTrace/{node}"))(e)),
            }
            ctx.metrics.write("delete");
            tracing::info!(node = %node, "NodeTrace deleted: no traced pods left or node gone");
            ctx.index.write().wrote(node.clone(), None);
        }
        _ => {}
    }
    Ok(())
}

/// Server-side-applies the spec of `NodeTrace/<node>` with its hash annotation.
async fn apply(ctx: &Context, node: &str, spec: &NodeTraceSpec, hash: &str) -> Result<()> {
    let body = ApplyBody {
        api_version: "podtrace.dev/v1alpha1",
        kind: "NodeTrace",
        metadata: ApplyMeta {
            name: node,
            labels: ctx.scope.nodetrace_labels(),
            annotations: [(SPEC_HASH_ANNOTATION, hash)].into(),
        },
        spec,
    };
    // Serialized straight to bytes (no JSON value tree) and the answer is not decoded: at 100
    // pods a NodeTrace is ~100 KiB, and both copies only raised the peak memory.
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let failed = || Error::kube(format!("applying NodeTrace/{node}"));
    let request = kube::core::Request::new(<NodeTrace as kube::Resource>::url_path(&(), None))
        .patch(node, &params, &Patch::Apply(&body))
        .map_err(|e| failed()(kube::Error::BuildRequest(e)))?;
    ctx.client.request_text(request).await.map_err(failed())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{Fixture, PATIENCE, podtrace, status};
    use crate::index::Write;
    use http::Method;

    async fn sync(ctx: &Arc<Context>, node: &str) -> Result<()> {
        let nodes = [Arc::from(node)].into();
        tokio::time::timeout(PATIENCE, sync_nodes(ctx, nodes)).await.expect("no stray request")
    }

    const NODETRACE: &str = "/apis/podtrace.dev/v1alpha1/nodetraces/n1?";

    #[tokio::test]
    async fn a_changed_spec_is_applied_once_and_its_echo_costs_nothing() {
        let mut fx = Fixture::new();
        fx.pod_on("n1", "a");
        fx.store(&podtrace(true, None));
        let ctx = fx.ctx.clone();
        let task = tokio::spawn(async move { sync(&ctx, "n1").await });
        let applied = fx.api.expect(Method::PATCH, NODETRACE, serde_json::json!({})).await;
        assert!(applied.uri.contains("fieldManager=podtrace-operator"), "{}", applied.uri);
        assert!(applied.uri.contains("force=true"), "{}", applied.uri);
        let pod = applied.body["spec"]["pods"][0].as_str().unwrap();
        assert!(pod.starts_with("ns/a uid=uid-ns-a settings="), "{pod}");
        assert_eq!(
            applied.body["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            FIELD_MANAGER
        );
        assert!(applied.body.get("status").is_none(), "the agent's status is never claimed");
        task.await.unwrap().unwrap();
        assert_eq!(fx.ctx.metrics.nodetrace_writes.get_or_create(&write("apply")).get(), 1);

        sync(&fx.ctx, "n1").await.unwrap(); // unchanged: no request
        let echo: NodeTrace = serde_json::from_value(applied.body.clone()).unwrap();
        let change = fx.ctx.index.write().nodetrace_applied(&echo);
        assert_eq!(change.recompute, None, "our own write coming back");
    }

    #[tokio::test]
    async fn a_refused_write_is_an_error_with_its_reason_and_is_not_recorded() {
        let mut fx = Fixture::new();
        fx.pod_on("n1", "a");
        fx.store(&podtrace(true, None));
        let ctx = fx.ctx.clone();
        let task = tokio::spawn(async move { sync(&ctx, "n1").await });
        fx.api.answer(409, status(409, "Conflict")).await;
        let err = task.await.unwrap().unwrap_err();
        assert_eq!(err.metric_label(), "conflict");
        let labels = crate::metrics::ErrorLabels { controller: "nodetrace", reason: "conflict" };
        assert_eq!(fx.ctx.metrics.errors.get_or_create(&labels).get(), 1);
        let hash = spec_hash(&fx.ctx.with_traces(|s, i| s.node_trace(&i.pods, "n1")).unwrap());
        assert_eq!(fx.ctx.index.read().write_for("n1", Some(&hash)), Write::Apply);
    }

    fn write(op: &'static str) -> crate::metrics::WriteLabels {
        crate::metrics::WriteLabels { op }
    }
}
