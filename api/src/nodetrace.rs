//! `NodeTrace`: the configuration of one node's agent (spec, by the operator) and what that agent
//! achieved (status, by the agent). One object per node, so hundreds of agents never write the
//! same object; the operator rolls the statuses up into each PodTrace.
//!
//! ```text
//!  spec.settings         node-wide merge (which probes the agent loads)
//!  spec.podSettings[]    {key, settings}: each distinct per-pod merge once, key = its hash
//!  spec.pods[]           {uid, …, settingsKey} ──refers to──► podSettings[key]
//! ```

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::profile::{MonitoringProfileSpec, Probe};

/// Spec of a NodeTrace, owned by the operator: every traced pod on the node with its containers,
/// and each distinct merged settings once. Named after the node.
#[allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) repeats the keys name/type_/json_path; clippy reads them as duplicates"
)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "podtrace.dev",
    version = "v1alpha1",
    kind = "NodeTrace",
    plural = "nodetraces",
    shortname = "nt",
    category = "podtrace",
    status = "NodeTraceStatus",
    derive = "PartialEq",
    doc = "NodeTrace is the podtrace agent configuration of one node, named after the node. The \
           operator writes its spec (the traced pods on the node and their merged settings); the \
           node's agent writes its status (kernel features, how each probe attached, per-pod results, \
           heartbeat). Users read it; they do not edit it.",
    printcolumn(name = "Pods", type_ = "integer", json_path = ".status.trackedPods"),
    printcolumn(name = "Attached", type_ = "integer", json_path = ".status.attachedPods"),
    printcolumn(name = "Series", type_ = "integer", json_path = ".status.series", priority = 1),
    printcolumn(name = "Heartbeat", type_ = "date", json_path = ".status.heartbeat"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct NodeTraceSpec {
    /// The node-wide merge of every traced pod's settings: the union of collectors and probes,
    /// the smallest interval and the largest history. It decides which probes the agent loads.
    #[serde(default)]
    #[schemars(transform = without_cel_rules)]
    pub settings: MonitoringProfileSpec,
    /// The distinct merged settings of the pods of this node, sorted by key; each pod names its
    /// entry in `settingsKey`. Pods selected by the same PodTraces share one entry, so a node of
    /// 100 pods carries a handful of settings instead of 100 copies.
    #[serde(default)]
    #[schemars(length(max = 2048), transform = without_cel_rules)]
    // Atomic for the same reason as pods: written whole by the operator only.
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub pod_settings: Vec<PodSettings>,
    /// The traced pods on this node, sorted by namespace and name.
    #[serde(default)]
    #[schemars(length(max = 2048), transform = without_cel_rules)]
    // Atomic: only the operator writes it, always whole. As a list-map, server-side apply tracked
    // every field of every pod (~50 per pod) and each apply of a 100-pod NodeTrace cost the API
    // server about three times as much.
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub pods: Vec<TracedPod>,
    /// Every PodTrace that selects a pod on this node.
    #[serde(default)]
    pub requested_by: Vec<PodTraceRef>,
}

/// Removes the CEL rules of embedded profiles from a NodeTrace schema.
///
/// The operator writes NodeTraces from profiles the API server has already validated, and the
/// per-pod copies of the profile rules would multiply their estimated cost past the API server's
/// CRD budget ("estimated rule cost exceeds budget"), so the NodeTrace CRD carries none.
fn without_cel_rules(schema: &mut schemars::Schema) {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.remove("x-kubernetes-validations");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value = serde_json::Value::from(std::mem::take(schema));
    strip(&mut value);
    *schema = value.try_into().expect("a schema stays a schema without its CEL rules");
}

impl NodeTraceSpec {
    /// The settings `pod` refers to by `settingsKey`; `None` when no entry of `podSettings` has
    /// that key (the agent then reports the pod Failed with reason `SettingsNotFound`).
    pub fn settings_of(&self, pod: &TracedPod) -> Option<&MonitoringProfileSpec> {
        self.pod_settings.iter().find(|s| s.key == pod.settings_key).map(|s| &s.settings)
    }
}

/// One distinct merged settings of a NodeTrace, referred to by the pods that use it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodSettings {
    /// Content hash of the settings (16 hex digits of their SHA-256); the pods' `settingsKey`.
    pub key: String,
    /// The merge of the effective profiles of every PodTrace that selects the pods referring to
    /// this entry.
    pub settings: MonitoringProfileSpec,
}

/// The key of `settings` in `NodeTraceSpec.podSettings`: its content hash (16 hex digits), so
/// equal settings share an entry whatever the order they were merged in.
pub fn settings_key(settings: &MonitoringProfileSpec) -> String {
    crate::effective::profile_hash(settings)
}

/// A pod the agent of the node traces.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TracedPod {
    /// Pod UID; the agent finds the pod's cgroup by it.
    pub uid: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// QoS class of the pod (Guaranteed, Burstable or BestEffort); it decides the cgroup path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos_class: Option<String>,
    /// Traced containers with their runtime IDs.
    #[serde(default)]
    pub containers: Vec<TracedContainer>,
    /// Pod labels copied onto the pod's series (only the keys of the profile's allow-list).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Names of the effective profiles merged for this pod.
    #[serde(default)]
    pub profiles: Vec<String>,
    /// The key of this pod's entry in `spec.podSettings`: the merge of the effective profiles
    /// of every PodTrace that selects it.
    pub settings_key: String,
    /// The PodTraces that select this pod.
    #[serde(default)]
    pub requested_by: Vec<PodTraceRef>,
}

/// A traced container.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TracedContainer {
    /// Container name.
    pub name: String,
    /// Runtime ID as the kubelet reports it (for example "containerd://4f2a…"); absent while the
    /// container has not started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
}

/// A PodTrace, by namespace and name.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub struct PodTraceRef {
    /// Namespace of the PodTrace.
    pub namespace: String,
    /// Name of the PodTrace.
    pub name: String,
}

/// Observed state of a NodeTrace, written by the node's agent (field manager podtrace-agent).
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeTraceStatus {
    /// The metadata.generation of the spec the agent has applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Version of the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// Last time the agent reported (every 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Time>,
    /// What the agent found in the node's kernel at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelFeatures>,
    /// How each probe attached, or why it could not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<ProbeStatus>,
    /// Per traced pod: attached, pending or failed, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<PodAttachStatus>,
    /// Number of pods in spec.pods the agent knows of.
    #[serde(default)]
    pub tracked_pods: i32,
    /// Number of pods the agent has attached to.
    #[serde(default)]
    pub attached_pods: i32,
    /// Series the agent currently exports.
    #[serde(default)]
    pub series: i64,
    /// Series dropped by maxSeriesPerPod since the agent started.
    #[serde(default)]
    pub series_dropped: i64,
    /// Samples dropped by push exporters since the agent started.
    #[serde(default)]
    pub export_dropped: i64,
    /// Conditions of the agent (Ready, Degraded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// Kernel capabilities found by the agent.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KernelFeatures {
    /// Kernel release (uname -r).
    pub release: String,
    /// Whether kernel BTF is available (/sys/kernel/btf/vmlinux), needed for CO-RE and tp_btf.
    pub btf: bool,
    /// cgroup layout: "unified" (v2 only), "hybrid" (v1 controllers plus v2) or "legacy" (v1 only).
    pub cgroup_mode: String,
    /// Whether the kernel counted eBPF program runs at the agent's start (its --bpf-stats, or
    /// kernel.bpf_stats_enabled): podtrace_agent_bpf_program_{runs,seconds}_total move only then.
    #[serde(default)]
    pub bpf_stats: bool,
    /// Program attach types that loaded in the start-up probe.
    #[serde(default)]
    pub attach_types: Vec<AttachMethod>,
    /// How the eBPF programs tell the traced pods' tasks from the others: "cgroup" (by cgroup
    /// v2 id) or "process" (by process id, from each container's cgroup.procs, on nodes
    /// without cgroup v2). Absent when the agent runs without eBPF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ebpf_filter: Option<String>,
}

/// How a probe is attached to the kernel, best first.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub enum AttachMethod {
    /// BPF trampoline on a kernel function entry/exit.
    #[serde(rename = "fentry")]
    Fentry,
    /// BTF-typed tracepoint.
    #[serde(rename = "tp_btf")]
    TpBtf,
    /// Raw tracepoint.
    #[serde(rename = "raw_tracepoint")]
    RawTracepoint,
    /// Classic tracepoint.
    #[serde(rename = "tracepoint")]
    Tracepoint,
    /// cgroup socket-buffer hook.
    #[serde(rename = "cgroup_skb")]
    CgroupSkb,
    /// Dynamic kernel probe (only where nothing else exists).
    #[serde(rename = "kprobe")]
    Kprobe,
}

/// Whether a probe is running on a node.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeState {
    /// Loaded and attached.
    Attached,
    /// No attach method loaded on this kernel; see reason.
    Unavailable,
    /// Not requested by any profile on this node.
    Disabled,
}

/// One probe's attach result on a node.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProbeStatus {
    /// The probe family.
    pub probe: Probe,
    /// Attached, Unavailable or Disabled.
    pub state: ProbeState,
    /// The attach method chosen (for Attached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<AttachMethod>,
    /// The kernel's reason (for Unavailable), for example "fentry: EPERM; tracepoint: ENOENT".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Whether the agent measures a pod.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PodAttachState {
    /// The pod's cgroups were found and are tracked by the probes and collectors.
    Attached,
    /// Not yet: the agent retries (see reason).
    Pending,
    /// The agent cannot measure the pod (see reason).
    Failed,
}

/// Why a pod is pending or failed, as a typed reason.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub enum PodAttachReason {
    /// No container of the pod has a runtime ID yet (not started).
    ContainerNotStarted,
    /// The pod's cgroup does not exist (yet) on the node; retried every interval.
    CgroupNotFound,
    /// The cgroup exists but has no cgroup v2 id, so in-kernel filtering by cgroup is impossible.
    CgroupV2Unavailable,
    /// The tracked-cgroup map of the eBPF programs is full; raise the agent's map size.
    TrackedMapFull,
    /// The pod's series exceed its maxSeriesPerPod budget; some are dropped.
    SeriesBudgetExceeded,
    /// The node's agent has not reported for three heartbeats.
    AgentNotReporting,
    /// The pod's settingsKey names no entry of the NodeTrace's spec.podSettings, so the agent
    /// does not know what to measure; the pod is not traced (the other pods are).
    SettingsNotFound,
}

/// One pod's attach result on a node.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodAttachStatus {
    /// Pod UID.
    pub uid: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Attached, Pending or Failed.
    pub state: PodAttachState,
    /// Why the pod is Pending or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<PodAttachReason>,
    /// Details for humans (paths tried, errno).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
