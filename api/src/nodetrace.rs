//! `NodeTrace`: the configuration of one node's agent (spec, by the operator) and what that agent
//! achieved (status, by the agent). One object per node, so hundreds of agents never write the
//! same object; the operator rolls the statuses up into each PodTrace.
//!
//! Two spec formats; the operator writes the second only to a node whose agent reports that it
//! reads it (`status.specFormat: 2`), so an agent of an older version never gets a spec it
//! cannot use ([`SpecFormat`]):
//!
//! ```text
//!  format 2 (shared):
//!  spec.pods[]   "ns/name uid=… owner=ReplicaSet by=ns/pt …" ──by=──► PodTraceProfile ns/pt
//!                                                                       └─► MonitoringProfile
//!  format 1 (settings per node; what earlier agents read):
//!  spec.settings         node-wide merge (which probes the agent loads)
//!  spec.podSettings[]    {key, settings}: each distinct per-pod merge once, key = its hash
//!  spec.pods[]           "ns/name uid=… settings=<key> …" ──refers to──► podSettings[key]
//! ```
//!
//! In format 2 a NodeTrace holds no settings at all: a profile edit writes one PodTraceProfile
//! (or, for a MonitoringProfile, nothing) instead of every NodeTrace its pods are on. Pods are
//! one line of text each ([`TracedPod`]'s `Display`), not objects: the API server's cost per
//! write follows the number of JSON values, and pods still change one node at a time.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::merge::merge_profiles;
use crate::podtraceprofile::{SettingsError, SharedSettings};
use crate::profile::{MonitoringProfileSpec, without_cel_rules};
use crate::status::{
    AttachMethod, PodAttachReason, PodAttachState, ProbeStatus, from_name, name_of,
};

/// Spec of a NodeTrace, owned by the operator: every traced pod on the node with its containers
/// and the PodTraces that select it (format 2), or with its merged settings (format 1). Named
/// after the node.
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
    category = "podtrace-all",
    status = "NodeTraceStatus",
    derive = "PartialEq",
    doc = "NodeTrace is the podtrace agent configuration of one node, named after the node. The \
           operator writes its spec (the traced pods on the node and the PodTraces that select each; \
           their settings are in the PodTraceProfiles of those PodTraces); the node's agent writes \
           its status (kernel features, how each probe attached, per-pod results, heartbeat). Users \
           read it; they do not edit it.",
    printcolumn(name = "Pods", type_ = "integer", json_path = ".status.trackedPods"),
    printcolumn(name = "Attached", type_ = "integer", json_path = ".status.attachedPods"),
    printcolumn(name = "Series", type_ = "integer", json_path = ".status.series", priority = 1),
    printcolumn(name = "Heartbeat", type_ = "date", json_path = ".status.heartbeat"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct NodeTraceSpec {
    /// Format 1 only (absent in format 2): the node-wide merge of every traced pod's settings,
    /// the union of collectors and probes, the smallest interval and the largest history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = without_cel_rules)]
    pub settings: Option<MonitoringProfileSpec>,
    /// Format 1 only (absent in format 2): the distinct merged settings of the pods of this
    /// node, sorted by key; a pod line names its entry with settings=.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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
}

impl NodeTraceSpec {
    /// Every PodTrace that selects a pod on this node (the union of the pods' `by=`).
    ///
    /// Derived rather than a field of its own: a list of 100 PodTraces cost the API server
    /// about as much per write as the 100 pod lines.
    pub fn requested_by(&self) -> std::collections::BTreeSet<&PodTraceRef> {
        self.pods.iter().flat_map(|p| &p.requested_by).collect()
    }

    /// The settings of `pod`: in format 1 the entry of `podSettings` its `settings=` names; in
    /// format 2 the merge of what the PodTraceProfile of each PodTrace in its `by=` gives a pod
    /// of its owner kind, MonitoringProfiles looked up in `shared`.
    pub fn settings_for(
        &self,
        pod: &TracedPod,
        shared: &SharedSettings,
    ) -> Result<MonitoringProfileSpec, SettingsError> {
        if let Some(key) = &pod.settings_key {
            return self
                .pod_settings
                .iter()
                .find(|s| s.key == *key)
                .map(|s| s.settings.clone())
                .ok_or_else(|| SettingsError::NotInPodSettings { key: key.clone() });
        }
        let mut each = Vec::with_capacity(pod.requested_by.len());
        for podtrace in &pod.requested_by {
            let ptp = shared.podtrace_profiles.get(podtrace).ok_or_else(|| {
                SettingsError::PodTraceProfileMissing { podtrace: podtrace.clone() }
            })?;
            let choice = ptp.choice_for(pod.owner_kind.as_deref()).ok_or_else(|| {
                SettingsError::NoChoice {
                    podtrace: podtrace.clone(),
                    owner_kind: pod.owner_kind.clone(),
                }
            })?;
            let settings = match (&choice.profile_ref, &choice.profile) {
                (Some(r), _) => shared.monitoring_profiles.get(&r.name).ok_or_else(|| {
                    SettingsError::MonitoringProfileMissing {
                        name: r.name.clone(),
                        podtrace: podtrace.clone(),
                    }
                })?,
                (None, Some(inline)) => inline,
                // The schema requires one of the two; an entry with neither applies nothing.
                (None, None) => {
                    return Err(SettingsError::NoChoice {
                        podtrace: podtrace.clone(),
                        owner_kind: pod.owner_kind.clone(),
                    });
                }
            };
            each.push(settings);
        }
        merge_profiles(each).ok_or(SettingsError::NoPodTrace)
    }

    /// The format this spec is written in: 1 when a pod line names a settings key or the spec
    /// carries settings, 2 otherwise.
    pub fn format(&self) -> SpecFormat {
        let legacy = self.settings.is_some()
            || !self.pod_settings.is_empty()
            || self.pods.iter().any(|p| p.settings_key.is_some());
        if legacy { SpecFormat::PodSettings } else { SpecFormat::Shared }
    }
}

/// The formats of a NodeTrace spec. An agent reports the newest it reads in
/// `status.specFormat`; the operator writes a node's NodeTrace in that format, and in format 1
/// while the agent has not reported one (agents before format 2 do not write the field), so a
/// rolling upgrade never hands an agent a spec it cannot read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpecFormat {
    /// Format 1: settings in the NodeTrace (`settings`, `podSettings`, `settings=` per pod).
    PodSettings = 1,
    /// Format 2: pods name their PodTraces (`by=`), whose PodTraceProfiles hold the settings.
    Shared = 2,
}

impl SpecFormat {
    /// The newest format this version writes and reads.
    pub const NEWEST: SpecFormat = SpecFormat::Shared;

    /// The format an agent that reported `status.specFormat` reads (1 when it reported none).
    pub fn read_by(reported: Option<i32>) -> SpecFormat {
        match reported {
            Some(n) if n >= SpecFormat::Shared as i32 => SpecFormat::Shared,
            _ => SpecFormat::PodSettings,
        }
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

/// A pod the agent of the node traces.
///
/// In the NodeTrace it is one line of text, not a nested object (see [`TracedPod`]'s `Display`):
///
/// ```text
/// shop/web-7d9c5-x2x4z uid=6f1c0b9e-… qos=Burstable owner=ReplicaSet by=shop/web container:app=containerd://4f2a… label:app=web
/// ```
///
/// (Format 1 lines carry `settings=<key>` and `profiles=<names>` instead of `owner=`.)
///
/// Why a line: the API server's work per write grows with the number of JSON values in the
/// object (decoding, defaulting, pruning, schema validation, managed fields, encoding, each over
/// every value), and one PodTrace change rewrites the NodeTrace of every node its pods run on.
/// Measured on the e2e API server (`e2e/scripts/control-plane.sh`), one write of a 100-pod
/// NodeTrace cost 41.5 ms of API-server CPU with the pods as objects (about 17 values each),
/// 21.5 ms with slimmer objects and 8 ms with one line per pod: the difference between a PodTrace
/// change reaching 100 nodes in about 2 s or in under 1 s on a 2-core control plane.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TracedPod {
    /// Pod UID; the agent finds the pod's cgroup by it.
    pub uid: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// QoS class of the pod (Guaranteed, Burstable or BestEffort); it decides the cgroup path.
    pub qos_class: Option<String>,
    /// Traced containers with their runtime IDs.
    pub containers: Vec<TracedContainer>,
    /// Pod labels copied onto the pod's series (only the keys of the profile's allow-list).
    pub labels: BTreeMap<String, String>,
    /// Kind of the pod's controlling owner (for example ReplicaSet): which entry of a
    /// PodTraceProfile applies to the pod.
    pub owner_kind: Option<String>,
    /// Format 1 only: names of the effective profiles merged for this pod.
    pub profiles: Vec<String>,
    /// Format 1 only: the key of this pod's entry in `spec.podSettings`, the merge of the
    /// effective profiles of every PodTrace that selects it.
    pub settings_key: Option<String>,
    /// The PodTraces that select this pod.
    pub requested_by: Vec<PodTraceRef>,
}

/// A traced container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TracedContainer {
    /// Container name.
    pub name: String,
    /// Runtime ID as the kubelet reports it (for example "containerd://4f2a…"); absent while the
    /// container has not started.
    pub runtime_id: Option<String>,
}

/// A PodTrace, by namespace and name; `namespace/name` in a pod line's `by=`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodTraceRef {
    /// Namespace of the PodTrace.
    pub namespace: String,
    /// Name of the PodTrace.
    pub name: String,
}

/// A [`TracedPod`], [`PodTraceRef`] or [`PodResult`] line that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what} {line:?}: {problem}")]
pub struct ParseError {
    what: &'static str,
    line: String,
    problem: String,
}

impl ParseError {
    fn new(what: &'static str, line: &str, problem: impl Into<String>) -> Self {
        Self { what, line: line.to_owned(), problem: problem.into() }
    }
}

/// The tokens of a pod line; none contains a space, `=` separates a key from its value, and
/// the names and values it carries cannot hold spaces or commas (Kubernetes object names,
/// label keys and values, runtime IDs, hex keys).
impl std::fmt::Display for TracedPod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} uid={}", self.namespace, self.name, self.uid)?;
        if let Some(key) = &self.settings_key {
            write!(f, " settings={key}")?;
        }
        if let Some(qos) = &self.qos_class {
            write!(f, " qos={qos}")?;
        }
        if let Some(kind) = &self.owner_kind {
            write!(f, " owner={kind}")?;
        }
        if !self.profiles.is_empty() {
            write!(f, " profiles={}", self.profiles.join(","))?;
        }
        if !self.requested_by.is_empty() {
            f.write_str(" by=")?;
            for (i, r) in self.requested_by.iter().enumerate() {
                write!(f, "{}{r}", if i == 0 { "" } else { "," })?;
            }
        }
        for c in &self.containers {
            match &c.runtime_id {
                Some(id) => write!(f, " container:{}={id}", c.name)?,
                None => write!(f, " container:{}", c.name)?,
            }
        }
        for (k, v) in &self.labels {
            write!(f, " label:{k}={v}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for TracedPod {
    type Err = ParseError;

    fn from_str(line: &str) -> Result<Self, ParseError> {
        let err = |problem: String| ParseError::new("pod", line, problem);
        let mut tokens = line.split(' ').filter(|t| !t.is_empty());
        let first = tokens.next().ok_or_else(|| err("empty".into()))?;
        let (namespace, name) =
            split_ref(first).ok_or_else(|| err("does not start with namespace/name".into()))?;
        let mut pod = TracedPod { namespace, name, ..Default::default() };
        for token in tokens {
            if let Some(rest) = token.strip_prefix("container:") {
                let (name, id) = match rest.split_once('=') {
                    Some((n, id)) => (n, Some(id.to_owned())),
                    None => (rest, None),
                };
                pod.containers.push(TracedContainer { name: name.to_owned(), runtime_id: id });
            } else if let Some(rest) = token.strip_prefix("label:") {
                let (k, v) = rest
                    .split_once('=')
                    .ok_or_else(|| err(format!("label without '=': {token}")))?;
                pod.labels.insert(k.to_owned(), v.to_owned());
            } else {
                let (key, value) = token
                    .split_once('=')
                    .ok_or_else(|| err(format!("token without '=': {token}")))?;
                let list = || value.split(',').filter(|v| !v.is_empty());
                match key {
                    "uid" => pod.uid = value.to_owned(),
                    "settings" => pod.settings_key = Some(value.to_owned()),
                    "qos" => pod.qos_class = Some(value.to_owned()),
                    "owner" => pod.owner_kind = Some(value.to_owned()),
                    "profiles" => pod.profiles = list().map(str::to_owned).collect(),
                    "by" => {
                        pod.requested_by = list()
                            .map(|r| r.parse::<PodTraceRef>().map_err(|e| err(e.to_string())))
                            .collect::<Result<_, _>>()?
                    }
                    // A newer operator's field: an older agent reads the rest of the line.
                    _ => {}
                }
            }
        }
        if pod.uid.is_empty() {
            return Err(err("uid= is required".into()));
        }
        Ok(pod)
    }
}

fn split_ref(s: &str) -> Option<(String, String)> {
    let (ns, name) = s.split_once('/')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .then(|| (ns.to_owned(), name.to_owned()))
}

impl std::fmt::Display for PodTraceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl std::str::FromStr for PodTraceRef {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let (namespace, name) =
            split_ref(s).ok_or_else(|| ParseError::new("PodTrace", s, "is not namespace/name"))?;
        Ok(PodTraceRef { namespace, name })
    }
}

/// As its line (`Display`).
impl Serialize for TracedPod {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// From its line (`FromStr`).
impl<'de> Deserialize<'de> for TracedPod {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let line = std::borrow::Cow::<'de, str>::deserialize(d)?;
        line.parse().map_err(serde::de::Error::custom)
    }
}

/// A string that documents the line for `kubectl explain`. The pattern lets the API server
/// refuse a hand-edited line that an agent could not read, naming the field (`spec.pods[3]:
/// … should match …`), instead of the agent failing to decode the whole NodeTrace.
impl JsonSchema for TracedPod {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TracedPod".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[^ /]+/[^ /]+ uid=[^ ]+( [^ ]+)*$",
            "description": "A traced pod, one line: `<namespace>/<name> uid=<uid> [qos=<QoS class>] \
        [owner=<owner kind>] [by=<namespace>/<PodTrace>,…] [container:<name>[=<runtime ID>]]… \
        [label:<key>=<value>]…`. The pod's settings are the merge of what the PodTraceProfile of \
        each PodTrace in by= gives a pod of its owner kind (format 2); a line of format 1 has \
        settings=<key> naming an entry of spec.podSettings instead. The runtime ID is absent while \
        the container has not started; labels are those of the profiles' allow-lists. One line per \
        pod instead of an object keeps each write of a NodeTrace cheap for the API server."
        })
    }
}
/// As its `namespace/name`: what the operator's fingerprints of the requesters hash (a
/// PodTraceRef is never a JSON field of its own; in a NodeTrace it is part of a pod line).
impl Serialize for PodTraceRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Observed state of a NodeTrace, written by the node's agent (field manager podtrace-agent).
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeTraceStatus {
    /// The newest spec format the agent reads (2: pods name their PodTraces, whose
    /// PodTraceProfiles hold the settings). Absent: 1, settings in the NodeTrace. The operator
    /// writes each node's spec in the format its agent reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_format: Option<i32>,
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
    /// Per traced pod: attached, pending or failed, with the reason. Written by agents whose
    /// NodeTrace is in spec format 1 (podResults with format 2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<PodAttachStatus>,
    /// The same as pods, one line per pod: written instead of pods by agents whose NodeTrace is
    /// in spec format 2 (an operator writes that format only if it reads this field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2048))]
    pub pod_results: Vec<PodResult>,
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

impl NodeTraceStatus {
    /// Every pod's result, from whichever list the agent wrote (`pods` or `podResults`).
    pub fn attach_results(&self) -> impl Iterator<Item = &PodAttachStatus> {
        self.pods.iter().chain(self.pod_results.iter().map(|r| &r.0))
    }

    /// The status as written with a spec of `format`: the pod results as objects (`pods`) for
    /// format 1, which every operator reads, or as lines (`podResults`) for format 2, which
    /// only an operator that writes format 2 does.
    ///
    /// Why lines: every write of a NodeTrace, the operator's spec writes included, costs the
    /// API server work per JSON value of the whole object, and 100 pod results as objects
    /// (4 to 6 values each) doubled the cost of a 100-pod NodeTrace write (about 24 ms of
    /// API-server CPU against 12 without them, measured on the e2e control plane).
    pub fn for_format(mut self, format: SpecFormat) -> Self {
        let all: Vec<PodAttachStatus> = std::mem::take(&mut self.pods)
            .into_iter()
            .chain(std::mem::take(&mut self.pod_results).into_iter().map(|r| r.0))
            .collect();
        match format {
            SpecFormat::PodSettings => self.pods = all,
            SpecFormat::Shared => self.pod_results = all.into_iter().map(PodResult).collect(),
        }
        self
    }
}

/// A pod's result as one line of `status.podResults`:
///
/// ```text
/// shop/web-7d9c5 uid=6f1c0b9e-… Pending reason=CgroupNotFound message=no cgroup at /kubepods…; retrying
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodResult(pub PodAttachStatus);

impl std::fmt::Display for PodResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.0;
        write!(f, "{}/{} uid={} {}", p.namespace, p.name, p.uid, name_of(&p.state))?;
        if let Some(reason) = &p.reason {
            write!(f, " reason={}", name_of(reason))?;
        }
        if let Some(message) = &p.message {
            // Last: the message is free text and may hold spaces. A line break would end the
            // line (and the schema's pattern refuses it): a space instead.
            write!(f, " message={}", message.replace(['\n', '\r'], " "))?;
        }
        Ok(())
    }
}

impl std::str::FromStr for PodResult {
    type Err = ParseError;

    fn from_str(line: &str) -> Result<Self, ParseError> {
        let err = |problem: String| ParseError::new("pod result", line, problem);
        let (head, message) = match line.split_once(" message=") {
            Some((head, message)) => (head, Some(message.to_owned())),
            None => (line, None),
        };
        let mut tokens = head.split(' ').filter(|t| !t.is_empty());
        let first = tokens.next().ok_or_else(|| err("empty".into()))?;
        let (namespace, name) =
            split_ref(first).ok_or_else(|| err("does not start with namespace/name".into()))?;
        let uid = tokens
            .next()
            .and_then(|t| t.strip_prefix("uid="))
            .ok_or_else(|| err("uid= must follow the name".into()))?
            .to_owned();
        let state = tokens.next().and_then(from_name).ok_or_else(|| {
            err("the state (Attached, Pending or Failed) must follow uid=".into())
        })?;
        let mut reason = None;
        for token in tokens {
            // Other keys are a newer agent's fields: read the rest.
            if let Some(("reason", r)) = token.split_once('=') {
                reason = Some(from_name(r).ok_or_else(|| err(format!("unknown reason {r:?}")))?);
            }
        }
        Ok(PodResult(PodAttachStatus { uid, namespace, name, state, reason, message }))
    }
}

/// As its line.
impl Serialize for PodResult {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// From its line.
impl<'de> Deserialize<'de> for PodResult {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let line = std::borrow::Cow::<'de, str>::deserialize(d)?;
        line.parse().map_err(serde::de::Error::custom)
    }
}

/// A string that documents the line for `kubectl explain`. The pattern lets the API server
/// refuse a line the operator could not read (as for [`TracedPod`]), instead of the operator
/// failing to decode the whole NodeTrace.
impl JsonSchema for PodResult {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PodResult".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[^ /]+/[^ /]+ uid=[^ ]+ (Attached|Pending|Failed)( .*)?$",
            "description": "A traced pod's result, one line: `<namespace>/<name> uid=<uid> <Attached|Pending|Failed> \
        [reason=<reason>] [message=<details, to the end of the line>]`. One line per pod instead of \
        an object keeps each write of a NodeTrace cheap for the API server."
        })
    }
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
    /// The attach methods of the eBPF programs attached on this node now: the distinct
    /// methods of the Attached probes in status.probes (empty while no probe is attached).
    #[serde(default)]
    pub attach_types: Vec<AttachMethod>,
    /// How the eBPF programs tell the traced pods' tasks from the others: "cgroup" (by cgroup
    /// v2 id) or "process" (by process id, from each container's cgroup.procs, on nodes
    /// without cgroup v2). Absent when the agent runs without eBPF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ebpf_filter: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::podtrace::ProfileRef;
    use crate::podtraceprofile::{PodTraceProfileSpec, ProfileChoice};
    use crate::presets::Preset;
    use proptest::prelude::*;

    fn by(names: &[&str]) -> Vec<PodTraceRef> {
        names.iter().map(|n| PodTraceRef { namespace: "shop".into(), name: (*n).into() }).collect()
    }

    /// A pod of format 2: it names its PodTraces and its owner kind.
    fn web() -> TracedPod {
        TracedPod {
            uid: "6f1c0b9e-0000-4000-8000-000000000001".into(),
            namespace: "shop".into(),
            name: "web-7d9c5-x2x4z".into(),
            qos_class: Some("Burstable".into()),
            containers: vec![
                TracedContainer {
                    name: "app".into(),
                    runtime_id: Some("containerd://4f2a".into()),
                },
                TracedContainer { name: "init-db".into(), runtime_id: None },
            ],
            labels: [("app.kubernetes.io/name".into(), "web".into()), ("tier".into(), "".into())]
                .into(),
            owner_kind: Some("ReplicaSet".into()),
            profiles: vec![],
            settings_key: None,
            requested_by: by(&["web", "all"]),
        }
    }

    #[test]
    fn a_pod_is_one_line_in_json_and_reads_back_whole() {
        let json = serde_json::to_value(web()).unwrap();
        assert_eq!(
            json,
            "shop/web-7d9c5-x2x4z uid=6f1c0b9e-0000-4000-8000-000000000001 qos=Burstable \
             owner=ReplicaSet by=shop/web,shop/all \
             container:app=containerd://4f2a container:init-db \
             label:app.kubernetes.io/name=web label:tier="
        );
        assert_eq!(serde_json::from_value::<TracedPod>(json).unwrap(), web());
        let minimal = TracedPod {
            uid: "u".into(),
            namespace: "n".into(),
            name: "p".into(),
            ..Default::default()
        };
        assert_eq!(minimal.to_string(), "n/p uid=u");
        assert_eq!("n/p  uid=u ".parse::<TracedPod>().unwrap(), minimal);
        let spec = NodeTraceSpec { pods: vec![web(), minimal], ..Default::default() };
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"pods": [web().to_string(), "n/p uid=u"]}),
            "no settings"
        );
        assert_eq!(serde_json::from_value::<NodeTraceSpec>(json).unwrap(), spec);
        let by: Vec<String> = spec.requested_by().iter().map(|r| r.to_string()).collect();
        assert_eq!(by, ["shop/all", "shop/web"]);
        assert_eq!(spec.format(), SpecFormat::Shared);
    }

    /// Format 1 is what agents of earlier versions read: its line has settings= (which those
    /// agents require) and profiles=, and reads back the same.
    #[test]
    fn a_format_1_line_keeps_its_settings_key_and_profiles() {
        let legacy = TracedPod {
            owner_kind: None,
            profiles: vec!["standard".into(), "intensive".into()],
            settings_key: Some("9c1e2d3a4b5c6d7e".into()),
            ..web()
        };
        let line = legacy.to_string();
        assert!(
            line.starts_with(
                "shop/web-7d9c5-x2x4z uid=6f1c0b9e-0000-4000-8000-000000000001 settings=9c1e2d3a4b5c6d7e \
                 qos=Burstable profiles=standard,intensive by=shop/web,shop/all "
            ),
            "{line}"
        );
        assert_eq!(line.parse::<TracedPod>().unwrap(), legacy);
        let spec = NodeTraceSpec { pods: vec![legacy], ..Default::default() };
        assert_eq!(spec.format(), SpecFormat::PodSettings);
    }

    #[test]
    fn broken_lines_are_errors_that_quote_the_line_and_unknown_fields_are_skipped() {
        for (line, problem) in [
            ("", "empty"),
            ("shop uid=u", "does not start with namespace/name"),
            ("shop/web settings=k", "uid= is required"),
            ("shop/web uid=u qos", "token without '=': qos"),
            ("shop/web uid=u label:tier", "label without '=': label:tier"),
            ("shop/web uid=u by=shop", "PodTrace \"shop\": is not namespace/name"),
        ] {
            let e = line.parse::<TracedPod>().unwrap_err().to_string();
            assert!(e.starts_with(&format!("pod {line:?}: ")) && e.ends_with(problem), "{e}");
        }
        let later = "n/p uid=u settings=k priority=7".parse::<TracedPod>().unwrap();
        assert_eq!(later.to_string(), "n/p uid=u settings=k");
        let e = serde_json::from_value::<TracedPod>(serde_json::json!({"uid": "u"})).unwrap_err();
        assert!(e.to_string().contains("expected"), "{e}");
    }

    fn shared() -> SharedSettings {
        let choice = |kinds: &[&str], name: Option<&str>, inline: Option<MonitoringProfileSpec>| {
            ProfileChoice {
                owner_kinds: kinds.iter().map(|k| k.to_string()).collect(),
                profile_ref: name.map(|n| ProfileRef { name: n.into() }),
                profile: inline,
            }
        };
        let automatic = PodTraceProfileSpec {
            profiles: vec![
                choice(&["ReplicaSet"], Some("daemon"), None),
                choice(&[], None, Some(Preset::Standard.spec())),
            ],
        };
        let fast = PodTraceProfileSpec { profiles: vec![choice(&[], Some("fast"), None)] };
        let fast_spec = MonitoringProfileSpec { interval: "2s".into(), ..Preset::Minimal.spec() };
        SharedSettings {
            podtrace_profiles: [
                (by(&["all"])[0].clone(), automatic),
                (by(&["web"])[0].clone(), fast),
            ]
            .into(),
            monitoring_profiles: [
                ("daemon".to_string(), Preset::Daemon.spec()),
                ("fast".to_string(), fast_spec),
            ]
            .into(),
        }
    }

    #[test]
    fn a_pod_gets_the_merge_of_its_podtraces_profiles_for_its_owner_kind() {
        let shared = shared();
        let spec = NodeTraceSpec::default();
        let got = spec.settings_for(&web(), &shared).unwrap();
        let fast = &shared.monitoring_profiles["fast"];
        assert_eq!(got, merge_profiles([fast, &Preset::Daemon.spec()]).unwrap());
        assert_eq!(got.interval, "2s");
        let bare = TracedPod { owner_kind: None, requested_by: by(&["all"]), ..web() };
        assert_eq!(spec.settings_for(&bare, &shared).unwrap(), Preset::Standard.spec());
    }

    #[test]
    fn a_missing_shared_object_is_named_and_transient_and_a_missing_key_is_not() {
        let mut shared = shared();
        let spec = NodeTraceSpec::default();
        shared.monitoring_profiles.remove("fast");
        let e = spec.settings_for(&web(), &shared).unwrap_err();
        assert_eq!(
            e,
            SettingsError::MonitoringProfileMissing {
                name: "fast".into(),
                podtrace: by(&["web"])[0].clone()
            }
        );
        assert!(e.is_transient());
        shared.podtrace_profiles.clear();
        let e = spec.settings_for(&web(), &shared).unwrap_err();
        assert!(e.to_string().starts_with("PodTraceProfile shop/web not seen yet"), "{e}");
        let nobody = TracedPod { requested_by: vec![], ..web() };
        assert_eq!(spec.settings_for(&nobody, &shared), Err(SettingsError::NoPodTrace));

        let legacy = NodeTraceSpec {
            pod_settings: vec![PodSettings { key: "k".into(), settings: Preset::Batch.spec() }],
            ..Default::default()
        };
        let keyed = |k: &str| TracedPod { settings_key: Some(k.into()), ..web() };
        assert_eq!(legacy.settings_for(&keyed("k"), &shared), Ok(Preset::Batch.spec()));
        let e = legacy.settings_for(&keyed("gone"), &shared).unwrap_err();
        assert!(!e.is_transient() && e.to_string().contains("\"gone\""), "{e}");
    }

    #[test]
    fn an_agent_reads_format_2_only_once_it_reports_it() {
        assert_eq!(SpecFormat::read_by(None), SpecFormat::PodSettings);
        assert_eq!(SpecFormat::read_by(Some(1)), SpecFormat::PodSettings);
        assert_eq!(SpecFormat::read_by(Some(2)), SpecFormat::Shared);
        assert_eq!(SpecFormat::read_by(Some(3)), SpecFormat::Shared, "a newer agent reads 2 too");
        let status: NodeTraceStatus =
            serde_json::from_value(serde_json::json!({"trackedPods": 1})).unwrap();
        assert_eq!(status.spec_format, None, "what an earlier agent writes");
    }

    #[test]
    fn relevant_shared_settings_are_those_the_pods_name() {
        let shared = shared();
        let spec = NodeTraceSpec {
            pods: vec![TracedPod { requested_by: by(&["web", "gone"]), ..web() }],
            ..Default::default()
        };
        let relevant = shared.relevant_to(&spec);
        assert_eq!(relevant.podtrace_profiles.keys().cloned().collect::<Vec<_>>(), by(&["web"]));
        assert_eq!(relevant.monitoring_profiles.keys().collect::<Vec<_>>(), ["fast"]);
        let legacy = NodeTraceSpec {
            pods: vec![TracedPod { settings_key: Some("k".into()), ..web() }],
            ..Default::default()
        };
        assert_eq!(shared.relevant_to(&legacy), SharedSettings::default());
    }

    #[test]
    fn a_pod_result_is_one_line_with_the_message_last_and_reads_back_whole() {
        let pending = PodAttachStatus {
            uid: "u-1".into(),
            namespace: "shop".into(),
            name: "web".into(),
            state: PodAttachState::Pending,
            reason: Some(PodAttachReason::CgroupNotFound),
            message: Some("no cgroup at /kubepods/x (and 3 other paths); retrying".into()),
        };
        let line = PodResult(pending.clone()).to_string();
        assert_eq!(
            line,
            "shop/web uid=u-1 Pending reason=CgroupNotFound message=no cgroup at /kubepods/x (and 3 other paths); retrying"
        );
        assert_eq!(line.parse::<PodResult>().unwrap().0, pending);
        let attached = PodAttachStatus {
            state: PodAttachState::Attached,
            reason: None,
            message: None,
            ..pending
        };
        assert_eq!(PodResult(attached.clone()).to_string(), "shop/web uid=u-1 Attached");
        let two_lines = PodAttachStatus { message: Some("first\nsecond".into()), ..attached };
        assert_eq!(
            PodResult(two_lines).to_string(),
            "shop/web uid=u-1 Attached message=first second",
            "one line whatever the message"
        );
        for (line, problem) in [
            ("shop/web Attached", "uid= must follow the name"),
            ("shop/web uid=u Sleeping", "the state (Attached, Pending or Failed) must follow uid="),
            ("shop/web uid=u Failed reason=Gremlins", "unknown reason \"Gremlins\""),
        ] {
            let e = line.parse::<PodResult>().unwrap_err().to_string();
            assert!(e.ends_with(problem), "{e}");
        }
    }

    /// Format 1 statuses keep the objects every operator reads; format 2 statuses carry the
    /// same results as lines, and either reads back through `attach_results`.
    #[test]
    fn a_status_puts_its_results_where_the_spec_format_says() {
        let result = |name: &str| PodAttachStatus {
            uid: format!("u-{name}"),
            namespace: "shop".into(),
            name: name.into(),
            state: PodAttachState::Attached,
            reason: None,
            message: None,
        };
        let status = NodeTraceStatus { pods: vec![result("a"), result("b")], ..Default::default() };
        let lines = status.clone().for_format(SpecFormat::Shared);
        assert!(lines.pods.is_empty());
        let json = serde_json::to_value(&lines).unwrap();
        assert_eq!(
            json["podResults"],
            serde_json::json!(["shop/a uid=u-a Attached", "shop/b uid=u-b Attached"])
        );
        let read: NodeTraceStatus = serde_json::from_value(json).unwrap();
        assert_eq!(
            read.attach_results().collect::<Vec<_>>(),
            status.attach_results().collect::<Vec<_>>()
        );
        assert_eq!(read.for_format(SpecFormat::PodSettings), status);
    }

    fn token() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9.-]{0,12}[a-z0-9])?"
    }

    proptest! {
        /// Every pod the operator can write reads back equal: names, label keys and values and
        /// runtime IDs never hold a space, a comma or (names) an `=`.
        #[test]
        fn every_pod_reads_back_equal(
            namespace in token(), name in token(), uid in token(),
            key in proptest::option::of("[0-9a-f]{16}"),
            qos in proptest::option::of("Guaranteed|Burstable|BestEffort"),
            owner in proptest::option::of("[A-Z][a-zA-Z]{0,12}"),
            containers in proptest::collection::vec((token(), proptest::option::of("containerd://[0-9a-f]{8}")), 0..4),
            labels in proptest::collection::btree_map("([a-z0-9.]{1,8}/)?[a-z0-9]{1,8}", "[a-z0-9._-]{0,8}", 0..4),
            profiles in proptest::collection::vec(token(), 0..3),
            by in proptest::collection::vec((token(), token()), 0..3),
        ) {
            let pod = TracedPod {
                uid, namespace, name, qos_class: qos, owner_kind: owner, settings_key: key, profiles, labels,
                containers: containers.into_iter().map(|(name, runtime_id)| TracedContainer { name, runtime_id }).collect(),
                requested_by: by.into_iter().map(|(namespace, name)| PodTraceRef { namespace, name }).collect(),
            };
            let json = serde_json::to_string(&pod).unwrap();
            prop_assert_eq!(serde_json::from_str::<TracedPod>(&json).unwrap(), pod);
        }
    }
}
