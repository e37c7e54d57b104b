//! `PodTrace`: which pods of a namespace podtrace measures, and with which profile.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::profile::MonitoringProfileSpec;
use crate::status::{PodAttachReason, ProbeStatus};

/// The CEL check that `$x` is a Kubernetes label key: an optional DNS-subdomain prefix of at
/// most 253 characters and `/`, then a name of at most 63 characters (what the API server
/// checks of a Pod's labels: a selector with another key could never match a pod).
macro_rules! label_key {
    ($x:literal) => {
        concat!(
            $x,
            ".matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$') && (!",
            $x,
            ".contains('/') || ",
            $x,
            ".indexOf('/') <= 253)"
        )
    };
}

/// The CEL check that `$x` is a Kubernetes label value: empty, or at most 63 characters.
macro_rules! label_value {
    ($x:literal) => {
        concat!($x, ".matches('^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$')")
    };
}

/// What [`label_key!`] requires, in words.
macro_rules! label_key_rules {
    () => {
        "an optional DNS subdomain prefix (at most 253 characters) and '/', then a name of at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit (such as app or app.kubernetes.io/name)"
    };
}

/// What [`label_value!`] requires, in words.
macro_rules! label_value_rules {
    () => {
        "empty, or at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
    };
}

/// Most `matchLabels` entries and `matchExpressions` of a selector, and values of one
/// expression. The API server prices CEL rules by the largest input the schema allows; without
/// bounds the label checks above exceed its budget many times over.
const MAX_SELECTOR_TERMS: u64 = 64;

/// Bounds the selector's schema (see [`MAX_SELECTOR_TERMS`]) so that its CEL rules fit the API
/// server's cost budget: label values at most 63 characters, keys at most 317 (253 of prefix,
/// `/`, 63 of name), as Kubernetes allows them on pods.
fn bounded_selector(schema: &mut schemars::Schema) {
    let mut value = serde_json::Value::from(std::mem::take(schema));
    let properties = &mut value["properties"];
    let labels = &mut properties["matchLabels"];
    labels["maxProperties"] = MAX_SELECTOR_TERMS.into();
    labels["additionalProperties"]["maxLength"] = 63.into();
    let expressions = &mut properties["matchExpressions"];
    expressions["maxItems"] = MAX_SELECTOR_TERMS.into();
    let expression = &mut expressions["items"]["properties"];
    expression["key"]["maxLength"] = 317.into();
    expression["values"]["maxItems"] = MAX_SELECTOR_TERMS.into();
    expression["values"]["items"]["maxLength"] = 63.into();
    *schema = value.try_into().expect("a bounded selector schema stays a schema");
}

/// Spec of a PodTrace: the pods to trace (by label selector, within the PodTrace's namespace) and
/// the monitoring profile to trace them with.
#[allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) repeats the keys name/type_/json_path; clippy reads them as duplicates"
)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "podtrace.dev",
    version = "v1alpha1",
    kind = "PodTrace",
    plural = "podtraces",
    shortname = "pt",
    category = "podtrace-all",
    namespaced,
    status = "PodTraceStatus",
    derive = "PartialEq",
    doc = "PodTrace selects pods of its namespace by label and has the podtrace agents on their nodes \
           measure them in the kernel (network, file system, CPU, cgroup limits) with the chosen \
           MonitoringProfile. Its status reports how many pods matched and, per node, which probes \
           attached and why any did not.",
    printcolumn(name = "Profile", type_ = "string", json_path = ".status.effectiveProfile"),
    printcolumn(name = "Matched", type_ = "integer", json_path = ".status.matchedPods"),
    printcolumn(name = "Ready Nodes", type_ = "string", json_path = ".status.readyNodes"),
    printcolumn(name = "Paused", type_ = "boolean", json_path = ".spec.paused", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("!has(self.spec.profileRef) || !has(self.spec.profile)")
        .field_path(".spec.profile")
        .message("set at most one of spec.profileRef and spec.profile (neither picks a preset automatically)")
)]
#[serde(rename_all = "camelCase")]
pub struct PodTraceSpec {
    /// Label selector over the pods of this PodTrace's namespace. Pods that match, are bound to a
    /// node and have not finished are traced. An empty selector ({}) selects every pod of the
    /// namespace.
    #[x_kube(
        validation = Rule::new("!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])")
            .message("selector.matchExpressions[].operator must be one of In, NotIn, Exists, DoesNotExist"),
        validation = Rule::new("!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn'] ? has(e.values) && size(e.values) > 0 : !has(e.values) || size(e.values) == 0)")
            .message("selector.matchExpressions[].values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist"),
        validation = Rule::new(concat!("!has(self.matchLabels) || self.matchLabels.all(k, ", label_key!("k"), ")"))
            .field_path(".matchLabels")
            .message(concat!("selector.matchLabels keys must be label keys: ", label_key_rules!())),
        validation = Rule::new(concat!("!has(self.matchLabels) || self.matchLabels.all(k, ", label_value!("self.matchLabels[k]"), ")"))
            .field_path(".matchLabels")
            .message(concat!("selector.matchLabels values must be label values: ", label_value_rules!())),
        validation = Rule::new(concat!("!has(self.matchExpressions) || self.matchExpressions.all(e, ", label_key!("e.key"), ")"))
            .field_path(".matchExpressions")
            .message(concat!("selector.matchExpressions[].key must be a label key: ", label_key_rules!())),
        validation = Rule::new(concat!("!has(self.matchExpressions) || self.matchExpressions.all(e, !has(e.values) || e.values.all(v, ", label_value!("v"), "))"))
            .field_path(".matchExpressions")
            .message(concat!("selector.matchExpressions[].values must be label values: ", label_value_rules!())),
    )]
    #[schemars(transform = bounded_selector)]
    pub selector: LabelSelector,

    /// Only trace these containers of the selected pods (by container name: a DNS label, as
    /// Kubernetes requires of container names). Empty or absent traces every container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 63)))]
    #[x_kube(validation = Rule::new("self.all(c, c.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))")
        .message("containers must be container names: DNS labels of at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit (such as app or istio-proxy)"))]
    pub containers: Vec<String>,

    /// Name of the cluster-scoped MonitoringProfile to use (for example one of the presets
    /// standard, minimal, intensive, batch, realtime-api, daemon). Mutually exclusive with profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_ref: Option<ProfileRef>,

    /// An inline monitoring profile, for settings used by this PodTrace only. Mutually exclusive
    /// with profileRef. With neither, podtrace picks a preset per pod: daemon for pods owned by a
    /// Deployment, ReplicaSet, StatefulSet or DaemonSet, standard for Jobs and bare pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<MonitoringProfileSpec>,

    /// Stop tracing without deleting the PodTrace: the agents detach from its pods and the
    /// condition Paused becomes True.
    #[serde(default)]
    pub paused: bool,
}

/// A reference to a MonitoringProfile by name.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct ProfileRef {
    /// Name of the MonitoringProfile.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Observed state of a PodTrace, written by the operator.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodTraceStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Number of pods the selector matches (bound to a node, not finished).
    #[serde(default)]
    pub matched_pods: i32,
    /// Nodes whose agent attached to every matched pod, over the nodes with matched pods ("2/3").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_nodes: Option<String>,
    /// Name of the effective profile: the referenced one, "inline", or the automatic choice
    /// ("daemon", "standard", or "daemon+standard" when the pods differ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_profile: Option<String>,
    /// Hash of the effective profile's settings; it changes whenever the settings do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_hash: Option<String>,
    /// Estimated number of series the matched pods produce with the effective profile, summed
    /// from the agents' metric catalog (one process per container, one process name per probe,
    /// every resource with a limit), each pod capped at its maxSeriesPerPod.
    #[serde(default)]
    pub series_estimate: i64,
    /// Per node: how many of the matched pods the agent has attached to, and why any are not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeSummary>,
    /// Ready, Degraded and Paused, as standard Kubernetes conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// One node's part of a PodTrace, rolled up from that node's NodeTrace status.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeSummary {
    /// Node name.
    pub node: String,
    /// Matched pods on this node.
    pub pods: i32,
    /// Pods the agent has attached to.
    pub attached: i32,
    /// Pods the agent has not attached to yet (for example, cgroup not created yet).
    pub pending: i32,
    /// Pods the agent could not attach to.
    pub failed: i32,
    /// How each probe attached on this node (method, or the reason it is unavailable).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<ProbeStatus>,
    /// The distinct reasons of pending and failed pods on this node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<PodAttachReason>,
}
