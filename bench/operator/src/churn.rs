//! Pod churn: traced pods created and deleted at a steady rate for a while, then the time until
//! every NodeTrace lists exactly the pods that exist. Each churned pod lives 5 s; they are
//! spread over every node and belong to the first 10 PodTraces (as when a few Deployments roll
//! or a few Jobs fan out: the pods of every node change, the statuses of a few PodTraces). Pods
//! are created without container IDs (no kubelet starts them) and deleted with a grace period of
//! 0 (no kubelet confirms a graceful one).

use anyhow::{Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use podtrace_api::NodeTrace;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, pod};

/// How long a churned pod lives.
const LIFETIME: Duration = Duration::from_secs(5);
/// Requests in flight at most; beyond that the schedule slips and the achieved rate shows it.
const IN_FLIGHT: usize = 256;
/// The PodTraces whose pods churn.
const CHURNING_PODTRACES: usize = 10;

/// What the churn achieved.
pub struct Report {
    /// Pods created and deleted.
    pub created: usize,
    /// Pods deleted.
    pub deleted: usize,
    /// First operation to last completed.
    pub took: Duration,
    /// End of the last operation to every NodeTrace listing exactly the existing pods.
    pub converged: Duration,
}

enum Op {
    Create(String, usize, String),
    Delete(String),
}

/// Runs `rate` creations and `rate` deletions per second for `seconds`, then waits until the
/// NodeTraces in `store` list exactly the pods that exist (base pods included).
pub async fn run(
    cluster: &Cluster,
    rate: usize,
    seconds: u64,
    store: &Store<NodeTrace>,
) -> Result<Report> {
    let scale = &cluster.scale;
    // Every node's expected pod names: the base pods, then the churned ones still alive.
    let mut expected: HashMap<String, BTreeSet<String>> = HashMap::new();
    for i in 0..scale.podtraces {
        for j in 0..scale.pods_per_podtrace {
            expected.entry(cluster.node_of(i, j)).or_default().insert(format!("app-{i}-{j}"));
        }
    }
    let total = rate * seconds as usize;
    let step = Duration::from_secs_f64(1.0 / rate as f64);
    let mut ops: Vec<(Duration, Op)> = Vec::with_capacity(2 * total);
    for k in 0..total {
        let at = step * k as u32;
        let i = k % CHURNING_PODTRACES.min(scale.podtraces);
        let node = cluster.node((k * 7919) % scale.nodes);
        let name = format!("churn-{k}");
        ops.push((at, Op::Create(name.clone(), i, node.clone())));
        let gone = at + LIFETIME;
        if gone < Duration::from_secs(seconds) {
            ops.push((gone, Op::Delete(name)));
        } else {
            expected.entry(node).or_default().insert(name);
        }
    }
    ops.sort_by_key(|(at, _)| *at);
    let (created, deleted) = (total, ops.len() - total);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &cluster.ns);
    let start = tokio::time::Instant::now();
    let failures: Vec<kube::Error> = futures::stream::iter(ops)
        .map(|(at, op)| {
            let pods = pods.clone();
            async move {
                tokio::time::sleep_until(start + at).await;
                match op {
                    Op::Create(name, i, node) => {
                        pods.create(&PostParams::default(), &pod(&name, i, &node)).await.map(drop)
                    }
                    Op::Delete(name) => {
                        let now =
                            DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
                        pods.delete(&name, &now).await.map(drop)
                    }
                }
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .filter_map(|r| std::future::ready(r.err()))
        .collect()
        .await;
    let took = start.elapsed();
    if let Some(e) = failures.first() {
        bail!("{} of the churn's requests failed, the first: {e}", failures.len());
    }
    let end = Instant::now();
    let converged = loop {
        let state = store.state();
        let matching = state.iter().filter(|nt| {
            let names: BTreeSet<&str> = nt.spec.pods.iter().map(|p| p.name.as_str()).collect();
            expected
                .get(&nt.name_any())
                .is_some_and(|want| want.iter().map(String::as_str).eq(names.iter().copied()))
        });
        if matching.count() == expected.len() {
            break end.elapsed();
        }
        if end.elapsed() > Duration::from_secs(300) {
            bail!("NodeTraces did not converge 300 s after the churn");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    Ok(Report { created, deleted, took, converged })
}
