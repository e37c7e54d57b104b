//! `MonitoringProfile`: what to collect for a pod, how often, how much history, where to export.
//!
//! The same [`MonitoringProfileSpec`] is used three ways: as the spec of a cluster-scoped
//! `MonitoringProfile`, inline in a `PodTrace` (`spec.profile`), and merged per pod and per node
//! in a `NodeTrace`. Its CEL rules therefore say the field name relative to the profile; the API
//! server prefixes the full path (`spec.profile.interval: Invalid value: …`).
//!
//! Every field has a default equal to the `standard` preset, so a profile that only sets
//! `interval` behaves like `standard` at that interval.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::duration;

/// Spec of a MonitoringProfile: what podtrace collects for the pods that use it, how often,
/// how much history it keeps, and where it exports the samples.
#[allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) repeats the keys name/type_/json_path; clippy reads them as duplicates"
)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "podtrace.dev",
    version = "v1alpha1",
    kind = "MonitoringProfile",
    plural = "monitoringprofiles",
    shortname = "mprof",
    category = "podtrace-all",
    doc = "MonitoringProfile is a reusable, cluster-scoped set of monitoring settings: the collectors \
           and eBPF probes to run, the collection interval, the history kept per pod, resource-limit \
           alert thresholds and the exporters that receive the samples. PodTraces refer to it by name.",
    derive = "PartialEq",
    printcolumn(name = "Interval", type_ = "string", json_path = ".spec.interval"),
    printcolumn(name = "History", type_ = "integer", json_path = ".spec.history.size"),
    printcolumn(name = "Probes", type_ = "string", json_path = ".spec.probes.include"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringProfileSpec {
    /// How often samples are collected and exported, as a duration between 1s and 1h
    /// (for example "10s", "1m", "2m30s").
    #[serde(default = "default_interval")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(
        "self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1s') && duration(self) <= duration('1h')"
    ).message("interval must be a duration between 1s and 1h, such as \"10s\" or \"2m\""))]
    pub interval: String,

    /// Which cgroup and /proc collectors run for the pods.
    #[serde(default)]
    pub collect: CollectSettings,

    /// Which eBPF probes are attached to the pods' cgroups.
    #[serde(default)]
    pub probes: ProbeSettings,

    /// Resource-limit monitoring: utilization of the pods' CPU, memory and I/O limits and the
    /// alert levels derived from it.
    #[serde(default)]
    pub resource_limits: ResourceLimits,

    /// How many samples of history the agent keeps per process (0 keeps none).
    #[serde(default)]
    pub history: History,

    /// Which exporters receive the samples. Addresses and credentials are agent settings,
    /// never part of a profile.
    #[serde(default)]
    pub export: ExportSettings,

    /// Which labels are put on the pods' series.
    #[serde(default)]
    pub labels: LabelSettings,

    /// Hard cardinality budget: the most series the agent exports for one pod (10 to 100000).
    /// Series beyond it are dropped and counted in podtrace_agent_series_dropped_total.
    #[serde(default = "default_max_series_per_pod")]
    #[x_kube(validation = Rule::new("self >= 10 && self <= 100000")
        .message("maxSeriesPerPod must be between 10 and 100000"))]
    pub max_series_per_pod: i32,
}

/// The cgroup and /proc collectors of a profile.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CollectSettings {
    /// CPU usage (percent of one core and of the CPU limit).
    #[serde(default = "yes")]
    pub cpu: bool,
    /// Memory usage (bytes, percent of the memory limit).
    #[serde(default = "yes")]
    pub memory: bool,
    /// Block I/O bytes read and written.
    #[serde(default = "yes", rename = "diskIO")]
    pub disk_io: bool,
    /// Network bytes received and transmitted.
    #[serde(default = "yes", rename = "networkIO")]
    pub network_io: bool,
    /// Thread count per process.
    #[serde(default = "yes")]
    pub threads: bool,
    /// Open file descriptors per process.
    #[serde(default = "yes")]
    pub file_descriptors: bool,
}

/// One eBPF probe family.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "camelCase")]
pub enum Probe {
    /// TCP round-trip time (podtrace_rtt_seconds).
    TcpRtt,
    /// TCP connect latency, SYN_SENT to ESTABLISHED (podtrace_latency_seconds).
    TcpConnect,
    /// DNS query latency (podtrace_dns_latency_seconds_histogram).
    Dns,
    /// File-system operation latency (podtrace_fs_latency_seconds_histogram).
    FsLatency,
    /// File-system bytes read and written (podtrace_filesystem_bytes_total).
    FsBytes,
    /// Off-CPU (blocked) time (podtrace_cpu_block_seconds_histogram).
    CpuBlock,
    /// Network bytes sent and received (podtrace_network_bytes_total).
    NetworkBytes,
}

impl Probe {
    /// Every probe, in a stable order.
    pub const ALL: [Probe; 7] = [
        Probe::TcpRtt,
        Probe::TcpConnect,
        Probe::Dns,
        Probe::FsLatency,
        Probe::FsBytes,
        Probe::CpuBlock,
        Probe::NetworkBytes,
    ];

    /// The name used in the CRD, metrics and status (`tcpRtt`, `dns`, …).
    pub fn name(self) -> &'static str {
        match self {
            Probe::TcpRtt => "tcpRtt",
            Probe::TcpConnect => "tcpConnect",
            Probe::Dns => "dns",
            Probe::FsLatency => "fsLatency",
            Probe::FsBytes => "fsBytes",
            Probe::CpuBlock => "cpuBlock",
            Probe::NetworkBytes => "networkBytes",
        }
    }
}

/// The eBPF probes of a profile.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.enabled || size(self.include) > 0")
    .field_path(".include")
    .message("probes.include must list at least one probe when probes.enabled is true (or set probes.enabled to false)"))]
pub struct ProbeSettings {
    /// Attach eBPF probes at all. When false, only the cgroup and /proc collectors run.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The probe families to attach: tcpRtt, tcpConnect, dns, fsLatency, fsBytes, cpuBlock,
    /// networkBytes. Each name at most once.
    #[serde(default = "all_probes")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[schemars(length(max = 7))]
    pub include: Vec<Probe>,
}

/// Resource-limit monitoring and its alert thresholds (percent of the limit).
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.warningPercent < self.criticalPercent")
        .field_path(".criticalPercent")
        .message("resourceLimits.criticalPercent must be greater than resourceLimits.warningPercent"),
    validation = Rule::new("self.criticalPercent < self.emergencyPercent")
        .field_path(".emergencyPercent")
        .message("resourceLimits.emergencyPercent must be greater than resourceLimits.criticalPercent"),
)]
pub struct ResourceLimits {
    /// Read the pods' cgroup limits and report utilization and alert levels.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Utilization (percent of the limit) at which the alert level becomes 1 (warning).
    #[serde(default = "default_warning")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100")
        .message("resourceLimits.warningPercent must be between 1 and 100"))]
    pub warning_percent: i32,
    /// Utilization (percent of the limit) at which the alert level becomes 2 (critical).
    #[serde(default = "default_critical")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100")
        .message("resourceLimits.criticalPercent must be between 1 and 100"))]
    pub critical_percent: i32,
    /// Utilization (percent of the limit) at which the alert level becomes 3 (emergency); at most 100.
    #[serde(default = "default_emergency")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100")
        .message("resourceLimits.emergencyPercent must be between 1 and 100"))]
    pub emergency_percent: i32,
}

/// History kept per process, for aggregates (averages, maxima) and push messages.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct History {
    /// Number of samples kept per process, 0 to 10000 (0 keeps no history).
    #[serde(default = "default_history")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 10000")
        .message("history.size must be between 0 and 10000"))]
    pub size: i32,
}

/// Which exporters receive the samples of the pods.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExportSettings {
    /// Serve the pods' series on the agent's Prometheus endpoint (/metrics). false leaves them
    /// out of /metrics (and of the series budget); the push exporters enabled here still
    /// receive them.
    #[serde(default = "yes")]
    pub prometheus: bool,
    /// Publish a JSON message per pod and interval to NATS (if the agent has a NATS URL).
    #[serde(default = "yes")]
    pub nats: bool,
    /// Publish a JSON message per pod and interval to MQTT (if the agent has a broker).
    #[serde(default = "yes")]
    pub mqtt: bool,
    /// Send Influx line protocol every interval (if the agent has an Influx endpoint).
    #[serde(default = "yes")]
    pub influx: bool,
    /// Send the pods' series as OpenTelemetry metrics (OTLP over gRPC or HTTP) every interval
    /// (if the agent has an OTLP endpoint): the names and values of /metrics, with the pod's
    /// namespace, name and container as resource attributes.
    #[serde(default = "yes")]
    pub otlp: bool,
}

/// Labels put on the pods' series.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LabelSettings {
    /// Label series with the process name (the task's comm), bounded per pod: the busiest
    /// processes keep their name, the rest are counted as "other".
    #[serde(default = "yes")]
    pub process_name: bool,
    /// Pod labels copied onto every series of the pod, as an allow-list of label keys
    /// (for example "app.kubernetes.io/name"). At most 16.
    #[serde(default)]
    #[schemars(length(max = 16), inner(length(max = 317)))]
    #[x_kube(validation = Rule::new(
        "self.all(k, k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))"
    ).message("labels.podLabels must contain valid label keys such as \"app\" or \"app.kubernetes.io/name\""))]
    pub pod_labels: Vec<String>,
}

fn yes() -> bool {
    true
}
fn default_interval() -> String {
    "10s".into()
}
fn default_max_series_per_pod() -> i32 {
    2000
}
fn all_probes() -> Vec<Probe> {
    Probe::ALL.to_vec()
}
fn default_warning() -> i32 {
    80
}
fn default_critical() -> i32 {
    90
}
fn default_emergency() -> i32 {
    95
}
fn default_history() -> i32 {
    100
}

/// Defaults are the `standard` preset: every collector and probe, 10s, 100 samples of history.
impl Default for MonitoringProfileSpec {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            collect: CollectSettings::default(),
            probes: ProbeSettings::default(),
            resource_limits: ResourceLimits::default(),
            history: History::default(),
            export: ExportSettings::default(),
            labels: LabelSettings::default(),
            max_series_per_pod: default_max_series_per_pod(),
        }
    }
}

impl Default for CollectSettings {
    fn default() -> Self {
        Self::all(true)
    }
}

impl CollectSettings {
    /// Every collector on (`true`) or off (`false`).
    pub fn all(on: bool) -> Self {
        Self { cpu: on, memory: on, disk_io: on, network_io: on, threads: on, file_descriptors: on }
    }
}

impl Default for ProbeSettings {
    fn default() -> Self {
        Self { enabled: true, include: all_probes() }
    }
}

impl ProbeSettings {
    /// The probes that are actually attached: `include` when enabled, none otherwise.
    pub fn active(&self) -> impl Iterator<Item = Probe> + '_ {
        self.include.iter().copied().filter(|_| self.enabled)
    }
}

impl Default for ResourceLimits {
    fn default() -> Self {
        Self {
            enabled: true,
            warning_percent: default_warning(),
            critical_percent: default_critical(),
            emergency_percent: default_emergency(),
        }
    }
}

impl Default for History {
    fn default() -> Self {
        Self { size: default_history() }
    }
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self { prometheus: true, nats: true, mqtt: true, influx: true, otlp: true }
    }
}

impl Default for LabelSettings {
    fn default() -> Self {
        Self { process_name: true, pod_labels: Vec::new() }
    }
}

/// Removes the CEL rules of a profile embedded in an object the operator writes (NodeTrace,
/// PodTraceProfile).
///
/// The operator writes those from profiles the API server has already validated, and the
/// copies of the profile rules in list items would multiply their estimated cost past the API
/// server's CRD budget ("estimated rule cost exceeds budget"), so those CRDs carry none.
pub(crate) fn without_cel_rules(schema: &mut schemars::Schema) {
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

impl MonitoringProfileSpec {
    /// The collection interval, parsed. The CRD schema guarantees it parses for stored objects.
    pub fn interval(&self) -> Result<Duration, duration::DurationError> {
        duration::parse(&self.interval)
    }
}
