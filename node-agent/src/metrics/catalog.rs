//! Every metric family the collectors produce: name, help, type and the source that produces
//! it. `docs/metrics.md` is generated from it (`podtrace-agent metrics-doc`), with the agent's
//! own `podtrace_agent_*` metrics.

use super::sources::Source;
use Source::{Ebpf as EBPF, Kernel as KERNEL, Process as PROCESS, Resource as RESOURCE};

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

/// One metric family.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    /// Full name (counters include `_total`).
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// Gauge or counter.
    pub kind: Kind,
    /// The metric source that produces it.
    pub source: Source,
    /// Its labels, for the reference (`docs/metrics.md`); every per-pod series also carries a
    /// `label_<key>` per pod label of the profile's `labels.podLabels`.
    pub labels: &'static str,
}

const RESOURCE_LABELS: &str = "resource_type (memory, cpu, io), namespace, pod, container";
const PROCESS_LABELS: &str = "namespace, pod, container, pid, process_name";
const NODE_LABELS: &str = "";
const LATENCY_LABELS: &str = "namespace, pod, container, type, process_name";

/// Index of a family in [`FAMILIES`].
pub type FamilyId = usize;

macro_rules! families {
    ($($id:ident = ($name:literal, $kind:ident, $source:ident, $labels:expr, $help:literal);)*) => {
        /// Every family, in exposition order.
        pub const FAMILIES: &[Family] = &[
            $(Family { name: $name, help: $help, kind: Kind::$kind, source: $source, labels: $labels },)*
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

families! {
    RESOURCE_LIMIT = ("podtrace_resource_limit_bytes", Gauge, RESOURCE, RESOURCE_LABELS,
        "Resource limit: memory in bytes, CPU quota in microseconds per period, I/O in bytes per second");
    RESOURCE_USAGE = ("podtrace_resource_usage_bytes", Gauge, RESOURCE, RESOURCE_LABELS,
        "Resource usage: memory in bytes, CPU time in microseconds, I/O bytes read plus written");
    RESOURCE_UTILIZATION = ("podtrace_resource_utilization_percent", Gauge, RESOURCE, RESOURCE_LABELS,
        "Resource utilization in percent of the limit (over 100 means the limit is exceeded)");
    RESOURCE_ALERT = ("podtrace_resource_alert_level", Gauge, RESOURCE, RESOURCE_LABELS,
        "Resource alert level: 0 none, 1 warning, 2 critical, 3 emergency (the profile's thresholds)");
    PROCESS_CPU = ("podtrace_process_cpu_usage_percent", Gauge, PROCESS, PROCESS_LABELS,
        "CPU usage of the process over the last interval, in percent of one CPU");
    PROCESS_MEMORY = ("podtrace_process_memory_usage_bytes", Gauge, PROCESS, PROCESS_LABELS,
        "Resident memory (VmRSS) of the process in bytes");
    PROCESS_MEMORY_PERCENT = ("podtrace_process_memory_usage_percent", Gauge, PROCESS, PROCESS_LABELS,
        "Resident memory in percent of the container's memory limit (of the node's memory without one)");
    PROCESS_DISK_READ = ("podtrace_process_disk_read_bytes_total", Counter, PROCESS, PROCESS_LABELS,
        "Bytes the process read from storage (/proc/<pid>/io read_bytes)");
    PROCESS_DISK_WRITE = ("podtrace_process_disk_write_bytes_total", Counter, PROCESS, PROCESS_LABELS,
        "Bytes the process wrote to storage (/proc/<pid>/io write_bytes)");
    PROCESS_NET_RX = ("podtrace_process_network_receive_bytes_total", Counter, PROCESS, PROCESS_LABELS,
        "Bytes received on the process's network namespace, every interface but lo");
    PROCESS_NET_TX = ("podtrace_process_network_transmit_bytes_total", Counter, PROCESS, PROCESS_LABELS,
        "Bytes transmitted on the process's network namespace, every interface but lo");
    PROCESS_THREADS = ("podtrace_process_threads", Gauge, PROCESS, PROCESS_LABELS,
        "Threads of the process");
    PROCESS_FDS = ("podtrace_process_open_fds", Gauge, PROCESS, PROCESS_LABELS,
        "Open file descriptors of the process");
    PROCESS_UPTIME = ("podtrace_process_uptime_seconds", Gauge, PROCESS, PROCESS_LABELS,
        "Seconds since the process started");
    PROCESS_CPU_AVG = ("podtrace_process_cpu_usage_percent_avg", Gauge, PROCESS, PROCESS_LABELS,
        "Average CPU usage over the history window (history.size samples)");
    PROCESS_CPU_MAX = ("podtrace_process_cpu_usage_percent_max", Gauge, PROCESS, PROCESS_LABELS,
        "Maximum CPU usage over the history window");
    PROCESS_MEMORY_AVG = ("podtrace_process_memory_usage_bytes_avg", Gauge, PROCESS, PROCESS_LABELS,
        "Average resident memory over the history window");
    PROCESS_MEMORY_MAX = ("podtrace_process_memory_usage_bytes_max", Gauge, PROCESS, PROCESS_LABELS,
        "Maximum resident memory over the history window");
    PROCESS_HISTORY_SAMPLES = ("podtrace_process_history_samples", Gauge, PROCESS, PROCESS_LABELS,
        "Samples in the history window the aggregates are computed over");
    NODE_CONTEXT_SWITCHES = ("node_context_switches_total", Counter, KERNEL, NODE_LABELS,
        "Context switches on the node since boot, all CPUs (/proc/stat ctxt)");
    NODE_ENTROPY = ("node_entropy_available_bits", Gauge, KERNEL, NODE_LABELS,
        "Entropy available in the kernel's pool, in bits (/proc/sys/kernel/random/entropy_avail)");
    RTT = ("podtrace_rtt_seconds", Histogram, EBPF, LATENCY_LABELS,
        "Distribution of TCP round-trip times (smoothed RTT of the socket at each ACK), in seconds");
    RTT_LATEST = ("podtrace_rtt_latest_seconds", Gauge, EBPF, LATENCY_LABELS,
        "Most recent TCP round-trip time, in seconds");
    LATENCY = ("podtrace_latency_seconds", Histogram, EBPF, LATENCY_LABELS,
        "Distribution of TCP connect latencies (SYN_SENT to ESTABLISHED), in seconds");
    LATENCY_LATEST = ("podtrace_latency_latest_seconds", Gauge, EBPF, LATENCY_LABELS,
        "Most recent TCP connect latency, in seconds");
    DNS = ("podtrace_dns_latency_seconds_histogram", Histogram, EBPF, LATENCY_LABELS,
        "Distribution of DNS query latencies (query to matching response), in seconds");
    DNS_LATEST = ("podtrace_dns_latency_seconds_gauge", Gauge, EBPF, LATENCY_LABELS,
        "Most recent DNS query latency, in seconds");
    FS = ("podtrace_fs_latency_seconds_histogram", Histogram, EBPF, "namespace, pod, container, type (read, write, fsync), process_name",
        "Distribution of file-system operation latencies on regular files, by type read/write/fsync, in seconds");
    FS_LATEST = ("podtrace_fs_latency_seconds_gauge", Gauge, EBPF, "namespace, pod, container, type (read, write, fsync), process_name",
        "Most recent file-system operation latency, in seconds");
    FS_COUNT = ("podtrace_fs_latency_seconds_count", Untyped, EBPF, "namespace, pod, container, type (read, write, fsync), process_name",
        "File-system operations; the same value as podtrace_fs_latency_seconds_histogram_count, under the name the reference's PromQL examples use");
    CPU_BLOCK = ("podtrace_cpu_block_seconds_histogram", Histogram, EBPF, LATENCY_LABELS,
        "Distribution of off-CPU times: how long a thread stayed switched out before running again, in seconds");
    CPU_BLOCK_LATEST = ("podtrace_cpu_block_seconds_gauge", Gauge, EBPF, LATENCY_LABELS,
        "Most recent off-CPU time, in seconds");
    NETWORK_BYTES = ("podtrace_network_bytes_total", Counter, EBPF, "namespace, pod, container, type, process_name, direction (send, recv)",
        "Bytes sent and received by the container's sockets (cgroup_skb), by direction send/recv");
    FILESYSTEM_BYTES = ("podtrace_filesystem_bytes_total", Counter, EBPF, "namespace, pod, container, type, process_name, operation (read, write)",
        "Bytes read and written on regular files (read/write/pread/pwrite/readv/writev), by operation");
    NODE_CONNECTIONS = ("node_network_connections_total", Gauge, KERNEL, NODE_LABELS,
        "Sockets in the agent's network namespace (the node's with hostNetwork): every entry of /proc/net/tcp, tcp6, udp and udp6, in any state");
}

/// The families of a source.
pub fn of_source(source: Source) -> impl Iterator<Item = FamilyId> {
    FAMILIES.iter().enumerate().filter(move |(_, f)| f.source == source).map(|(i, _)| i)
}
