//! The NodeTrace status an agent reports, computed from the spec and the engine's status: per
//! pod Attached, Pending or Failed with a typed reason, every probe's state, the counts and the
//! conditions. Pure: the writer (`writer.rs`) adds the heartbeat and does the I/O.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use podtrace_api::{
    NodeTraceSpec, NodeTraceStatus, Probe, SharedSettings,
    nodetrace::{KernelFeatures, PodAttachStatus, SpecFormat},
    status::{PodAttachReason, PodAttachState, ProbeState, ProbeStatus, condition},
};
use std::collections::{BTreeMap, BTreeSet};

use crate::{engine::EngineStatus, gaps::Gap, metrics::TargetKey, targets::Pending};

/// The status for `spec` (its pods' settings from `shared` in format 2) given the engine's
/// state (without heartbeat and condition times).
pub fn status(
    spec: &NodeTraceSpec,
    shared: &SharedSettings,
    generation: Option<i64>,
    engine: &EngineStatus,
    kernel: &KernelFeatures,
    max_tracked: usize,
    export_dropped: u64,
) -> NodeTraceStatus {
    let settings: Vec<_> = spec.pods.iter().map(|p| spec.settings_for(p, shared)).collect();
    let requested: BTreeSet<Probe> =
        settings.iter().flatten().flat_map(|s| s.probes.active()).collect();
    // The engine's statuses when it runs the eBPF source; without it (--ebpf=false) every
    // requested probe is Unavailable with that reason.
    let probes: Vec<ProbeStatus> = Probe::ALL
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
    for (pod, settings) in spec.pods.iter().zip(&settings) {
        slots += engine.attached.iter().filter(|a| a.1 == pod.uid).count();
        let pending: Vec<&Pending> = engine.pending.iter().filter(|p| p.uid == pod.uid).collect();
        let attached: Vec<&(TargetKey, String, Option<u64>)> =
            engine.attached.iter().filter(|a| a.1 == pod.uid).collect();
        let (state, reason, message) = if let Err(e) = settings {
            // A shared object on its way is waited for; a format-1 key that names nothing is not.
            let state =
                if e.is_transient() { PodAttachState::Pending } else { PodAttachState::Failed };
            (state, Some(PodAttachReason::SettingsNotFound), Some(e.to_string()))
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
                    settings.as_ref().map_or(0, |s| s.max_series_per_pod)
                )),
            )
        } else if attached.iter().any(|a| a.2.is_none()) {
            attached_pods += 1;
            (PodAttachState::Attached, Some(PodAttachReason::CgroupV2Unavailable), Some("no cgroup v2 directory: in-kernel cgroup filtering is not possible for this pod".into()))
        } else {
            attached_pods += 1;
            // Measured, except by the packet probes where their programs could not attach.
            let packet =
                engine.packet_problems.iter().find(|p| attached.iter().any(|a| a.0 == p.0));
            let message = packet.map(|(key, why)| {
                format!("container {}: networkBytes, dns and tcpRtt not measured: the packet programs could not attach at its cgroup: {why}", key.container)
            });
            (PodAttachState::Attached, None, message)
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
    // The attach methods in use: the distinct methods of the attached probes.
    let mut kernel = kernel.clone();
    kernel.attach_types = probes
        .iter()
        .filter(|p| p.state == ProbeState::Attached)
        .filter_map(|p| p.method)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    NodeTraceStatus {
        spec_format: Some(SpecFormat::NEWEST as i32),
        observed_generation: generation,
        agent_version: Some(env!("CARGO_PKG_VERSION").into()),
        heartbeat: None,
        kernel: Some(kernel),
        probes,
        tracked_pods: spec.pods.len() as i32,
        attached_pods,
        pods,
        series: engine.series as i64,
        series_dropped: engine.dropped as i64,
        export_dropped: export_dropped as i64,
        conditions: Vec::new(),
        pod_results: Vec::new(),
    }
    // Results as lines for an operator that writes format 2 (it reads them), as objects for
    // one that writes format 1 (an earlier operator reads only those).
    .for_format(spec.format())
}

/// The conditions of `s`: Ready (every pod attached) and Degraded (a pod pending, a requested
/// probe unavailable or data the agent cannot read: `gaps`), keeping the transition times of
/// `previous` that did not change.
pub fn conditions(
    s: &NodeTraceStatus,
    gaps: &[Gap],
    previous: &[Condition],
    now: &Time,
) -> Vec<Condition> {
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
            !all_attached || probes_missing || !gaps.is_empty(),
            if !gaps.is_empty() {
                "DataUnavailable"
            } else if probes_missing {
                "ProbesUnavailable"
            } else if all_attached {
                "AsExpected"
            } else {
                "PodsPending"
            },
            if !gaps.is_empty() {
                gaps.iter().map(Gap::describe).collect::<Vec<_>>().join("; ")
            } else if probes_missing {
                "requested eBPF probes are not attached (see status.probes)".into()
            } else {
                String::new()
            },
        ),
    ]
}

/// Counts of pods by state, for logs.
pub fn summary(s: &NodeTraceStatus) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for p in s.attach_results() {
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
    use crate::{cgroup::CgroupLayout, cluster::resolve::resolve};
    use k8s_openapi::jiff::Timestamp;
    use podtrace_api::nodetrace::{PodSettings, TracedContainer, TracedPod};

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
            settings_key: Some("k1".into()),
            ..Default::default()
        }
    }

    #[test]
    fn attach_types_are_the_methods_of_the_attached_probes() {
        use podtrace_api::status::AttachMethod;
        let attached = |probe, method| ProbeStatus {
            probe,
            state: ProbeState::Attached,
            method: Some(method),
            reason: None,
        };
        let engine = EngineStatus {
            probes: vec![
                attached(Probe::TcpRtt, AttachMethod::TpBtf),
                attached(Probe::Dns, AttachMethod::CgroupSkb),
                attached(Probe::CpuBlock, AttachMethod::TpBtf),
                ProbeStatus {
                    probe: Probe::FsLatency,
                    state: ProbeState::Unavailable,
                    method: None,
                    reason: Some("EPERM".into()),
                },
            ],
            ..Default::default()
        };
        let shared = SharedSettings::default();
        let spec = NodeTraceSpec::default();
        let s = status(&spec, &shared, None, &engine, &KernelFeatures::default(), 16, 0);
        let kernel = s.kernel.unwrap();
        assert_eq!(kernel.attach_types, [AttachMethod::TpBtf, AttachMethod::CgroupSkb]);
        let none = status(&spec, &shared, None, &EngineStatus::default(), &kernel, 16, 0);
        assert!(none.kernel.unwrap().attach_types.is_empty(), "nothing attached, nothing listed");
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
                TracedPod { settings_key: Some("gone".into()), ..pod("g-h", "Burstable", None) },
            ],
            pod_settings: vec![PodSettings { key: "k1".into(), settings: Default::default() }],
            ..Default::default()
        };
        let none = SharedSettings::default();
        let (targets, pending) = resolve(&spec, &none, &layout, "/");
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
        let s = status(&spec, &none, Some(3), &engine, &KernelFeatures::default(), 16, 0);
        let full = status(&spec, &none, Some(3), &engine, &KernelFeatures::default(), 0, 0);
        assert_eq!(full.pods[0].reason, Some(PodAttachReason::TrackedMapFull));
        let over = EngineStatus { over_budget: vec![targets[0].key.clone()], ..engine.clone() };
        let over = status(&spec, &none, Some(3), &over, &KernelFeatures::default(), 16, 0);
        assert_eq!(over.pods[0].state, PodAttachState::Attached);
        assert_eq!(over.pods[0].reason, Some(PodAttachReason::SeriesBudgetExceeded));
        // Packet programs that could not attach at the pod's cgroup: still Attached (the other
        // probes and collectors measure it), with the kernel's reason.
        let why = "EPERM (Operation not permitted)".to_string();
        let packet =
            EngineStatus { packet_problems: vec![(targets[0].key.clone(), why)], ..engine.clone() };
        let packet = status(&spec, &none, Some(3), &packet, &KernelFeatures::default(), 16, 0);
        assert_eq!((packet.pods[0].state, packet.pods[0].reason), (PodAttachState::Attached, None));
        let message = packet.pods[0].message.as_deref().unwrap_or_default();
        assert!(
            message.contains("networkBytes, dns and tcpRtt not measured")
                && message.contains("EPERM"),
            "{message}"
        );
        assert_eq!(s.pods[0].message, None);
        assert_eq!((s.tracked_pods, s.attached_pods, s.series), (4, 1, 12));
        assert_eq!(s.pods[3].state, PodAttachState::Failed, "a missing settings entry fails");
        assert_eq!(s.pods[3].reason, Some(PodAttachReason::SettingsNotFound));
        assert!(s.pods[3].message.as_deref().unwrap().contains("\"gone\""));
        assert_eq!(s.pods[0].state, PodAttachState::Attached);
        assert_eq!(s.pods[1].reason, Some(PodAttachReason::CgroupNotFound));
        assert_eq!(s.pods[2].reason, Some(PodAttachReason::ContainerNotStarted));
        assert_eq!(s.observed_generation, Some(3));
        let c = conditions(&s, &[], &[], &Time(Timestamp::UNIX_EPOCH));
        assert_eq!((c[0].type_.as_str(), c[0].status.as_str()), ("Ready", "False"));
        assert_eq!(summary(&s)["pending"], 2);
        assert_eq!(summary(&s)["failed"], 1);
        assert_eq!(s.spec_format, Some(2), "the agent says it reads format 2");
        std::fs::remove_dir_all(root).unwrap();
    }

    /// Format 2: a pod's settings come from its PodTrace's PodTraceProfile and the
    /// MonitoringProfile it names; until they arrive the pod is Pending (not Failed), and the
    /// probes requested are those of the settings found.
    #[test]
    fn format_2_pods_wait_for_their_shared_settings_and_request_their_probes() {
        use podtrace_api::podtrace::ProfileRef;
        use podtrace_api::podtraceprofile::{PodTraceProfileSpec, ProfileChoice};
        use podtrace_api::presets::Preset;
        let web =
            podtrace_api::nodetrace::PodTraceRef { namespace: "ns".into(), name: "web".into() };
        let pod = TracedPod {
            settings_key: None,
            requested_by: vec![web.clone()],
            ..pod("a-b", "Burstable", Some("containerd://abc"))
        };
        let spec = NodeTraceSpec { pods: vec![pod], ..Default::default() };
        let engine = EngineStatus { resolved: true, ..Default::default() };
        let kernel = KernelFeatures::default();
        let mut shared = SharedSettings::default();
        let s = status(&spec, &shared, None, &engine, &kernel, 16, 0);
        assert!(s.pods.is_empty(), "format 2: the results are lines");
        let first = s.attach_results().next().unwrap().clone();
        assert_eq!(first.state, PodAttachState::Pending);
        assert_eq!(first.reason, Some(PodAttachReason::SettingsNotFound));
        assert!(first.message.as_deref().unwrap().contains("PodTraceProfile ns/web"));
        assert!(s.probes.iter().all(|p| p.state == ProbeState::Disabled), "nothing requested yet");

        let choice = ProfileChoice {
            profile_ref: Some(ProfileRef { name: "daemon".into() }),
            ..Default::default()
        };
        shared.podtrace_profiles.insert(web, PodTraceProfileSpec { profiles: vec![choice] });
        shared.monitoring_profiles.insert("daemon".into(), Preset::Daemon.spec());
        let s = status(&spec, &shared, None, &engine, &kernel, 16, 0);
        let first = s.attach_results().next().unwrap();
        assert_eq!(first.reason, Some(PodAttachReason::CgroupNotFound), "settings found");
        let unavailable: Vec<Probe> = s
            .probes
            .iter()
            .filter(|p| p.state == ProbeState::Unavailable)
            .map(|p| p.probe)
            .collect();
        let mut daemon = Preset::Daemon.spec().probes.include;
        daemon.sort();
        assert_eq!(unavailable, daemon, "daemon's probes, without eBPF here");
    }
}
