//! The NodeTrace writes: recomputes the NodeTrace of each marked node in the spec format its
//! agent reads, server-side-applies its spec (field manager `podtrace-operator`) only when the
//! content hash changed, and deletes the NodeTraces of nodes with no traced pods or that no
//! longer exist. It never writes `status`: the applied object has no status, so the agent's
//! status fields are never claimed. `writer.rs` decides when.

use futures::StreamExt;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use podtrace_api::{NodeTrace, NodeTraceSpec};
use std::sync::Arc;

use crate::SPEC_HASH_ANNOTATION;
use crate::context::Context;
use crate::desired::spec_hash;
use crate::index::Write;
use crate::{Error, FIELD_MANAGER, Result};

/// Concurrent NodeTrace writes. A NodeTrace of 100 pods is ~25 KiB, so 16 specs and bodies in
/// flight cost well under a MiB, and the API server's round trips (admission, etcd) overlap.
const CONCURRENCY: usize = 16;

/// A NodeTrace write to make.
enum Planned {
    Apply(NodeTraceSpec, String),
    Delete,
}

/// Brings the NodeTraces of `nodes` to their desired state (the caller holds the write lock).
/// Specs are computed for the whole slice at once under one read of the stores (a few dozen
/// nodes at a time keeps only their specs alive), and only those that differ from what is
/// stored are kept. Failed nodes are marked again after the writer's retry delay; the first
/// error is returned.
pub async fn write_nodes(ctx: &Arc<Context>, nodes: &[Arc<str>]) -> Result<()> {
    let planned: Vec<(Arc<str>, Planned)> = ctx.with_traces(|set, index| {
        nodes
            .iter()
            .filter_map(|node| {
                let format = index.format_of(node);
                let spec = set.node_trace(&index.pods, node, format);
                let hash = spec.as_ref().map(spec_hash);
                let planned = match (index.write_for(node, hash.as_deref()), spec, hash) {
                    (Write::Apply, Some(spec), Some(hash)) => Planned::Apply(spec, hash),
                    (Write::Delete, ..) => Planned::Delete,
                    _ => return None,
                };
                Some((node.clone(), planned))
            })
            .collect()
    });
    let results: Vec<(Arc<str>, Result<()>)> = futures::stream::iter(planned)
        .map(|(node, planned)| async move {
            let result = write_node(ctx, &node, planned).await;
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
            crate::writer::retry_later(ctx, move |ctx| ctx.dirty.nodes.mark([node]));
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

async fn write_node(ctx: &Context, node: &Arc<str>, planned: Planned) -> Result<()> {
    match planned {
        Planned::Apply(spec, hash) => {
            apply(ctx, node, &spec, &hash).await?;
            ctx.metrics.write("apply");
            tracing::info!(node = %node, pods = spec.pods.len(), format = ?spec.format(), hash = %hash, "NodeTrace applied");
            ctx.index.write().wrote(node.clone(), Some(hash));
        }
        Planned::Delete => {
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
    // pods a NodeTrace is ~25 KiB, and both copies only raised the peak memory.
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
    use crate::fixtures::{Fixture, PATIENCE, nodetrace, podtrace, status};
    use crate::index::Write;
    use http::Method;

    async fn sync(ctx: &Arc<Context>, node: &str) -> Result<()> {
        let nodes = [Arc::from(node)];
        tokio::time::timeout(PATIENCE, write_nodes(ctx, &nodes)).await.expect("no stray request")
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
        assert!(pod.starts_with("ns/a uid=uid-ns-a settings="), "format 1 without a report: {pod}");
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
        let format = podtrace_api::nodetrace::SpecFormat::PodSettings;
        let hash =
            spec_hash(&fx.ctx.with_traces(|s, i| s.node_trace(&i.pods, "n1", format)).unwrap());
        assert_eq!(fx.ctx.index.read().write_for("n1", Some(&hash)), Write::Apply);
    }

    #[tokio::test]
    async fn a_node_whose_agent_reads_format_2_gets_pods_that_name_their_podtraces_and_no_settings()
    {
        let mut fx = Fixture::new();
        fx.pod_on("n1", "a");
        fx.store(&podtrace(true, None));
        fx.ctx
            .index
            .write()
            .nodetrace_listed(&crate::fixtures::reporting(&nodetrace("n1", "h0"), 2));
        let ctx = fx.ctx.clone();
        let task = tokio::spawn(async move { sync(&ctx, "n1").await });
        let applied = fx.api.expect(Method::PATCH, NODETRACE, serde_json::json!({})).await;
        assert_eq!(
            applied.body["spec"],
            serde_json::json!({"pods": ["ns/a uid=uid-ns-a qos=BestEffort by=ns/t container:app=containerd://1"]})
        );
        task.await.unwrap().unwrap();
    }

    fn write(op: &'static str) -> crate::metrics::WriteLabels {
        crate::metrics::WriteLabels { op }
    }
}
