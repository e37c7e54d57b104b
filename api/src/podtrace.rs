//! `PodTrace`: which pods of a namespace podtrace measures, and with which profile.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::profile::MonitoringProfileSpec;
use crate::status::{AttachMethod, PodAttachReason, ProbeState, ProbeStatus, from_name, name_of};

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

/// The CEL rules of a label selector (`selector`, `namespaceSelector`), each with its
/// message naming the field: `$f` is the field's name.
macro_rules! operators_rule {
    () => {
        "!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])"
    };
}
macro_rules! operators_message {
    ($f:literal) => {
        concat!($f, ".matchExpressions[].operator must be one of In, NotIn, Exists, DoesNotExist")
    };
}
macro_rules! values_rule {
    () => {
        "!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn'] ? has(e.values) && size(e.values) > 0 : !has(e.values) || size(e.values) == 0)"
    };
}
macro_rules! values_message {
    ($f:literal) => {
        concat!(
            $f,
            ".matchExpressions[].values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist"
        )
    };
}
macro_rules! match_label_keys_rule {
    () => {
        concat!("!has(self.matchLabels) || self.matchLabels.all(k, ", label_key!("k"), ")")
    };
}
macro_rules! match_label_keys_message {
    ($f:literal) => {
        concat!($f, ".matchLabels keys must be label keys: ", label_key_rules!())
    };
}
macro_rules! match_label_values_rule {
    () => {
        concat!(
            "!has(self.matchLabels) || self.matchLabels.all(k, ",
            label_value!("self.matchLabels[k]"),
            ")"
        )
    };
}
macro_rules! match_label_values_message {
    ($f:literal) => {
        concat!($f, ".matchLabels values must be label values: ", label_value_rules!())
    };
}
macro_rules! expression_keys_rule {
    () => {
        concat!(
            "!has(self.matchExpressions) || self.matchExpressions.all(e, ",
            label_key!("e.key"),
            ")"
        )
    };
}
macro_rules! expression_keys_message {
    ($f:literal) => {
        concat!($f, ".matchExpressions[].key must be a label key: ", label_key_rules!())
    };
}
macro_rules! expression_values_rule {
    () => {
        concat!(
            "!has(self.matchExpressions) || self.matchExpressions.all(e, !has(e.values) || e.values.all(v, ",
            label_value!("v"),
            "))"
        )
    };
}
macro_rules! expression_values_message {
    ($f:literal) => {
        concat!($f, ".matchExpressions[].values must be label values: ", label_value_rules!())
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

/// Spec of a PodTrace: the pods to trace (by label selector, within the PodTrace's namespace or,
/// with a namespace selector, in the namespaces that consent), for how long, and the monitoring
/// profile to trace them with.
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
           MonitoringProfile, for as long as spec.duration says (or until deleted), and, from the \
           operator's own namespace, in other namespaces that consent (spec.namespaceSelector). \
           Its status reports how many pods matched and, per node, which probes attached and why \
           any did not.",
    printcolumn(name = "Profile", type_ = "string", json_path = ".status.effectiveProfile"),
    printcolumn(name = "Matched", type_ = "integer", json_path = ".status.matchedPods"),
    printcolumn(name = "Ready Nodes", type_ = "string", json_path = ".status.readyNodes"),
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(name = "Paused", type_ = "boolean", json_path = ".spec.paused", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("!has(self.spec.profileRef) || !has(self.spec.profile)")
        .field_path(".spec.profile")
        .message("set at most one of spec.profileRef and spec.profile (neither picks a preset automatically)")
)]
#[serde(rename_all = "camelCase")]
pub struct PodTraceSpec {
    /// Label selector over the pods of this PodTrace's namespace (with namespaceSelector: of
    /// every namespace it selects). Pods that match, are bound to a node and have not finished
    /// are traced. An empty selector ({}) selects every pod of the namespace.
    #[x_kube(
        validation = Rule::new(operators_rule!()).message(operators_message!("selector")),
        validation = Rule::new(values_rule!()).message(values_message!("selector")),
        validation = Rule::new(match_label_keys_rule!()).field_path(".matchLabels").message(match_label_keys_message!("selector")),
        validation = Rule::new(match_label_values_rule!()).field_path(".matchLabels").message(match_label_values_message!("selector")),
        validation = Rule::new(expression_keys_rule!()).field_path(".matchExpressions").message(expression_keys_message!("selector")),
        validation = Rule::new(expression_values_rule!()).field_path(".matchExpressions").message(expression_values_message!("selector")),
    )]
    #[schemars(transform = bounded_selector)]
    pub selector: LabelSelector,

    /// Trace pods of other namespaces: selector then applies in every namespace whose labels
    /// match this namespace selector and that consents by carrying the label
    /// podtrace.dev/allow-tracing: "true" (this PodTrace's own namespace too, only if it matches
    /// and consents). Only PodTraces in the operator's own namespace, or in a
    /// namespace named by the operator's --cluster-trace-namespaces flag, may set it; anywhere
    /// else the PodTrace traces nothing and its condition Ready is False with reason
    /// NamespaceSelectorNotAllowed. Removing a namespace's consent label stops the tracing of
    /// its pods. An empty selector ({}) selects every consenting namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = Rule::new(operators_rule!()).message(operators_message!("namespaceSelector")),
        validation = Rule::new(values_rule!()).message(values_message!("namespaceSelector")),
        validation = Rule::new(match_label_keys_rule!()).field_path(".matchLabels").message(match_label_keys_message!("namespaceSelector")),
        validation = Rule::new(match_label_values_rule!()).field_path(".matchLabels").message(match_label_values_message!("namespaceSelector")),
        validation = Rule::new(expression_keys_rule!()).field_path(".matchExpressions").message(expression_keys_message!("namespaceSelector")),
        validation = Rule::new(expression_values_rule!()).field_path(".matchExpressions").message(expression_values_message!("namespaceSelector")),
    )]
    #[schemars(transform = bounded_selector)]
    pub namespace_selector: Option<LabelSelector>,

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

    /// Trace for this long, then stop (for example "15m", "2h"; at least 1s, at most 8760h).
    /// The countdown starts when the operator first sees the value (status.countdown), and at
    /// status.expiresAt the agents detach from the pods as if paused, and the condition Expired
    /// becomes True; the PodTrace and its results stay. Setting another value starts a new
    /// countdown from that moment (to extend a trace); removing it traces again, without end.
    /// The countdown runs on while the PodTrace is paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(
        "self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1s') && duration(self) <= duration('8760h')"
    ).message("duration must be a duration between 1s and 8760h, such as \"15m\" or \"2h\""))]
    pub duration: Option<String>,
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
    /// Per node, one line each: how many of the matched pods the agent has attached to, how
    /// each requested probe attached, and why any pod is not attached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10000))]
    pub nodes: Vec<NodeSummary>,
    /// The countdown of spec.duration: the value counted and when the operator first saw it.
    /// Absent without spec.duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub countdown: Option<Countdown>,
    /// When tracing stops (or stopped) because of spec.duration: countdown.startedAt plus the
    /// duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// Ready, Degraded and Paused, and Expired while spec.duration is set, as standard
    /// Kubernetes conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// The countdown of a PodTrace's spec.duration.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Countdown {
    /// The spec.duration value counted: another value starts a new countdown.
    #[schemars(length(max = 32))]
    pub duration: String,
    /// When the operator first saw that value.
    pub started_at: Time,
}

/// One node's part of a PodTrace, rolled up from that node's NodeTrace status.
///
/// In the PodTrace it is one line of text, not an object (see its `Display`):
///
/// ```text
/// node-7 pods=3 attached=2 pending=1 failed=0 probes=tcpRtt:tp_btf,dns:cgroup_skb,fsBytes:Unavailable reasons=CgroupNotFound
/// ```
///
/// Why a line: every write of a PodTrace, the user's edits included, costs the API server work
/// per JSON value of the whole object, and a PodTrace over 100 nodes carried about 2,700 of
/// them as objects (a node's probes with their states and methods): about 80 ms of API-server
/// CPU per write, against under 10 ms as one line per node (docs/benchmarks.md). A status
/// written by an earlier operator, with objects, still reads.
#[derive(Clone, Debug, Default, PartialEq)]
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
    /// How each requested probe attached on this node: its method, or Unavailable (the
    /// kernel's reason is in the node's NodeTrace status.probes).
    pub probes: Vec<ProbeStatus>,
    /// The distinct reasons of pending and failed pods on this node.
    pub reasons: Vec<PodAttachReason>,
}

impl std::fmt::Display for NodeSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} pods={} attached={} pending={} failed={}",
            self.node, self.pods, self.attached, self.pending, self.failed
        )?;
        for (i, p) in self.probes.iter().enumerate() {
            let how = match (p.state, p.method) {
                (ProbeState::Attached, Some(method)) => name_of(&method),
                (state, _) => name_of(&state),
            };
            write!(f, "{}{}:{how}", if i == 0 { " probes=" } else { "," }, name_of(&p.probe))?;
        }
        for (i, r) in self.reasons.iter().enumerate() {
            write!(f, "{}{}", if i == 0 { " reasons=" } else { "," }, name_of(r))?;
        }
        Ok(())
    }
}

/// A node summary line that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("node summary {line:?}: {problem}")]
pub struct SummaryParseError {
    line: String,
    problem: String,
}

impl std::str::FromStr for NodeSummary {
    type Err = SummaryParseError;

    fn from_str(line: &str) -> Result<Self, SummaryParseError> {
        let err = |problem: String| SummaryParseError { line: line.to_owned(), problem };
        let mut tokens = line.split(' ').filter(|t| !t.is_empty());
        let node = tokens.next().ok_or_else(|| err("empty".into()))?;
        let mut summary = NodeSummary { node: node.to_owned(), ..Default::default() };
        for token in tokens {
            let (key, value) =
                token.split_once('=').ok_or_else(|| err(format!("token without '=': {token}")))?;
            let count = || value.parse::<i32>().map_err(|_| err(format!("{key}= is not a count")));
            let list = || value.split(',').filter(|v| !v.is_empty());
            match key {
                "pods" => summary.pods = count()?,
                "attached" => summary.attached = count()?,
                "pending" => summary.pending = count()?,
                "failed" => summary.failed = count()?,
                "probes" => {
                    for item in list() {
                        let unknown = || err(format!("unknown probe state {item:?}"));
                        let (probe, how) = item.split_once(':').ok_or_else(unknown)?;
                        let probe = from_name(probe).ok_or_else(unknown)?;
                        let (state, method) = match from_name::<AttachMethod>(how) {
                            Some(method) => (ProbeState::Attached, Some(method)),
                            None => (from_name(how).ok_or_else(unknown)?, None),
                        };
                        summary.probes.push(ProbeStatus { probe, state, method, reason: None });
                    }
                }
                "reasons" => {
                    summary.reasons = list()
                        .map(|r| from_name(r).ok_or_else(|| err(format!("unknown reason {r:?}"))))
                        .collect::<Result<_, _>>()?
                }
                // A newer operator's field: read the rest.
                _ => {}
            }
        }
        Ok(summary)
    }
}

/// As its line (`Display`).
impl Serialize for NodeSummary {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The object form an earlier operator wrote, still read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeSummaryObject {
    node: String,
    pods: i32,
    attached: i32,
    pending: i32,
    failed: i32,
    #[serde(default)]
    probes: Vec<ProbeStatus>,
    #[serde(default)]
    reasons: Vec<PodAttachReason>,
}

/// From its line, or from the object an earlier operator wrote.
impl<'de> Deserialize<'de> for NodeSummary {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either<'a> {
            Line(std::borrow::Cow<'a, str>),
            Object(NodeSummaryObject),
        }
        match Either::deserialize(d)? {
            Either::Line(line) => line.parse().map_err(serde::de::Error::custom),
            Either::Object(o) => Ok(NodeSummary {
                node: o.node,
                pods: o.pods,
                attached: o.attached,
                pending: o.pending,
                failed: o.failed,
                probes: o.probes,
                reasons: o.reasons,
            }),
        }
    }
}

/// A string that documents the line for `kubectl explain`.
impl JsonSchema for NodeSummary {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "NodeSummary".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "One node, one line: `<node> pods=<matched> attached=<n> pending=<n> failed=<n> \
        [probes=<probe>:<attach method or Unavailable>,…] [reasons=<reason>,…]`: the matched pods on \
        the node, how many the agent attached, has not attached yet and could not attach, how each \
        requested probe attached (the kernel's reason for Unavailable is in the node's NodeTrace \
        status.probes) and the distinct reasons of the pending and failed pods. One line per node \
        instead of an object keeps each write of a PodTrace cheap for the API server."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Probe;

    fn summary() -> NodeSummary {
        NodeSummary {
            node: "node-7".into(),
            pods: 3,
            attached: 2,
            pending: 1,
            failed: 0,
            probes: vec![
                ProbeStatus {
                    probe: Probe::TcpRtt,
                    state: ProbeState::Attached,
                    method: Some(AttachMethod::TpBtf),
                    reason: None,
                },
                ProbeStatus {
                    probe: Probe::FsBytes,
                    state: ProbeState::Unavailable,
                    method: None,
                    reason: None,
                },
            ],
            reasons: vec![PodAttachReason::CgroupNotFound, PodAttachReason::TrackedMapFull],
        }
    }

    #[test]
    fn a_node_summary_is_one_line_and_reads_back_whole() {
        let json = serde_json::to_value(summary()).unwrap();
        assert_eq!(
            json,
            "node-7 pods=3 attached=2 pending=1 failed=0 probes=tcpRtt:tp_btf,fsBytes:Unavailable \
             reasons=CgroupNotFound,TrackedMapFull"
        );
        assert_eq!(serde_json::from_value::<NodeSummary>(json).unwrap(), summary());
        let bare = NodeSummary { node: "n".into(), pods: 1, ..Default::default() };
        assert_eq!(bare.to_string(), "n pods=1 attached=0 pending=0 failed=0");
        assert_eq!(bare.to_string().parse::<NodeSummary>().unwrap(), bare);
    }

    #[test]
    fn the_object_an_earlier_operator_wrote_still_reads() {
        let object = serde_json::json!({"node": "node-7", "pods": 3, "attached": 2, "pending": 1,
            "failed": 0, "probes": [{"probe": "tcpRtt", "state": "Attached", "method": "tp_btf"},
            {"probe": "fsBytes", "state": "Unavailable", "reason": "EPERM"}],
            "reasons": ["CgroupNotFound", "TrackedMapFull"]});
        let read: NodeSummary = serde_json::from_value(object).unwrap();
        assert_eq!(read.probes[1].reason.as_deref(), Some("EPERM"));
        assert_eq!(NodeSummary { probes: summary().probes, ..read }, summary());
    }

    #[test]
    fn a_broken_line_is_an_error_that_quotes_it() {
        for (line, problem) in [
            ("n pods=x", "pods= is not a count"),
            ("n pods", "token without '=': pods"),
            ("n probes=tcpRtt:teleport", "unknown probe state \"tcpRtt:teleport\""),
            ("n reasons=Sunspots", "unknown reason \"Sunspots\""),
        ] {
            let e = line.parse::<NodeSummary>().unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("node summary {line:?}: ")) && e.ends_with(problem),
                "{e}"
            );
        }
    }
}
