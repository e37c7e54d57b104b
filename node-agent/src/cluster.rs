//! Cluster mode: the node's `NodeTrace` is the configuration. The agent watches only
//! `NodeTrace/<node>` (a field selector on the name), resolves its pods' containers to cgroups,
//! and server-side-applies `NodeTrace.status` with field manager `podtrace-agent`: on every
//! change, and otherwise as a heartbeat every 30 s.

use futures::StreamExt;
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use parking_lot::RwLock;
use podtrace_api::{
    NodeTrace, NodeTraceSpec, NodeTraceStatus, Probe,
    nodetrace::{KernelFeatures, PodAttachStatus, TracedPod},
    status::{PodAttachReason, PodAttachState, ProbeState, ProbeStatus, condition},
};
use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    cgroup::{
        CgroupLayout,
        kubelet::{QosClass, container_candidates, parse_runtime_id},
    },
    engine::EngineStatus,
    metrics::TargetKey,
    targets::{Pending, Target, pod_labels},
};

/// The field manager of the agent's status writes.
pub const FIELD_MANAGER: &str = "podtrace-agent";
/// Heartbeat period.
pub const HEARTBEAT: Duration = Duration::from_secs(30);

/// The latest NodeTrace of this node (`None` before the first event or after deletion).
#[derive(Clone, Debug, Default)]
pub struct Desired {
    /// The spec.
    pub spec: Option<NodeTraceSpec>,
    /// Its metadata.generation.
    pub generation: Option<i64>,
}

/// Resolves the containers of `spec` to cgroups.
pub fn resolve(spec: &NodeTraceSpec, layout: &CgroupLayout) -> (Vec<Target>, Vec<Pending>) {
    let mut targets = Vec::new();
    let mut pending = Vec::new();
    for pod in &spec.pods {
        let Some(settings) = spec.settings_of(pod) else {
            // `status` reports the pod Failed with this reason; the other pods keep running.
            pending.push(Pending {
                key: TargetKey::new(&pod.namespace, &pod.name, ""),
                uid: pod.uid.clone(),
                reason: PodAttachReason::SettingsNotFound,
                message: settings_not_found(pod),
            });
            continue;
        };
        let qos = pod.qos_class.as_deref().and_then(QosClass::parse);
        let labels = pod_labels(&pod.labels, &settings.labels.pod_labels);
        if pod.containers.is_empty() {
            pending.push(Pending {
                key: TargetKey::new(&pod.namespace, &pod.name, ""),
                uid: pod.uid.clone(),
                reason: PodAttachReason::ContainerNotStarted,
                message: "the pod has no traced containers yet".into(),
            });
        }
        for c in &pod.containers {
            let key = TargetKey::new(&pod.namespace, &pod.name, &c.name);
            let Some((runtime, id)) = c.runtime_id.as_deref().and_then(parse_runtime_id) else {
                pending.push(Pending {
                    key,
                    uid: pod.uid.clone(),
                    reason: PodAttachReason::ContainerNotStarted,
                    message: format!(
                        "container {} has no runtime ID the agent understands yet ({:?})",
                        c.name, c.runtime_id
                    ),
                });
                continue;
            };
            let candidates = container_candidates(qos, &pod.uid, runtime, id);
            match layout.resolve_first(&candidates) {
                Some(cgroup) => targets.push(Target {
                    key,
                    uid: pod.uid.clone(),
                    cgroup,
                    pids: None,
                    profile: settings.clone(),
                    pod_labels: labels.clone(),
                }),
                None => pending.push(Pending {
                    key,
                    uid: pod.uid.clone(),
                    reason: PodAttachReason::CgroupNotFound,
                    message: format!(
                        "no cgroup at {} (and {} other paths); retrying",
                        candidates[0],
                        candidates.len() - 1
                    ),
                }),
            }
        }
    }
    (targets, pending)
}

/// Why a pod whose `settingsKey` is not in `spec.podSettings` is not traced.
fn settings_not_found(pod: &TracedPod) -> String {
    format!(
        "settingsKey {:?} names no entry of spec.podSettings: the pod is not traced; the operator \
         rewrites the NodeTrace whole, so this is a hand-edited NodeTrace or an operator bug",
        pod.settings_key
    )
}

/// Watches `NodeTrace/<node>` and keeps `desired` current; sets `changed` on every change and
/// `healthy` while the watch works.
pub async fn watch(
    client: Client,
    node: String,
    desired: Arc<RwLock<Desired>>,
    changed: Arc<AtomicBool>,
    healthy: Arc<AtomicBool>,
) {
    let api: Api<NodeTrace> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let mut stream = watcher(api, config).default_backoff().boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(nt) | watcher::Event::InitApply(nt)) => {
                let mut d = desired.write();
                d.generation = nt.metadata.generation;
                d.spec = Some(nt.spec);
                changed.store(true, Ordering::Relaxed);
                healthy.store(true, Ordering::Relaxed);
                tracing::info!(node, generation = ?d.generation, "NodeTrace changed");
            }
            Ok(watcher::Event::Delete(_)) => {
                *desired.write() = Desired::default();
                changed.store(true, Ordering::Relaxed);
                tracing::info!(node, "NodeTrace deleted: tracing nothing");
            }
            Ok(watcher::Event::Init) => {}
            Ok(watcher::Event::InitDone) => healthy.store(true, Ordering::Relaxed),
            Err(e) => {
                healthy.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "NodeTrace watch failed; retrying with backoff");
            }
        }
    }
}

/// What the kernel offers, read at start.
pub fn kernel_features(
    layout: &CgroupLayout,
    filter: Option<podtrace_ebpf::Filter>,
    bpf_stats: bool,
) -> KernelFeatures {
    let read =
        |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_owned()).unwrap_or_default();
    KernelFeatures {
        release: read("/proc/sys/kernel/osrelease"),
        btf: std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
        cgroup_mode: layout.mode.name().into(),
        bpf_stats,
        attach_types: Vec::new(),
        ebpf_filter: filter.map(|f| f.name().into()),
    }
}

/// The status for `spec` given the engine's state (without heartbeat and condition times).
pub fn status(
    spec: &NodeTraceSpec,
    generation: Option<i64>,
    engine: &EngineStatus,
    kernel: &KernelFeatures,
    max_tracked: usize,
    export_dropped: u64,
) -> NodeTraceStatus {
    let requested: Vec<Probe> = spec.settings.probes.active().collect();
    // The engine's statuses when it runs the eBPF source; without it (--ebpf=false) every
    // requested probe is Unavailable with that reason.
    let probes = Probe::ALL
        .iter()
        .map(|&probe| match engine.probes.iter().find(|s| s.probe == probe) {
            Some(s) => s.clone(),
            None if requested.contains(&probe) => ProbeStatus {
                probe,
                state: ProbeState::Unavailable,
                method: None,
                reason: Some("the agent runs without eBPF (--ebpf=false)".into()),
            },
            None => ProbeStatus { probe, state: ProbeState::Disabled, method: None, reason: None },
        })
        .collect();
    let mut pods = Vec::new();
    let mut attached_pods = 0;
    // Containers take slots of the eBPF tracked-cgroup map in spec order; a pod that does not
    // fit any more is Failed.
    let mut slots = 0usize;
    for pod in &spec.pods {
        slots += engine.attached.iter().filter(|a| a.1 == pod.uid).count();
        let pending: Vec<&Pending> = engine.pending.iter().filter(|p| p.uid == pod.uid).collect();
        let attached: Vec<&(TargetKey, String, Option<u64>)> =
            engine.attached.iter().filter(|a| a.1 == pod.uid).collect();
        let settings = spec.settings_of(pod);
        let (state, reason, message) = if settings.is_none() {
            (
                PodAttachState::Failed,
                Some(PodAttachReason::SettingsNotFound),
                Some(settings_not_found(pod)),
            )
        } else if let Some(p) = pending.first() {
            (PodAttachState::Pending, Some(p.reason), Some(p.message.clone()))
        } else if attached.is_empty() {
            (
                PodAttachState::Pending,
                Some(PodAttachReason::CgroupNotFound),
                Some("not resolved yet".into()),
            )
        } else if slots > max_tracked {
            (
                PodAttachState::Failed,
                Some(PodAttachReason::TrackedMapFull),
                Some(format!(
                    "more than {max_tracked} containers on this node; raise PODTRACE_MAX_TRACKED_CGROUPS"
                )),
            )
        } else if engine.over_budget.iter().any(|k| attached.iter().any(|a| &a.0 == k)) {
            attached_pods += 1;
            (
                PodAttachState::Attached,
                Some(PodAttachReason::SeriesBudgetExceeded),
                Some(format!(
                    "the pod's series exceed maxSeriesPerPod ({}); some are dropped",
                    settings.map_or(0, |s| s.max_series_per_pod)
                )),
            )
        } else if attached.iter().any(|a| a.2.is_none()) {
            attached_pods += 1;
            (PodAttachState::Attached, Some(PodAttachReason::CgroupV2Unavailable), Some("no cgroup v2 directory: in-kernel cgroup filtering is not possible for this pod".into()))
        } else {
            attached_pods += 1;
            (PodAttachState::Attached, None, None)
        };
        pods.push(PodAttachStatus {
            uid: pod.uid.clone(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            state,
            reason,
            message,
        });
    }
    NodeTraceStatus {
        observed_generation: generation,
        agent_version: Some(env!("CARGO_PKG_VERSION").into()),
        heartbeat: None,
        kernel: Some(kernel.clone()),
        probes,
        tracked_pods: spec.pods.len() as i32,
        attached_pods,
        pods,
        series: engine.series as i64,
        series_dropped: engine.dropped as i64,
        export_dropped: export_dropped as i64,
        conditions: Vec::new(),
    }
}

fn conditions(s: &NodeTraceStatus, previous: &[Condition], now: &Time) -> Vec<Condition> {
    let all_attached = s.attached_pods == s.tracked_pods;
    let probes_missing = s.probes.iter().any(|p| p.state == ProbeState::Unavailable);
    let make = |type_: &str, ok: bool, reason: &str, message: String| {
        condition(previous, type_, ok, reason, message, s.observed_generation, now)
    };
    vec![
        make(
            "Ready",
            all_attached,
            if all_attached { "AllPodsAttached" } else { "PodsPending" },
            format!("{}/{} pods attached", s.attached_pods, s.tracked_pods),
        ),
        make(
            "Degraded",
            !all_attached || probes_missing,
            if probes_missing {
                "ProbesUnavailable"
            } else if all_attached {
                "AsExpected"
            } else {
                "PodsPending"
            },
            if probes_missing {
                "requested eBPF probes are not attached (see status.probes)".into()
            } else {
                String::new()
            },
        ),
    ]
}

/// What the status writer reads.
pub struct StatusWriter {
    /// The API client.
    pub client: Client,
    /// This node.
    pub node: String,
    /// The NodeTrace's spec.
    pub desired: Arc<RwLock<Desired>>,
    /// The engine's state.
    pub engine: Arc<RwLock<EngineStatus>>,
    /// What the kernel offers.
    pub kernel: KernelFeatures,
    /// Size of the eBPF tracked-cgroup map.
    pub max_tracked: usize,
}

/// Writes the status of `NodeTrace/<node>` whenever it changes and every [`HEARTBEAT`].
pub async fn write_status(
    writer: StatusWriter,
    export_dropped: impl Fn() -> u64 + Send,
    on_error: impl Fn(&kube::Error) + Send,
) {
    let StatusWriter { client, node, desired, engine, kernel, max_tracked } = writer;
    let api: Api<NodeTrace> = Api::all(client);
    let mut last: Option<NodeTraceStatus> = None;
    let mut last_write = Instant::now() - HEARTBEAT;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let (spec, generation) = {
            let d = desired.read();
            (d.spec.clone(), d.generation)
        };
        let Some(spec) = spec else { continue };
        let engine = engine.read().clone();
        if !engine.resolved {
            continue;
        }
        let mut next = status(&spec, generation, &engine, &kernel, max_tracked, export_dropped());
        let unchanged = last.as_ref().is_some_and(|l| {
            let mut l = l.clone();
            l.heartbeat = None;
            l.conditions = Vec::new();
            l == next
        });
        if unchanged && last_write.elapsed() < HEARTBEAT {
            continue;
        }
        let now = Time(Timestamp::now());
        next.conditions = conditions(&next, last.as_ref().map_or(&[][..], |l| &l.conditions), &now);
        next.heartbeat = Some(now);
        let patch = serde_json::json!({
            "apiVersion": "podtrace.dev/v1alpha1",
            "kind": "NodeTrace",
            "status": next,
        });
        match api
            .patch_status(&node, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
        {
            Ok(_) => {
                last = Some(next);
                last_write = Instant::now();
            }
            Err(e) => {
                on_error(&e);
                tracing::warn!(error = %e, node, "writing NodeTrace status failed; retrying");
            }
        }
    }
}

/// Counts of pods by state, for logs.
pub fn summary(s: &NodeTraceStatus) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for p in &s.pods {
        *m.entry(match p.state {
            PodAttachState::Attached => "attached",
            PodAttachState::Pending => "pending",
            PodAttachState::Failed => "failed",
        })
        .or_default() += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use podtrace_api::nodetrace::{PodSettings, TracedContainer};

    fn pod(uid: &str, qos: &str, runtime_id: Option<&str>) -> TracedPod {
        TracedPod {
            uid: uid.into(),
            namespace: "ns".into(),
            name: format!("pod-{uid}"),
            qos_class: Some(qos.into()),
            containers: vec![TracedContainer {
                name: "app".into(),
                runtime_id: runtime_id.map(String::from),
            }],
            settings_key: "k1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn pods_resolve_to_kubelet_cgroups_or_pending_with_typed_reasons() {
        let root = std::env::temp_dir().join(format!("podtrace-cluster-{}", std::process::id()));
        let layout = CgroupLayout::hybrid_under(&root);
        let path = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-poda_b.slice/cri-containerd-abc.scope";
        std::fs::create_dir_all(root.join("unified").join(path)).unwrap();
        std::fs::create_dir_all(root.join("memory").join(path)).unwrap();
        let spec = NodeTraceSpec {
            pods: vec![
                pod("a-b", "Burstable", Some("containerd://abc")),
                pod("c-d", "BestEffort", Some("cri-o://def")),
                pod("e-f", "Guaranteed", None),
                TracedPod { settings_key: "gone".into(), ..pod("g-h", "Burstable", None) },
            ],
            pod_settings: vec![PodSettings { key: "k1".into(), settings: Default::default() }],
            ..Default::default()
        };
        let (targets, pending) = resolve(&spec, &layout);
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].key, TargetKey::new("ns", "pod-a-b", "app"));
        assert!(targets[0].cgroup.v2_id.is_some());
        assert_eq!(
            pending.iter().map(|p| p.reason).collect::<Vec<_>>(),
            [
                PodAttachReason::CgroupNotFound,
                PodAttachReason::ContainerNotStarted,
                PodAttachReason::SettingsNotFound
            ]
        );

        let engine = EngineStatus {
            attached: targets
                .iter()
                .map(|t| (t.key.clone(), t.uid.clone(), t.cgroup.v2_id))
                .collect(),
            pending,
            series: 12,
            dropped: 0,
            resolved: true,
            over_budget: vec![],
            ..Default::default()
        };
        let s = status(&spec, Some(3), &engine, &kernel_features(&layout, None, false), 16, 0);
        let full = status(&spec, Some(3), &engine, &kernel_features(&layout, None, false), 0, 0);
        assert_eq!(full.pods[0].reason, Some(PodAttachReason::TrackedMapFull));
        let over = EngineStatus { over_budget: vec![targets[0].key.clone()], ..engine.clone() };
        let over = status(&spec, Some(3), &over, &kernel_features(&layout, None, false), 16, 0);
        assert_eq!(over.pods[0].state, PodAttachState::Attached);
        assert_eq!(over.pods[0].reason, Some(PodAttachReason::SeriesBudgetExceeded));
        assert_eq!((s.tracked_pods, s.attached_pods, s.series), (4, 1, 12));
        assert_eq!(s.pods[3].state, PodAttachState::Failed, "a missing settings entry fails");
        assert_eq!(s.pods[3].reason, Some(PodAttachReason::SettingsNotFound));
        assert!(s.pods[3].message.as_deref().unwrap().contains("\"gone\""));
        assert_eq!(s.pods[0].state, PodAttachState::Attached);
        assert_eq!(s.pods[1].reason, Some(PodAttachReason::CgroupNotFound));
        assert_eq!(s.pods[2].reason, Some(PodAttachReason::ContainerNotStarted));
        assert_eq!(s.observed_generation, Some(3));
        let c = conditions(&s, &[], &Time(Timestamp::UNIX_EPOCH));
        assert_eq!((c[0].type_.as_str(), c[0].status.as_str()), ("Ready", "False"));
        assert_eq!(summary(&s)["pending"], 2);
        assert_eq!(summary(&s)["failed"], 1);
        std::fs::remove_dir_all(root).unwrap();
    }
}
