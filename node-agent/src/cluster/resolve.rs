//! Resolution: the containers of the pods of a NodeTrace spec to cgroups on this node, with
//! each pod's settings, or a typed reason why not yet. It only looks at the cgroup tree; it
//! writes nothing.
//!
//! ```text
//!  TracedPod (uid, QoS, containers with runtime IDs) ──kubelet naming──► candidate paths
//!    ──first that exists──► Target (cgroup, settings, labels) | Pending (reason, message)
//!  settings: NodeTraceSpec::settings_for (by= → PodTraceProfiles → MonitoringProfiles)
//! ```

use podtrace_api::{NodeTraceSpec, SharedSettings, status::PodAttachReason};

use crate::{
    cgroup::{
        CgroupLayout,
        kubelet::{QosClass, container_candidates, parse_runtime_id},
    },
    metrics::TargetKey,
    targets::{Pending, Target, pod_labels},
};

/// Resolves the containers of `spec` to cgroups, under the kubelet's cgroupRoot `kubelet_root`,
/// each pod with its settings from `spec` (format 1) or `shared` (format 2).
pub fn resolve(
    spec: &NodeTraceSpec,
    shared: &SharedSettings,
    layout: &CgroupLayout,
    kubelet_root: &str,
) -> (Vec<Target>, Vec<Pending>) {
    let mut targets = Vec::new();
    let mut pending = Vec::new();
    for pod in &spec.pods {
        let settings = match spec.settings_for(pod, shared) {
            Ok(settings) => settings,
            Err(e) => {
                // `status` reports the pod Pending or Failed with this reason; the other pods
                // keep running, and a missing shared object is retried when it arrives.
                pending.push(Pending {
                    key: TargetKey::new(&pod.namespace, &pod.name, ""),
                    uid: pod.uid.clone(),
                    reason: PodAttachReason::SettingsNotFound,
                    message: e.to_string(),
                });
                continue;
            }
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
            let candidates = container_candidates(kubelet_root, qos, &pod.uid, runtime, id);
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
                        "no cgroup at {} (and {} other paths); retrying. If the kubelet runs \
                         with a cgroupRoot, give it with --kubelet-cgroup-root (chart value \
                         agent.kubeletCgroupRoot)",
                        candidates[0],
                        candidates.len() - 1
                    ),
                }),
            }
        }
    }
    (targets, pending)
}
