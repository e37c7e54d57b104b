//! The metric catalog: every series family the agent's collectors export, with its name, help,
//! type, labels, the metric source that produces it and how many series a profile yields of it.
//!
//! It lives here, beside the profile types, because two binaries read it: the agent encodes
//! `/metrics` and generates `docs/metrics.md` from it, and the operator computes
//! `PodTrace.status.seriesEstimate` from it. Both already depend on this crate, and neither
//! depends on the other, so the estimate cannot drift from what agents export (the agent's
//! tests compare [`Family::series`] with what its collectors produce).
//!
//! ```text
//!  Family { name, kind, source, labels, scope, series(profile), keep }
//!    agent:    Store (encode, budget order: `keep`) · admin channel sources · metrics-doc
//!    operator: series_per_pod(profile, containers) ─► PodTrace.status.seriesEstimate
//! ```

use crate::profile::{MonitoringProfileSpec, Probe};

/// Prometheus metric type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A value that only goes up (its name ends in `_total`).
    Counter,
    /// Cumulative buckets with `_bucket{le}`, `_sum` and `_count` lines.
    Histogram,
    /// No TYPE line (a compatibility alias whose name fits no type).
    Untyped,
}

/// A metric source: the collector whose series the admin channel switches on and off together
/// (`Mnet:disable`). Declared in the order of their names, which is the order reports list
/// them in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// The agent's own `podtrace_agent_*` metrics.
    Agent,
    /// The off-CPU probe (`cpuBlock`).
    Cpu,
    /// The file-system probes (`fsLatency`, `fsBytes`).
    Fs,
    /// The node's kernel counters from `/proc`.
    Kernel,
    /// The network probes (`tcpRtt`, `tcpConnect`, `dns`, `networkBytes`).
    Net,
    /// Per-process statistics from `/proc/<pid>`.
    Process,
    /// cgroup limits and usage.
    Resource,
}

impl Source {
    /// Every source.
    pub const ALL: [Source; 7] = [
        Source::Agent,
        Source::Cpu,
        Source::Fs,
        Source::Kernel,
        Source::Net,
        Source::Process,
        Source::Resource,
    ];

    /// The sources of the eBPF probes (one per probe family).
    pub const EBPF: [Source; 3] = [Source::Cpu, Source::Fs, Source::Net];

    /// Its name on the admin channel and in documentation.
    pub fn name(self) -> &'static str {
        match self {
            Source::Agent => "agent",
            Source::Cpu => "cpu",
            Source::Fs => "fs",
            Source::Kernel => "kernel",
            Source::Net => "net",
            Source::Process => "process",
            Source::Resource => "resource",
        }
    }

    /// The source of the series of `probe`.
    pub fn of_probe(probe: Probe) -> Source {
        match probe {
            Probe::TcpRtt | Probe::TcpConnect | Probe::Dns | Probe::NetworkBytes => Source::Net,
            Probe::FsLatency | Probe::FsBytes => Source::Fs,
            Probe::CpuBlock => Source::Cpu,
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is no source.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown metrics source {0:?} (sources: agent, cpu, fs, kernel, net, process, resource)")]
pub struct UnknownSource(pub String);

impl std::str::FromStr for Source {
    type Err = UnknownSource;

    fn from_str(name: &str) -> Result<Self, UnknownSource> {
        Source::ALL.into_iter().find(|s| s.name() == name).ok_or(UnknownSource(name.to_owned()))
    }
}

/// What one label set of a family belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The node (no pod labels; not counted against a pod's budget).
    Node,
    /// A container of a pod.
    Container,
    /// A process of a container (one label set per process with series of its own).
    Process,
}

/// One metric family.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    /// Full name (counters include `_total`).
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// The Prometheus type.
    pub kind: Kind,
    /// The metric source that produces it.
    pub source: Source,
    /// Its labels, for the reference (`docs/metrics.md`); every per-pod series also carries a
    /// `label_<key>` per pod label of the profile's `labels.podLabels`.
    pub labels: &'static str,
    /// What one label set belongs to.
    pub scope: Scope,
    /// The label sets a profile yields per [`Family::scope`] (per container, or per process),
    /// counting one process name per probe and every resource with a limit: 0 when the profile
    /// does not collect it.
    pub series: fn(&MonitoringProfileSpec) -> u32,
    /// Rank under a pod's `maxSeriesPerPod` budget: when the pod's series do not fit, whole
    /// series groups of the lowest rank go first (aggregates and latest values before
    /// distributions, those before process details, those before the cgroup limits and alert
    /// levels the alert rules read).
    pub keep: u8,
}

impl Family {
    /// Exposition lines per label set: a histogram's buckets, `+Inf`, `_sum` and `_count`.
    pub fn lines_per_series(&self) -> u32 {
        match self.kind {
            Kind::Histogram => HISTOGRAM_LINES,
            _ => 1,
        }
    }
}

/// Finite buckets of every latency histogram: `le` = 0.0001 s × 2^k for k in 0..20 (the
/// reference's exponential buckets, 0.0001 s to 52.4288 s).
pub const HISTOGRAM_BUCKETS: u32 = 20;
/// Lines of one histogram series: the finite buckets, `+Inf`, `_sum` and `_count`.
pub const HISTOGRAM_LINES: u32 = HISTOGRAM_BUCKETS + 3;

const RESOURCE_LABELS: &str = "resource_type (memory, cpu, io), namespace, pod, container";
const PROCESS_LABELS: &str = "namespace, pod, container, pid, process_name";
const NODE_LABELS: &str = "";
const LATENCY_LABELS: &str = "namespace, pod, container, type, process_name";
const FS_LATENCY_LABELS: &str =
    "namespace, pod, container, type (read, write, fsync), process_name";

/// Index of a family in [`FAMILIES`].
pub type FamilyId = usize;

macro_rules! families {
    ($($id:ident = ($name:literal, $kind:ident, $source:ident, $scope:ident, $labels:expr,
        $series:expr, keep $keep:literal, $help:literal);)*) => {
        /// Every family, in exposition order.
        pub const FAMILIES: &[Family] = &[
            $(Family {
                name: $name,
                help: $help,
                kind: Kind::$kind,
                source: Source::$source,
                scope: Scope::$scope,
                labels: $labels,
                series: $series,
                keep: $keep,
            },)*
        ];
        families!(@ids 0usize; $($id)*);
    };
    (@ids $n:expr; $id:ident $($rest:ident)*) => {
        #[doc = concat!("The `", stringify!($id), "` family.")]
        pub const $id: FamilyId = $n;
        families!(@ids $n + 1usize; $($rest)*);
    };
    (@ids $n:expr;) => {};
}

/// 1 when `on`.
const fn one(on: bool) -> u32 {
    on as u32
}

/// The resources a profile collects (memory, cpu, io).
fn resources(p: &MonitoringProfileSpec) -> u32 {
    one(p.collect.memory) + one(p.collect.cpu) + one(p.collect.disk_io)
}

/// The resources with limit, utilization and alert series.
fn limited(p: &MonitoringProfileSpec) -> u32 {
    if p.resource_limits.enabled { resources(p) } else { 0 }
}

/// Whether the profile keeps history (the aggregates need it).
fn history(p: &MonitoringProfileSpec) -> bool {
    p.history.size > 0
}

/// Whether the profile's probes include `probe`.
fn probe(p: &MonitoringProfileSpec, probe: Probe) -> bool {
    p.probes.active().any(|q| q == probe)
}

families! {
    RESOURCE_LIMIT = ("podtrace_resource_limit_bytes", Gauge, Resource, Container, RESOURCE_LABELS,
        limited, keep 8,
        "Resource limit: memory in bytes, CPU quota in microseconds per period, I/O in bytes per second");
    RESOURCE_USAGE = ("podtrace_resource_usage_bytes", Gauge, Resource, Container, RESOURCE_LABELS,
        resources, keep 8,
        "Resource usage: memory in bytes, CPU time in microseconds, I/O bytes read plus written");
    RESOURCE_UTILIZATION = ("podtrace_resource_utilization_percent", Gauge, Resource, Container, RESOURCE_LABELS,
        limited, keep 9,
        "Resource utilization in percent of the limit (over 100 means the limit is exceeded)");
    RESOURCE_ALERT = ("podtrace_resource_alert_level", Gauge, Resource, Container, RESOURCE_LABELS,
        limited, keep 9,
        "Resource alert level: 0 none, 1 warning, 2 critical, 3 emergency (the profile's thresholds)");
    PROCESS_CPU = ("podtrace_process_cpu_usage_percent", Gauge, Process, Process, PROCESS_LABELS,
        |p| one(p.collect.cpu), keep 6,
        "CPU usage of the process over the last interval, in percent of one CPU");
    PROCESS_MEMORY = ("podtrace_process_memory_usage_bytes", Gauge, Process, Process, PROCESS_LABELS,
        |p| one(p.collect.memory), keep 6,
        "Resident memory (VmRSS) of the process in bytes");
    PROCESS_MEMORY_PERCENT = ("podtrace_process_memory_usage_percent", Gauge, Process, Process, PROCESS_LABELS,
        |p| one(p.collect.memory), keep 5,
        "Resident memory in percent of the container's memory limit (of the node's memory without one)");
    PROCESS_DISK_READ = ("podtrace_process_disk_read_bytes_total", Counter, Process, Process, PROCESS_LABELS,
        |p| one(p.collect.disk_io), keep 5,
        "Bytes the process read from storage (/proc/<pid>/io read_bytes)");
    PROCESS_DISK_WRITE = ("podtrace_process_disk_write_bytes_total", Counter, Process, Process, PROCESS_LABELS,
        |p| one(p.collect.disk_io), keep 5,
        "Bytes the process wrote to storage (/proc/<pid>/io write_bytes)");
    PROCESS_NET_RX = ("podtrace_process_network_receive_bytes_total", Counter, Process, Process, PROCESS_LABELS,
        |p| one(p.collect.network_io), keep 5,
        "Bytes received on the process's network namespace, every interface but lo");
    PROCESS_NET_TX = ("podtrace_process_network_transmit_bytes_total", Counter, Process, Process, PROCESS_LABELS,
        |p| one(p.collect.network_io), keep 5,
        "Bytes transmitted on the process's network namespace, every interface but lo");
    PROCESS_THREADS = ("podtrace_process_threads", Gauge, Process, Process, PROCESS_LABELS,
        |p| one(p.collect.threads), keep 5,
        "Threads of the process");
    PROCESS_FDS = ("podtrace_process_open_fds", Gauge, Process, Process, PROCESS_LABELS,
        |p| one(p.collect.file_descriptors), keep 5,
        "Open file descriptors of the process");
    PROCESS_UPTIME = ("podtrace_process_uptime_seconds", Gauge, Process, Process, PROCESS_LABELS,
        |_| 1, keep 4,
        "Seconds since the process started");
    PROCESS_CPU_AVG = ("podtrace_process_cpu_usage_percent_avg", Gauge, Process, Process, PROCESS_LABELS,
        |p| one(p.collect.cpu && history(p)), keep 0,
        "Average CPU usage over the history window (history.size samples)");
    PROCESS_CPU_MAX = ("podtrace_process_cpu_usage_percent_max", Gauge, Process, Process, PROCESS_LABELS,
        |p| one(p.collect.cpu && history(p)), keep 0,
        "Maximum CPU usage over the history window");
    PROCESS_MEMORY_AVG = ("podtrace_process_memory_usage_bytes_avg", Gauge, Process, Process, PROCESS_LABELS,
        |p| one(p.collect.memory && history(p)), keep 0,
        "Average resident memory over the history window");
    PROCESS_MEMORY_MAX = ("podtrace_process_memory_usage_bytes_max", Gauge, Process, Process, PROCESS_LABELS,
        |p| one(p.collect.memory && history(p)), keep 0,
        "Maximum resident memory over the history window");
    PROCESS_HISTORY_SAMPLES = ("podtrace_process_history_samples", Gauge, Process, Process, PROCESS_LABELS,
        |p| one(history(p)), keep 0,
        "Samples in the history window the aggregates are computed over");
    NODE_CONTEXT_SWITCHES = ("node_context_switches_total", Counter, Kernel, Node, NODE_LABELS,
        |_| 1, keep 9,
        "Context switches on the node since boot, all CPUs (/proc/stat ctxt)");
    NODE_ENTROPY = ("node_entropy_available_bits", Gauge, Kernel, Node, NODE_LABELS,
        |_| 1, keep 9,
        "Entropy available in the kernel's pool, in bits (/proc/sys/kernel/random/entropy_avail)");
    RTT = ("podtrace_rtt_seconds", Histogram, Net, Container, LATENCY_LABELS,
        |p| one(probe(p, Probe::TcpRtt)), keep 2,
        "Distribution of TCP round-trip times (smoothed RTT of the socket at each ACK), in seconds");
    RTT_LATEST = ("podtrace_rtt_latest_seconds", Gauge, Net, Container, LATENCY_LABELS,
        |p| one(probe(p, Probe::TcpRtt)), keep 1,
        "Most recent TCP round-trip time, in seconds");
    LATENCY = ("podtrace_latency_seconds", Histogram, Net, Container, LATENCY_LABELS,
        |p| one(probe(p, Probe::TcpConnect)), keep 2,
        "Distribution of TCP connect latencies (SYN_SENT to ESTABLISHED), in seconds");
    LATENCY_LATEST = ("podtrace_latency_latest_seconds", Gauge, Net, Container, LATENCY_LABELS,
        |p| one(probe(p, Probe::TcpConnect)), keep 1,
        "Most recent TCP connect latency, in seconds");
    DNS = ("podtrace_dns_latency_seconds_histogram", Histogram, Net, Container, LATENCY_LABELS,
        |p| one(probe(p, Probe::Dns)), keep 2,
        "Distribution of DNS query latencies (query to matching response), in seconds");
    DNS_LATEST = ("podtrace_dns_latency_seconds_gauge", Gauge, Net, Container, LATENCY_LABELS,
        |p| one(probe(p, Probe::Dns)), keep 1,
        "Most recent DNS query latency, in seconds");
    FS = ("podtrace_fs_latency_seconds_histogram", Histogram, Fs, Container, FS_LATENCY_LABELS,
        |p| 3 * one(probe(p, Probe::FsLatency)), keep 2,
        "Distribution of file-system operation latencies on regular files, by type read/write/fsync, in seconds");
    FS_LATEST = ("podtrace_fs_latency_seconds_gauge", Gauge, Fs, Container, FS_LATENCY_LABELS,
        |p| 3 * one(probe(p, Probe::FsLatency)), keep 1,
        "Most recent file-system operation latency, in seconds");
    FS_COUNT = ("podtrace_fs_latency_seconds_count", Untyped, Fs, Container, FS_LATENCY_LABELS,
        |p| 3 * one(probe(p, Probe::FsLatency)), keep 1,
        "File-system operations; the same value as podtrace_fs_latency_seconds_histogram_count, under the name the reference's PromQL examples use");
    CPU_BLOCK = ("podtrace_cpu_block_seconds_histogram", Histogram, Cpu, Container, LATENCY_LABELS,
        |p| one(probe(p, Probe::CpuBlock)), keep 2,
        "Distribution of off-CPU times: how long a thread stayed switched out before running again, in seconds");
    CPU_BLOCK_LATEST = ("podtrace_cpu_block_seconds_gauge", Gauge, Cpu, Container, LATENCY_LABELS,
        |p| one(probe(p, Probe::CpuBlock)), keep 1,
        "Most recent off-CPU time, in seconds");
    NETWORK_BYTES = ("podtrace_network_bytes_total", Counter, Net, Container, "namespace, pod, container, type, process_name, direction (send, recv)",
        |p| 2 * one(probe(p, Probe::NetworkBytes)), keep 3,
        "Bytes sent and received by the container's sockets (cgroup_skb), by direction send/recv");
    FILESYSTEM_BYTES = ("podtrace_filesystem_bytes_total", Counter, Fs, Container, "namespace, pod, container, type, process_name, operation (read, write)",
        |p| 2 * one(probe(p, Probe::FsBytes)), keep 3,
        "Bytes read and written on regular files (read/write/pread/pwrite/readv/writev), by operation");
    NODE_CONNECTIONS = ("node_network_connections_total", Gauge, Kernel, Node, NODE_LABELS,
        |_| 1, keep 9,
        "Sockets of the node's network namespace, read from <proc-root>/1/net (the host's init: the agent has no hostNetwork), every entry of tcp, tcp6, udp and udp6, in any state");
}

/// The families of a source.
pub fn of_source(source: Source) -> impl Iterator<Item = FamilyId> {
    FAMILIES.iter().enumerate().filter(move |(_, f)| f.source == source).map(|(i, _)| i)
}

/// The exposition lines one container yields with `spec`, counting `processes` processes with
/// series of their own and one process name per probe (see [`Family::series`]).
pub fn series_per_container(spec: &MonitoringProfileSpec, processes: u32) -> u64 {
    FAMILIES
        .iter()
        .map(|f| {
            let per = match f.scope {
                Scope::Node => 0,
                Scope::Container => 1,
                Scope::Process => processes,
            };
            u64::from((f.series)(spec)) * u64::from(f.lines_per_series()) * u64::from(per)
        })
        .sum()
}

/// The series a pod with `containers` containers (at least one) yields with `spec`, one process
/// each, capped at the profile's `maxSeriesPerPod`: PodTrace's `status.seriesEstimate` per pod,
/// for capacity planning. Pods with more processes than one per container produce more process
/// series (up to the agent's `--max-processes` per container, plus one `pid="other"`).
pub fn series_per_pod(spec: &MonitoringProfileSpec, containers: usize) -> i64 {
    let containers = u64::try_from(containers.max(1)).unwrap_or(u64::MAX);
    let total = series_per_container(spec, 1).saturating_mul(containers);
    i64::try_from(total).unwrap_or(i64::MAX).min(i64::from(spec.max_series_per_pod))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets::Preset;

    #[test]
    fn names_are_unique_and_counters_end_in_total() {
        let mut names: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len());
        for f in FAMILIES {
            // node_network_connections_total is a gauge under the kernel-metrics reference's name.
            let reference_gauge = f.name == "node_network_connections_total";
            assert_eq!(
                f.kind == Kind::Counter,
                f.name.ends_with("_total") && !reference_gauge,
                "{}",
                f.name
            );
        }
    }

    #[test]
    fn source_names_parse_back_and_are_declared_in_name_order() {
        for s in Source::ALL {
            assert_eq!(s.name().parse::<Source>(), Ok(s));
        }
        assert!("ebpf".parse::<Source>().is_err());
        let mut names: Vec<&str> = Source::ALL.iter().map(|s| s.name()).collect();
        names.sort();
        assert_eq!(names, Source::ALL.map(Source::name));
        for p in Probe::ALL {
            assert!(Source::EBPF.contains(&Source::of_probe(p)), "{p:?}");
        }
    }

    #[test]
    fn every_probe_has_families_in_its_source() {
        let mut all = MonitoringProfileSpec::default();
        for p in Probe::ALL {
            all.probes.include = vec![p];
            let sources: Vec<Source> = FAMILIES
                .iter()
                .filter(|f| f.scope == Scope::Container && f.source != Source::Resource)
                .filter(|f| (f.series)(&all) > 0)
                .map(|f| f.source)
                .collect();
            assert!(!sources.is_empty(), "{p:?} yields no family");
            assert!(sources.iter().all(|s| *s == Source::of_probe(p)), "{p:?}: {sources:?}");
        }
    }

    #[test]
    fn the_estimate_counts_every_family_a_profile_collects() {
        // minimal: cpu and memory, no probes, no history: usage, limit, utilization, alert for
        // 2 resources; cpu, memory, memory percent, uptime for the process.
        let minimal = Preset::Minimal.spec();
        assert_eq!(series_per_container(&minimal, 1), 2 * 4 + 4);
        assert_eq!(series_per_pod(&minimal, 3), 3 * 12);
        // intensive: everything; 5 histograms of 23 lines (fs: 3 types) and their latest
        // gauges, the fs count alias, 2 + 2 byte counters; 3 resources × 4; 15 process series.
        let intensive = Preset::Intensive.spec();
        let ebpf = (4 + 3) * (HISTOGRAM_LINES + 1) + 3 + 2 + 2;
        assert_eq!(series_per_container(&intensive, 1), u64::from(3 * 4 + 15 + ebpf));
        assert_eq!(series_per_container(&intensive, 2), u64::from(3 * 4 + 2 * 15 + ebpf));
    }

    #[test]
    fn the_estimate_is_capped_by_the_budget() {
        let mut spec = Preset::Intensive.spec();
        spec.max_series_per_pod = 10;
        assert_eq!(series_per_pod(&spec, 3), 10);
        spec.resource_limits.enabled = false;
        spec.max_series_per_pod = 100_000;
        let without = series_per_pod(&spec, 1);
        spec.resource_limits.enabled = true;
        assert_eq!(series_per_pod(&spec, 1) - without, 3 * 3);
    }
}
