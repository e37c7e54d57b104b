//! The one sample vocabulary of the agent: what the collectors measure and what the push
//! exporters send, in the shapes of the monitoring-profiles reference.
//!
//! ```text
//!  ProcessMetrics     one process, or a container (its processes summed): the reference's
//!                     "Metrics Structure"
//!  AggregatedMetrics  over a bounded history of ProcessMetrics: "Aggregated Metrics Structure"
//!  TargetSample       a container's ProcessMetrics + AggregatedMetrics, ResourceSample per
//!                     resource type, EbpfSample (latencies, bytes), identity, exporters,
//!                     and (for OTLP) its /metrics series
//!  KernelSample       the node's kernel counters
//!  PushBatch          one collection: [TargetSample] + KernelSample when read ─► exporters
//! ```

use crate::metrics::Sample;
use podtrace_api::profile::ExportSettings;
use serde::{Deserialize, Serialize};
use std::{
    collections::{BTreeMap, VecDeque},
    time::SystemTime,
};

/// One collection's samples: the targets that were due plus, when they were read in this
/// collection, the node's kernel counters.
#[derive(Debug, Clone, PartialEq)]
pub struct PushBatch {
    /// The node's kernel counters, present only in the batch of the collection that read them
    /// (every node `INTERVAL`): targets with a shorter interval make batches in between, which
    /// must not send the same counters again (one NATS message and one Influx point per read).
    pub kernel: Option<KernelSample>,
    /// One entry per traced container (or process, in standalone mode).
    pub targets: Vec<TargetSample>,
}

/// The node-level counters of the kernel-metrics reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelSample {
    /// `node_context_switches_total`.
    pub context_switches_total: u64,
    /// `node_entropy_available_bits`.
    pub entropy_available_bits: u64,
    /// `node_network_connections_total`.
    pub network_connections_total: u64,
    /// When the counters were read.
    pub timestamp: SystemTime,
}

/// The samples of one traced container for one interval: what every source that ran for it
/// measured.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSample {
    /// The node the pod runs on (`proplet_id` in the MQTT message).
    pub node: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's UID (`task_id` in the MQTT message).
    pub pod_uid: String,
    /// The container's name ("" for a whole-pod target).
    pub container: String,
    /// When the container was collected.
    pub timestamp: SystemTime,
    /// The latest sample of its processes, summed (the `process` source; `None` when it is off
    /// or the processes could not be listed).
    pub metrics: Option<ProcessMetrics>,
    /// Aggregates over the container's retained history (zeros without one; `None` with
    /// `metrics`).
    pub aggregated: Option<AggregatedMetrics>,
    /// Its cgroup's limits, usage, utilization and alert levels by resource type (`memory`,
    /// `cpu`, `io`: the `resource` source).
    pub resources: BTreeMap<&'static str, ResourceSample>,
    /// The eBPF probes' latencies and byte counters (the `net`, `fs` and `cpu` sources).
    pub ebpf: EbpfSample,
    /// Which push exporters the target's effective profile enables (`prometheus` is ignored here).
    pub export: ExportSettings,
    /// What of `metrics` and `aggregated` the agent was refused, as the `data` of its
    /// [`crate::gaps::Gap`]s (`io`, `fds`, `network`; `pids`: the processes could not be
    /// listed, so neither is there): the messages leave those fields out and name them, never
    /// sending them as 0.
    pub unavailable: Vec<&'static str>,
    /// This interval's series exactly as `/metrics` shows them (before the pod's series budget),
    /// for the OTLP exporter; empty unless an exporter asks for them
    /// ([`crate::engine::Pusher::wants_series`]), so that the others pay nothing for it.
    pub series: Vec<Sample>,
}

impl TargetSample {
    /// Whether no source measured anything for it (nothing to send).
    pub fn is_empty(&self) -> bool {
        self.metrics.is_none() && self.resources.is_empty() && self.ebpf.is_empty()
    }
}

/// One resource of a container's cgroup, as the `podtrace_resource_*` series of that
/// `resource_type` carry it: `usage` and `limit` in their units (memory bytes; CPU time in
/// microseconds since the cgroup started and the quota in microseconds per period; I/O bytes
/// read plus written and the byte-rate limit per second).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ResourceSample {
    /// Usage.
    pub usage: f64,
    /// The limit, when the cgroup has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<f64>,
    /// Usage in percent of the limit (CPU and I/O from the second reading on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub utilization_percent: Option<f64>,
    /// 0 none, 1 warning, 2 critical, 3 emergency, at the profile's thresholds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_level: Option<u8>,
}

/// A container's eBPF series summed over its processes: cumulative since the probe was
/// attached, like the Prometheus histograms and counters they are read with.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EbpfSample {
    /// One entry per latency probe and type.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latencies: Vec<LatencySample>,
    /// One entry per byte counter and direction or operation.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bytes: Vec<ByteSample>,
}

impl EbpfSample {
    /// Whether no probe measured anything.
    pub fn is_empty(&self) -> bool {
        self.latencies.is_empty() && self.bytes.is_empty()
    }
}

/// A latency histogram in brief (`podtrace_rtt_seconds`, `podtrace_latency_seconds`,
/// `podtrace_dns_latency_seconds_histogram`, `podtrace_fs_latency_seconds_histogram`,
/// `podtrace_cpu_block_seconds_histogram`): its count, sum and latest value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencySample {
    /// The probe (`tcpRtt`, `tcpConnect`, `dns`, `fsLatency`, `cpuBlock`).
    pub probe: &'static str,
    /// The series' `type` label (`NET`, `DNS`, `CPU`; `read`, `write`, `fsync` for fsLatency).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Samples.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum_seconds: f64,
    /// The most recent one, in seconds.
    pub latest_seconds: f64,
}

/// A byte counter (`podtrace_network_bytes_total`, `podtrace_filesystem_bytes_total`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ByteSample {
    /// The probe (`networkBytes`, `fsBytes`).
    pub probe: &'static str,
    /// `send` or `recv` (networkBytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<&'static str>,
    /// `read` or `write` (fsBytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<&'static str>,
    /// Bytes.
    pub bytes: u64,
}

/// The reference's "Metrics Structure": one sample of a process, or of a container (its
/// processes summed), as the process collector takes it and the push messages carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessMetrics {
    /// CPU usage in percent of one CPU over the interval (0–100+).
    pub cpu_usage_percent: f64,
    /// Resident memory in bytes.
    pub memory_usage_bytes: u64,
    /// Memory in percent of the limit (or of the node's memory without a limit); absent when
    /// neither is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_usage_percent: Option<f64>,
    /// Cumulative bytes read from block devices.
    pub disk_read_bytes: u64,
    /// Cumulative bytes written to block devices.
    pub disk_write_bytes: u64,
    /// Cumulative bytes received.
    pub network_rx_bytes: u64,
    /// Cumulative bytes sent.
    pub network_tx_bytes: u64,
    /// Seconds since the target started.
    pub uptime_seconds: u64,
    /// Number of threads.
    pub thread_count: u64,
    /// Number of open file descriptors.
    pub file_descriptor_count: u64,
    /// When the sample was taken (ISO 8601, microseconds, UTC).
    #[serde(with = "rfc3339")]
    pub timestamp: SystemTime,
}

impl ProcessMetrics {
    /// The sample of a group of processes (a container, or the processes beyond the bound):
    /// CPU, memory, disk bytes, threads and descriptors add up; network counters are those of
    /// the network namespace the processes share, so the largest is taken instead of the sum;
    /// uptime is the oldest process's.
    pub fn sum<'a>(procs: impl IntoIterator<Item = &'a ProcessMetrics>, wall: SystemTime) -> Self {
        let mut s = ProcessMetrics {
            timestamp: wall,
            memory_usage_percent: Some(0.0),
            ..Default::default()
        };
        for p in procs {
            s.cpu_usage_percent += p.cpu_usage_percent;
            s.memory_usage_bytes += p.memory_usage_bytes;
            // Unknown for one process (no memory base) is unknown for the sum.
            s.memory_usage_percent =
                s.memory_usage_percent.zip(p.memory_usage_percent).map(|(a, b)| a + b);
            s.disk_read_bytes += p.disk_read_bytes;
            s.disk_write_bytes += p.disk_write_bytes;
            s.network_rx_bytes = s.network_rx_bytes.max(p.network_rx_bytes);
            s.network_tx_bytes = s.network_tx_bytes.max(p.network_tx_bytes);
            s.uptime_seconds = s.uptime_seconds.max(p.uptime_seconds);
            s.thread_count += p.thread_count;
            s.file_descriptor_count += p.file_descriptor_count;
        }
        s
    }
}

impl Default for ProcessMetrics {
    /// Zeros at the Unix epoch (`SystemTime` has no default).
    fn default() -> Self {
        Self {
            cpu_usage_percent: 0.0,
            memory_usage_bytes: 0,
            memory_usage_percent: None,
            disk_read_bytes: 0,
            disk_write_bytes: 0,
            network_rx_bytes: 0,
            network_tx_bytes: 0,
            uptime_seconds: 0,
            thread_count: 0,
            file_descriptor_count: 0,
            timestamp: SystemTime::UNIX_EPOCH,
        }
    }
}

/// The reference's "Aggregated Metrics Structure": aggregates over a retained history (of one
/// process, or of a container's summed samples). The totals are the growth of the cumulative
/// counters over the window (last minus first sample).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AggregatedMetrics {
    /// Mean CPU percent.
    pub avg_cpu_usage: f64,
    /// Highest CPU percent.
    pub max_cpu_usage: f64,
    /// Mean memory in bytes: exact in the `*_avg` series, an integer in the push messages (as
    /// in the reference).
    #[serde(serialize_with = "rounded")]
    pub avg_memory_usage: f64,
    /// Highest memory in bytes.
    pub max_memory_usage: u64,
    /// Bytes read over the history.
    pub total_disk_read: u64,
    /// Bytes written over the history.
    pub total_disk_write: u64,
    /// Bytes received over the history.
    pub total_network_rx: u64,
    /// Bytes sent over the history.
    pub total_network_tx: u64,
    /// Samples in the history.
    pub sample_count: u64,
}

fn rounded<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(v.round() as u64)
}

impl AggregatedMetrics {
    /// The aggregates of a history; `None` when it is empty.
    pub fn of(history: &History) -> Option<AggregatedMetrics> {
        let h = &history.0;
        let (first, last) = (h.front()?, h.back()?);
        let n = h.len() as f64;
        Some(AggregatedMetrics {
            avg_cpu_usage: h.iter().map(|s| s.cpu).sum::<f64>() / n,
            max_cpu_usage: h.iter().map(|s| s.cpu).fold(0.0, f64::max),
            avg_memory_usage: h.iter().map(|s| s.memory as f64).sum::<f64>() / n,
            max_memory_usage: h.iter().map(|s| s.memory).max().unwrap_or(0),
            total_disk_read: last.disk_read.saturating_sub(first.disk_read),
            total_disk_write: last.disk_write.saturating_sub(first.disk_write),
            total_network_rx: last.rx.saturating_sub(first.rx),
            total_network_tx: last.tx.saturating_sub(first.tx),
            sample_count: h.len() as u64,
        })
    }
}

/// What the aggregates need of one sample: 48 bytes where a whole [`ProcessMetrics`] takes 104.
/// A full history (the default 100 samples, per process and per container) was most of the
/// agent's memory per container.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Retained {
    cpu: f64,
    memory: u64,
    disk_read: u64,
    disk_write: u64,
    rx: u64,
    tx: u64,
}

/// The bounded history of one process or container, for [`AggregatedMetrics`]. Its capacity
/// never exceeds the history size (a `VecDeque` left to grow doubles to 128 for 100 samples).
#[derive(Clone, Debug, Default)]
pub struct History(VecDeque<Retained>);

impl History {
    /// Samples retained.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no sample is retained.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Appends `sample` to a history of at most `size` samples (emptied, its memory freed, with
/// size 0).
pub fn record(history: &mut History, sample: &ProcessMetrics, size: usize) {
    let h = &mut history.0;
    if size == 0 {
        *h = VecDeque::new();
        return;
    }
    while h.len() >= size {
        h.pop_front();
    }
    if h.len() == h.capacity() {
        // Doubling as a VecDeque does, but never beyond the size.
        let want = (h.capacity() * 2).max(4).min(size);
        h.reserve_exact(want - h.len());
    }
    h.push_back(Retained {
        cpu: sample.cpu_usage_percent,
        memory: sample.memory_usage_bytes,
        disk_read: sample.disk_read_bytes,
        disk_write: sample.disk_write_bytes,
        rx: sample.network_rx_bytes,
        tx: sample.network_tx_bytes,
    });
}

/// `SystemTime` as the reference's ISO 8601 text (`2025-01-15T10:35:22.123456Z`).
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
    use std::time::SystemTime;

    /// Writes `t` in UTC with microseconds, as in the reference.
    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        match jiff::Timestamp::try_from(*t) {
            Ok(ts) => s.collect_str(&format_args!("{ts:.6}")),
            Err(e) => Err(serde::ser::Error::custom(e)),
        }
    }

    /// Reads any RFC 3339 timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let ts: jiff::Timestamp = text.parse().map_err(D::Error::custom)?;
        Ok(SystemTime::from(ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(cpu: f64, mem: u64, read: u64) -> ProcessMetrics {
        ProcessMetrics {
            cpu_usage_percent: cpu,
            memory_usage_bytes: mem,
            disk_read_bytes: read,
            ..Default::default()
        }
    }

    #[test]
    fn aggregates_are_over_the_bounded_history_and_totals_are_growth() {
        let mut h = History::default();
        assert_eq!(AggregatedMetrics::of(&h), None);
        for s in [at(0.0, 1000, 0), at(25.0, 3000, 100), at(0.0, 2000, 400)] {
            record(&mut h, &s, 2);
        }
        let a = AggregatedMetrics::of(&h).unwrap();
        assert_eq!((a.sample_count, a.max_memory_usage, a.avg_memory_usage), (2, 3000, 2500.0));
        assert_eq!((a.max_cpu_usage, a.total_disk_read), (25.0, 300));
        assert!(h.0.capacity() <= 2, "the capacity is bounded by the size");
        record(&mut h, &at(1.0, 1, 1), 0);
        assert!(h.is_empty(), "history size 0 keeps nothing");
    }

    #[test]
    fn a_full_history_holds_exactly_its_size() {
        let mut h = History::default();
        for i in 0..250 {
            record(&mut h, &at(i as f64, i, i), 100);
        }
        assert_eq!((h.len(), h.0.capacity()), (100, 100));
        let a = AggregatedMetrics::of(&h).unwrap();
        // Samples 150..=249: the mean of 150..=249 is 199.5; growth 249 - 150.
        assert_eq!((a.avg_cpu_usage, a.max_cpu_usage, a.total_disk_read), (199.5, 249.0, 99));
    }

    #[test]
    fn the_average_memory_is_an_integer_in_json() {
        let a = AggregatedMetrics { avg_memory_usage: 41.6, ..Default::default() };
        assert_eq!(serde_json::to_value(&a).unwrap()["avg_memory_usage"], 42);
    }
}
