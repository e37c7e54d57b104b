//! What the operator tests share: the operator as a process, and Nodes, Pods and PodTraces as
//! API objects. Every test has its own namespace; its Nodes carry the label
//! `podtrace.dev/e2e-scope=<namespace>` and its operator runs with `--namespace <ns>
//! --node-selector podtrace.dev/e2e-scope=<ns>`, so tests running in parallel on one API server
//! never see each other's objects.
//!
//! No agent runs here: [`FakeAgents`] stand in for them where a test needs the operator to see
//! agents that read spec format 2 (they write only `status.specFormat`, under the agents' field
//! manager), and [`Fixture::expect_node_trace`] reads each pod's settings the way an agent does
//! (`NodeTraceSpec::settings_for` over the PodTraceProfiles and MonitoringProfiles).

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use podtrace_api::merge::{merge_profiles, node_trace_spec};
use podtrace_api::nodetrace::{PodTraceRef, SpecFormat, TracedContainer, TracedPod};
use podtrace_api::presets::Preset;
use podtrace_api::{
    MonitoringProfile, MonitoringProfileSpec, NodeTrace, NodeTraceSpec, PodTrace, PodTraceProfile,
    SharedSettings,
};
use podtrace_e2e::{ControlPlane, TestNamespace, free_port, with_crds};
use serde_json::json;
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The label that scopes Nodes (and so NodeTraces) to one test.
pub const SCOPE_LABEL: &str = "podtrace.dev/e2e-scope";

/// One test's namespace, client and scope.
pub struct Fixture {
    /// The control plane.
    pub cp: &'static ControlPlane,
    /// An admin client.
    pub client: Client,
    /// The test's namespace (also the scope label's value).
    pub ns: TestNamespace,
    /// Agents that read format 2 on every node of the scope, unless made `without_agents`.
    agents: Option<FakeAgents>,
}

/// The pods a NodeTrace should list, each with the settings an agent should find for it.
pub type Expected = Vec<(TracedPod, MonitoringProfileSpec)>;

impl Fixture {
    /// A namespace for `test` on the control plane with the CRDs, with a fake agent that reads
    /// spec format 2 on every node of the scope.
    pub async fn new(test: &str) -> Self {
        let mut fx = Self::without_agents(test).await;
        fx.agents = Some(fx.fake_agents(None));
        fx
    }

    /// A namespace for `test` whose nodes have no agent: their NodeTraces stay in format 1.
    pub async fn without_agents(test: &str) -> Self {
        let cp = with_crds();
        let client = cp.client().await.unwrap();
        let ns = cp.namespace(&client, test).await.unwrap();
        Self { cp, client, ns, agents: None }
    }

    /// Fake agents of this scope that report reading spec format 2: on `nodes` only, or on
    /// every node of the scope.
    pub fn fake_agents(&self, nodes: Option<Vec<String>>) -> FakeAgents {
        let scope = format!("{SCOPE_LABEL}={}", self.name());
        FakeAgents(tokio::spawn(fake_agents(self.client.clone(), scope, nodes)))
    }

    /// The format the NodeTraces of this fixture's nodes are written in.
    pub fn format(&self) -> SpecFormat {
        if self.agents.is_some() { SpecFormat::Shared } else { SpecFormat::PodSettings }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.ns.name
    }

    /// Starts an operator scoped to this test.
    pub fn operator(&self, label: &str) -> Operator {
        Operator::start(self, label, &[])
    }

    /// Creates Node `<ns>-<suffix>` in this test's scope and returns its name.
    pub async fn node(&self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.name());
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {SCOPE_LABEL: self.name()}}
        }))
        .unwrap();
        Api::<Node>::all(self.client.clone()).create(&PostParams::default(), &node).await.unwrap();
        name
    }

    /// Deletes a Node.
    pub async fn delete_node(&self, name: &str) {
        Api::<Node>::all(self.client.clone()).delete(name, &DeleteParams::default()).await.unwrap();
    }

    /// The Pod API of this namespace.
    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), self.name())
    }

    /// The PodTrace API of this namespace.
    pub fn podtraces(&self) -> Api<PodTrace> {
        Api::namespaced(self.client.clone(), self.name())
    }

    /// Creates a running pod on `node` with `labels` and `containers`, owned by a ReplicaSet when
    /// `owned`, and writes its container IDs (`containerd://<pod>-<container>-0`) through the
    /// status subresource, as a kubelet would.
    pub async fn pod(
        &self,
        name: &str,
        node: &str,
        labels: &[(&str, &str)],
        containers: &[&str],
        owned: bool,
    ) -> Pod {
        self.pod_in(self.name(), name, node, labels, containers, owned).await
    }

    /// [`pod`](Self::pod) in `namespace`.
    pub async fn pod_in(
        &self,
        namespace: &str,
        name: &str,
        node: &str,
        labels: &[(&str, &str)],
        containers: &[&str],
        owned: bool,
    ) -> Pod {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let labels: serde_json::Map<_, _> =
            labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        let owners = if owned {
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "6f1c3c1e-0000-4000-8000-000000000001", "controller": true}])
        } else {
            json!([])
        };
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels, "ownerReferences": owners},
            "spec": {"nodeName": node, "containers": containers.iter().map(|c| json!({"name": c, "image": "busybox"})).collect::<Vec<_>>()},
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        for c in containers {
            set_container_id(&pods, name, c, &format!("containerd://{name}-{c}-0")).await;
        }
        pods.get(name).await.unwrap()
    }

    /// Writes a container's runtime ID (a restart gives a container a new one).
    pub async fn set_container_id(&self, pod: &str, container: &str, id: &str) {
        set_container_id(&self.pods(), pod, container, id).await;
    }

    /// Applies a PodTrace with `spec` (JSON) in this namespace.
    pub async fn podtrace(&self, name: &str, spec: serde_json::Value) {
        let body = json!({"apiVersion": "podtrace.dev/v1alpha1", "kind": "PodTrace",
            "metadata": {"name": name}, "spec": spec});
        self.podtraces()
            .patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(&body))
            .await
            .unwrap();
    }

    /// The status of PodTrace `name` once `check` holds (within 20 s).
    pub async fn status_when(
        &self,
        name: &str,
        check: impl Fn(&podtrace_api::PodTraceStatus) -> bool,
    ) -> podtrace_api::PodTraceStatus {
        eventually(Duration::from_secs(20), || async {
            let status = self.podtraces().get(name).await?.status.unwrap_or_default();
            anyhow::ensure!(check(&status), "PodTrace/{name}: {status:#?}");
            Ok(status)
        })
        .await
        .unwrap()
    }

    /// The NodeTrace of `node`, if any.
    pub async fn node_trace(&self, node: &str) -> Option<NodeTrace> {
        Api::<NodeTrace>::all(self.client.clone()).get_opt(node).await.unwrap()
    }

    /// Waits until `node`'s NodeTrace lists `expected` in this fixture's format (`None`: no
    /// NodeTrace), and in format 2 until each pod's settings, read as an agent reads them,
    /// are the expected ones.
    pub async fn expect_node_trace(&self, node: &str, expected: Option<Expected>) {
        self.expect_node_trace_in(node, expected, self.format()).await;
    }

    /// [`expect_node_trace`](Self::expect_node_trace) in `format`.
    pub async fn expect_node_trace_in(
        &self,
        node: &str,
        expected: Option<Expected>,
        format: SpecFormat,
    ) {
        let settings: Option<std::collections::HashMap<String, MonitoringProfileSpec>> =
            expected.as_ref().map(|e| e.iter().map(|(p, s)| (p.uid.clone(), s.clone())).collect());
        let spec = expected.map(|e| without_disabled_probe_lists(node_trace_spec(e, format)));
        let got = || async {
            self.node_trace(node).await.map(|nt| without_disabled_probe_lists(nt.spec))
        };
        let result = eventually(Duration::from_secs(20), || async {
            let got = got().await;
            if got != spec {
                bail!("NodeTrace/{node}: {got:#?}");
            }
            if let (Some(got), Some(want), SpecFormat::Shared) = (&got, &settings, format) {
                let shared = self.shared_settings().await?;
                for pod in &got.pods {
                    let read = got.settings_for(pod, &shared);
                    if read.as_ref() != Ok(&want[&pod.uid]) {
                        bail!("settings of {}: {read:#?}", pod.name);
                    }
                }
            }
            Ok(())
        })
        .await;
        if let Err(e) = result {
            assert_eq!(got().await, spec, "NodeTrace/{node} never reached the expected spec: {e}");
            panic!("NodeTrace/{node}: the settings never became the expected ones: {e}");
        }
    }

    /// The PodTraceProfiles of this namespace and every MonitoringProfile, as an agent sees
    /// them.
    pub async fn shared_settings(&self) -> Result<SharedSettings> {
        let ptps: Api<PodTraceProfile> = Api::namespaced(self.client.clone(), self.name());
        let mps: Api<MonitoringProfile> = Api::all(self.client.clone());
        Ok(SharedSettings {
            podtrace_profiles: ptps
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .map(|p| (self.pt(&p.name_any()), p.spec))
                .collect(),
            monitoring_profiles: mps
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .map(|p| (p.name_any(), p.spec))
                .collect(),
        })
    }

    /// A reference to PodTrace `name` of this namespace.
    pub fn pt(&self, name: &str) -> PodTraceRef {
        PodTraceRef { namespace: self.name().into(), name: name.into() }
    }
}

/// Writes a container's runtime ID through the status subresource, as a kubelet would.
async fn set_container_id(pods: &Api<Pod>, pod: &str, container: &str, id: &str) {
    let current = pods.get(pod).await.unwrap();
    let mut statuses: Vec<serde_json::Value> = current
        .status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.name != container)
        .map(|s| serde_json::to_value(s).unwrap())
        .collect();
    statuses.push(json!({"name": container, "containerID": id, "image": "busybox", "imageID": "",
        "ready": true, "restartCount": 0, "state": {"running": {}}}));
    let patch = json!({"status": {"phase": "Running", "containerStatuses": statuses}});
    pods.patch_status(pod, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

/// Clears `probes.include` where `probes.enabled` is false, on both sides of a comparison.
///
/// With probes disabled the list means nothing, and the API server does not keep it stable: when
/// server-side apply empties a `listType: set` owned by one manager it drops the field, and the
/// CRD default (every probe) reads back. Everything else is compared exactly.
fn without_disabled_probe_lists(mut spec: NodeTraceSpec) -> NodeTraceSpec {
    let settings =
        spec.settings.iter_mut().chain(spec.pod_settings.iter_mut().map(|p| &mut p.settings));
    for s in settings {
        if !s.probes.enabled {
            s.probes.include.clear();
        }
    }
    spec
}

/// The TracedPod the operator should write for `pod`, traced by `by` with `profiles`, and the
/// merged settings it should get (`node_trace_spec` turns them into a spec of either format).
pub fn traced(
    pod: &Pod,
    profiles: &[(&str, MonitoringProfileSpec)],
    by: &[PodTraceRef],
) -> (TracedPod, MonitoringProfileSpec) {
    let status = pod.status.clone().unwrap_or_default();
    let ids = status.container_statuses.unwrap_or_default();
    let mut names: Vec<String> = profiles.iter().map(|(n, _)| n.to_string()).collect();
    names.sort();
    names.dedup();
    let mut by = by.to_vec();
    by.sort();
    let traced = TracedPod {
        uid: pod.uid().unwrap(),
        namespace: pod.namespace().unwrap(),
        name: pod.name_any(),
        qos_class: status.qos_class,
        containers: pod
            .spec
            .as_ref()
            .unwrap()
            .containers
            .iter()
            .map(|c| TracedContainer {
                name: c.name.clone(),
                runtime_id: ids
                    .iter()
                    .find(|s| s.name == c.name)
                    .and_then(|s| s.container_id.clone()),
            })
            .collect(),
        labels: Default::default(),
        owner_kind: pod
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| o.kind.clone()),
        profiles: names,
        settings_key: None,
        requested_by: by,
    };
    (traced, merge_profiles(profiles.iter().map(|(_, p)| p)).unwrap())
}

/// A preset's name and settings.
pub fn preset(p: Preset) -> (&'static str, MonitoringProfileSpec) {
    (p.name(), p.spec())
}

/// Retries `check` every 200 ms until it succeeds or `timeout` passes (then its last error).
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() > timeout => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A `podtrace-operator` process, killed when dropped.
pub struct Operator {
    child: Option<Child>,
    /// Its /metrics, /livez, /readyz address.
    pub admin: String,
    /// Its log file.
    pub log: PathBuf,
}

impl Operator {
    /// Starts the operator of `fx`'s scope, with a 4 s Lease in the test namespace.
    pub fn start(fx: &Fixture, label: &str, extra: &[&str]) -> Self {
        let admin = format!("127.0.0.1:{}", free_port());
        let health = format!("127.0.0.1:{}", free_port());
        let log = fx.cp.dir.join(format!("operator-{}-{label}.log", fx.name()));
        let file = std::fs::File::create(&log).unwrap();
        let scope = format!("{SCOPE_LABEL}={}", fx.name());
        let child = Command::new(podtrace_e2e::binary("podtrace-operator"))
            .env("KUBECONFIG", &fx.cp.kubeconfig)
            .env("PODTRACE_LOG", "info,podtrace_operator=debug")
            .env("NO_COLOR", "1")
            .args(["--namespace", fx.name(), "--node-selector", &scope])
            .args(["--lease-namespace", fx.name(), "--lease-duration", "4"])
            .args(["--identity", label, "--metrics-addr", &admin, "--health-addr", &health])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Self { child: Some(child), admin, log }
    }

    /// GETs `path` from the admin server: (status code, body).
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        use std::io::{Read, Write};
        let (admin, path) = (self.admin.clone(), path.to_owned());
        let response = tokio::task::spawn_blocking(move || -> Result<String> {
            let mut stream = std::net::TcpStream::connect(&admin)?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response)
        })
        .await??;
        let code = response.split_whitespace().nth(1).context("no status line")?.parse()?;
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        Ok((code, body))
    }

    /// Waits until /readyz answers 200 (caches synced).
    pub async fn ready(&self) {
        eventually(Duration::from_secs(30), || async {
            match self.get("/readyz").await? {
                (200, _) => Ok(()),
                (code, _) => bail!("/readyz {code}"),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("operator not ready: {e}; log {}", self.log.display()));
    }

    /// The sum of every series of metric `name` (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        self.try_metric(name)
            .await
            .unwrap_or_else(|e| panic!("GET /metrics: {e}; log {}", self.log.display()))
    }

    /// Like [`metric`](Self::metric), failing while the process is not listening yet.
    pub async fn try_metric(&self, name: &str) -> Result<f64> {
        let (_, body) = self.get("/metrics").await?;
        Ok(podtrace_test_support::metric_sum(&body, name))
    }

    /// NodeTrace writes (applies and deletes) of this process.
    pub async fn writes(&self) -> f64 {
        self.metric("podtrace_operator_nodetrace_writes_total").await
    }

    /// PodTraceProfile writes (applies and deletes) of this process.
    pub async fn profile_writes(&self) -> f64 {
        self.metric("podtrace_operator_podtraceprofile_writes_total").await
    }

    /// Sends SIGTERM and waits for the exit (a graceful shutdown releases the Lease).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            send_signal(child.id() as i32, libc::SIGTERM);
            let status = child.wait().unwrap();
            assert!(status.success(), "operator exited with {status}; log {}", self.log.display());
        }
    }

    /// Kills the process with SIGKILL (a crash: the Lease is not released).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[allow(unsafe_code, reason = "std can only SIGKILL a child; SIGTERM needs libc::kill")]
fn send_signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) only sends a signal to our own child; an exited pid yields ESRCH.
    unsafe {
        libc::kill(pid, signal);
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Stand-ins for node agents that read spec format 2: each writes `status.specFormat: 2` on
/// its node's NodeTrace, under the agents' field manager, as a real agent's status does. The
/// task stops when dropped.
pub struct FakeAgents(tokio::task::JoinHandle<()>);

impl Drop for FakeAgents {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn fake_agents(client: Client, scope: String, nodes: Option<Vec<String>>) {
    let api: Api<NodeTrace> = Api::all(client);
    let stream = watcher(api.clone(), watcher::Config::default().labels(&scope))
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        let Ok(nt) = event else { continue };
        let name = nt.name_any();
        let mine = nodes.as_ref().is_none_or(|n| n.contains(&name));
        let reported = nt.status.as_ref().and_then(|s| s.spec_format) == Some(2);
        if mine && !reported {
            let status = json!({"apiVersion": "podtrace.dev/v1alpha1", "kind": "NodeTrace",
                "status": {"specFormat": 2}});
            let params = PatchParams::apply("podtrace-agent").force();
            if let Err(e) = api.patch_status(&name, &params, &Patch::Apply(&status)).await {
                eprintln!("fake agent of {name}: {e}");
            }
        }
    }
}
