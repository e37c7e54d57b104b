//! Resolution: the containers of the pods of a NodeTrace spec to cgroups on this node, or a
//! typed reason why not yet. It only looks at the cgroup tree; it writes nothing.
//!
//! ```text
//!  TracedPod (uid, QoS, containers with runtime IDs) ──kubelet naming──► candidate paths
//!    ──first that exists──► Target (cgroup, settings, labels) | Pending (reason, message)
//! ```

use podtrace_api::{NodeTraceSpec, nodetrace::TracedPod, status::PodAttachReason};

use crate::{
    cgroup::{
        CgroupLayout,
        kubelet::{QosClass, container_candidates, parse_runtime_id},
    },
    metrics::TargetKey,
    targets::{Pending, Target, pod_labels},
};

/// Resolves the containers of `spec` to cgroups, under the kubelet's cgroupRoot `kubelet_root`.
pub fn resolve(
    spec: &NodeTraceSpec,
    layout: &CgroupLayout,
    kubelet_root: &str,
) -> (Vec<Target>, Vec<Pending>) {
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

/// Why a pod whose `settingsKey` is not in `spec.podSettings` is not traced.
pub(super) fn settings_not_found(pod: &TracedPod) -> String {
    format!(
        "settingsKey {:?} names no entry of spec.podSettings: the pod is not traced; the operator \
         rewrites the NodeTrace whole, so this is a hand-edited NodeTrace or an operator bug",
        pod.settings_key
    )
}
