//! The objects of the benchmark's cluster: Nodes, MonitoringProfiles, PodTraces and Pods as
//! API objects (no kubelet: a pod's container IDs are written through the status subresource,
//! as a kubelet would), and the raw LIST the initial sync is compared with.
//!
//! Pod `j` of app `i` runs on node `(i + j) % nodes`, so every PodTrace spans
//! `min(pods per PodTrace, nodes)` nodes and every node has the same number of pods; PodTrace
//! `pt-i` selects `app=app-i` and refers to MonitoringProfile `<ns>-p<i % profiles>`.

use anyhow::Result;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use podtrace_api::{MonitoringProfile, PodTrace};
use serde_json::json;
use std::time::{Duration, Instant};

use crate::Scale;

/// The label that scopes the benchmark's Nodes (and so its NodeTraces).
pub const SCOPE_LABEL: &str = "podtrace.dev/e2e-scope";

/// Requests in flight while creating objects.
const CONCURRENCY: usize = 64;

/// The benchmark's namespace, client and scale.
pub struct Cluster {
    /// Admin client.
    pub client: Client,
    /// The namespace of the PodTraces and pods (also the scope label's value).
    pub ns: String,
    /// The sizes.
    pub scale: Scale,
}

impl Cluster {
    /// `key=value` of the scope label.
    pub fn scope(&self) -> String {
        format!("{SCOPE_LABEL}={}", self.ns)
    }

    /// Name of node `n`.
    pub fn node(&self, n: usize) -> String {
        format!("{}-n{n}", self.ns)
    }

    /// Name of the MonitoringProfile `k`.
    pub fn profile(&self, k: usize) -> String {
        format!("{}-p{k}", self.ns)
    }

    /// The MonitoringProfile PodTrace `i` refers to at first.
    pub fn profile_of(&self, i: usize) -> String {
        self.profile(i % self.scale.profiles)
    }

    /// The node of pod `j` of app `i`.
    pub fn node_of(&self, i: usize, j: usize) -> String {
        self.node((i + j) % self.scale.nodes)
    }

    /// Creates the Nodes, the MonitoringProfiles (the standard preset at an interval of their
    /// own) and the PodTraces.
    pub async fn create_nodes_profiles_and_podtraces(&self) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let scope = (SCOPE_LABEL, self.ns.clone());
        futures::stream::iter(0..self.scale.nodes)
            .map(|n| {
                let node: Node = serde_json::from_value(json!({
                    "metadata": {"name": self.node(n), "labels": {scope.0: scope.1}}
                }))
                .unwrap();
                let nodes = nodes.clone();
                async move { nodes.create(&PostParams::default(), &node).await }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        let profiles: Api<MonitoringProfile> = Api::all(self.client.clone());
        for k in 0..self.scale.profiles {
            self.apply_profile(&profiles, k, &format!("{}s", 10 + k % 50)).await?;
        }
        let podtraces: Api<PodTrace> = Api::namespaced(self.client.clone(), &self.ns);
        futures::stream::iter(0..self.scale.podtraces)
            .map(|i| {
                let body = json!({"apiVersion": "podtrace.dev/v1alpha1", "kind": "PodTrace",
                    "metadata": {"name": format!("pt-{i}")},
                    "spec": {"selector": {"matchLabels": {"app": format!("app-{i}")}},
                             "profileRef": {"name": self.profile_of(i)}}});
                let podtraces = podtraces.clone();
                async move {
                    let pp = PatchParams::apply("bench");
                    podtraces.patch(&format!("pt-{i}"), &pp, &Patch::Apply(body)).await
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    /// Applies MonitoringProfile `k` with `interval` (the rest: the standard preset).
    pub async fn apply_profile(
        &self,
        api: &Api<MonitoringProfile>,
        k: usize,
        interval: &str,
    ) -> Result<()> {
        let name = self.profile(k);
        let body = json!({"apiVersion": "podtrace.dev/v1alpha1", "kind": "MonitoringProfile",
            "metadata": {"name": name}, "spec": {"interval": interval}});
        api.patch(&name, &PatchParams::apply("bench"), &Patch::Apply(body)).await?;
        Ok(())
    }

    /// Creates pods `range` of every app, running, with a container ID each.
    pub async fn create_pods(&self, range: std::ops::Range<usize>) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let work = (0..self.scale.podtraces).flat_map(|i| range.clone().map(move |j| (i, j)));
        futures::stream::iter(work)
            .map(|(i, j)| {
                let pods = pods.clone();
                let name = format!("app-{i}-{j}");
                let pod = pod(&name, i, &self.node_of(i, j));
                async move {
                    pods.create(&PostParams::default(), &pod).await?;
                    let status = json!({"status": {"phase": "Running", "containerStatuses": [{"name": "app",
                        "containerID": format!("containerd://{:064x}", i * 100_000 + j), "image": "registry.example/app:1.0",
                        "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}}}]}});
                    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await?;
                    Ok::<_, kube::Error>(())
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    /// A paginated LIST of every pod of the namespace, 500 per page, decoded: what any client
    /// must do.
    pub async fn raw_list(&self) -> Result<Duration> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let started = Instant::now();
        let mut params = ListParams::default().limit(500);
        let mut count = 0;
        loop {
            let page = pods.list(&params).await?;
            count += page.items.len();
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => break,
            }
        }
        let took = started.elapsed();
        println!("raw LIST: {count} pods in {took:.2?}");
        Ok(took)
    }
}

/// Pod `name` of app `i` on `node`, owned by the app's ReplicaSet, not started yet.
pub fn pod(name: &str, i: usize, node: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": format!("app-{i}"), "pod-template-hash": "5d8f7c9b6"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("app-{i}-5d8f7c9b6"),
                "uid": "6f1c3c1e-0000-4000-8000-000000000001", "controller": true}]},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "registry.example/app:1.0"}]},
    }))
    .expect("a valid pod")
}
