//! The `top` table, shared by `podtrace-agent top` (one agent's `/metrics`) and
//! `kubectl podtrace top` (every agent's, through the API server's pod proxy): the rows per pod
//! and container read from the exposition text, and the table rendered from them. Pure: the
//! callers fetch the text.
//!
//! ```text
//!  /metrics text ─► exposition::parse_line ─► rows(): Key (namespace, pod, container) ─► Row
//!                                                      Row.latency: histogram::Histogram per Latency
//!  rows now + rows of the previous refresh ─► render(): rates and latency quantiles per refresh
//! ```
//!
//! Columns: CPU % of the CPU limit (of one CPU without a limit: the processes' sum), memory % of
//! the limit, memory, the highest alert level, network receive/transmit bytes per second
//! (between two refreshes), processes, and p50/p99 of the eBPF latencies: TCP connect, TCP RTT,
//! DNS, file system (read, write and fsync together) and off-CPU time.

pub mod exposition;
pub mod histogram;

use crate::catalog::{self, FAMILIES};
use histogram::Histogram;
use std::{collections::BTreeMap, fmt::Write};

pub use exposition::parse_line;

/// The eBPF latency distributions `top` shows, in column order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Latency {
    /// TCP connect (SYN_SENT to ESTABLISHED), probe tcpConnect.
    Connect,
    /// TCP smoothed round-trip time, probe tcpRtt.
    Rtt,
    /// DNS query to response, probe dns.
    Dns,
    /// File-system read, write and fsync on regular files, probe fsLatency.
    Fs,
    /// Time threads stayed switched out, probe cpuBlock.
    OffCpu,
}

impl Latency {
    /// Every latency, in column order.
    pub const ALL: [Latency; 5] =
        [Latency::Connect, Latency::Rtt, Latency::Dns, Latency::Fs, Latency::OffCpu];

    /// The histogram family it is read from (see `docs/metrics.md`).
    pub fn family(self) -> &'static str {
        FAMILIES[match self {
            Latency::Connect => catalog::LATENCY,
            Latency::Rtt => catalog::RTT,
            Latency::Dns => catalog::DNS,
            Latency::Fs => catalog::FS,
            Latency::OffCpu => catalog::CPU_BLOCK,
        }]
        .name
    }

    /// The column header.
    pub fn header(self) -> &'static str {
        match self {
            Latency::Connect => "CONNECT p50/p99",
            Latency::Rtt => "RTT p50/p99",
            Latency::Dns => "DNS p50/p99",
            Latency::Fs => "FS p50/p99",
            Latency::OffCpu => "OFFCPU p50/p99",
        }
    }

    /// The latency whose histogram has `_bucket` lines named `bucket`.
    fn of_bucket(bucket: &str) -> Option<Latency> {
        let family = bucket.strip_suffix("_bucket")?;
        Latency::ALL.into_iter().find(|l| l.family() == family)
    }
}

/// One row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    /// CPU utilization of the limit, or the processes' CPU % without one.
    pub cpu_percent: Option<f64>,
    /// Memory utilization of the limit.
    pub memory_percent: Option<f64>,
    /// Memory bytes.
    pub memory_bytes: Option<f64>,
    /// Highest alert level over the resources.
    pub alert: u8,
    /// Network bytes received (cumulative, largest over the processes).
    pub rx: f64,
    /// Network bytes transmitted.
    pub tx: f64,
    /// Bytes received by the container's sockets as the networkBytes eBPF probe counts them
    /// (loopback included).
    pub ebpf_rx: f64,
    /// Bytes sent, as the networkBytes probe counts them.
    pub ebpf_tx: f64,
    /// Processes seen.
    pub processes: usize,
    /// Sum of the processes' CPU %.
    pub process_cpu: f64,
    /// The eBPF latency histograms of the container, each summed over its series (process
    /// names, and fs operation types). Absent when the probe exports none for it.
    pub latency: BTreeMap<Latency, Histogram>,
}

/// (namespace, pod, container).
pub type Key = (String, String, String);

/// The rows of a `/metrics` text.
pub fn rows(text: &str) -> BTreeMap<Key, Row> {
    let mut out: BTreeMap<Key, Row> = BTreeMap::new();
    for (name, labels, value) in text.lines().filter_map(parse_line) {
        let (Some(ns), Some(pod), Some(c)) =
            (labels.get("namespace"), labels.get("pod"), labels.get("container"))
        else {
            continue;
        };
        let row = out.entry((ns.clone(), pod.clone(), c.clone())).or_default();
        let resource = labels.get("resource_type").map(String::as_str);
        match (name, resource) {
            ("podtrace_resource_utilization_percent", Some("cpu")) => row.cpu_percent = Some(value),
            ("podtrace_resource_utilization_percent", Some("memory")) => {
                row.memory_percent = Some(value)
            }
            ("podtrace_resource_usage_bytes", Some("memory")) => row.memory_bytes = Some(value),
            ("podtrace_resource_alert_level", _) => row.alert = row.alert.max(value as u8),
            ("podtrace_process_network_receive_bytes_total", _) => row.rx = row.rx.max(value),
            ("podtrace_process_network_transmit_bytes_total", _) => row.tx = row.tx.max(value),
            ("podtrace_network_bytes_total", _) => {
                match labels.get("direction").map(String::as_str) {
                    Some("recv") => row.ebpf_rx += value,
                    Some("send") => row.ebpf_tx += value,
                    _ => {}
                }
            }
            ("podtrace_process_uptime_seconds", _) => row.processes += 1,
            ("podtrace_process_cpu_usage_percent", _) => row.process_cpu += value,
            (bucket, _) => {
                let le = labels.get("le").and_then(|le| le.parse::<f64>().ok());
                if let (Some(latency), Some(le)) = (Latency::of_bucket(bucket), le) {
                    row.latency.entry(latency).or_default().add(le, value);
                }
            }
        }
    }
    // The eBPF counters see every socket of the cgroup, loopback included, where /proc's
    // net/dev sees the namespace's interfaces but lo: prefer them when the probe runs.
    for row in out.values_mut() {
        if row.ebpf_rx + row.ebpf_tx > 0.0 {
            (row.rx, row.tx) = (row.ebpf_rx, row.ebpf_tx);
        }
    }
    out
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

fn bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1}{}", UNITS[u])
}

/// A duration in seconds, short: `85µs`, `1.2ms`, `3.40s`.
pub fn seconds(v: f64) -> String {
    if v < 0.001 {
        format!("{:.0}µs", v * 1e6)
    } else if v < 1.0 {
        format!("{:.1}ms", v * 1e3)
    } else {
        format!("{v:.2}s")
    }
}

/// `p50/p99` of a histogram, `-` without observations.
fn quantiles(h: &Histogram) -> String {
    match (h.quantile(0.5), h.quantile(0.99)) {
        (Some(p50), Some(p99)) => format!("{}/{}", seconds(p50), seconds(p99)),
        _ => "-".into(),
    }
}

/// The header of [`render`]'s table.
fn header() -> String {
    let mut s = format!(
        "{:<16} {:<24} {:<16} {:>7} {:>7} {:>10} {:>5} {:>11} {:>11} {:>5}",
        "NAMESPACE",
        "POD",
        "CONTAINER",
        "CPU%",
        "MEM%",
        "MEM",
        "ALERT",
        "NET RX/s",
        "NET TX/s",
        "PROCS"
    );
    for l in Latency::ALL {
        let _ = write!(s, " {:>15}", l.header());
    }
    s
}

/// Renders the table. `previous` (the rows of the last refresh and the seconds since) gives
/// the network rates, and the latency quantiles over that window; without it (the first
/// screen, `--once`) the quantiles cover everything since the agent started.
pub fn render(now: &BTreeMap<Key, Row>, previous: Option<(&BTreeMap<Key, Row>, f64)>) -> String {
    let mut s = header();
    s.push('\n');
    for (key, r) in now {
        let before = previous.and_then(|(p, dt)| Some((p.get(key)?, dt)));
        let rate = |f: fn(&Row) -> f64| match before {
            Some((p, dt)) if dt > 0.0 => bytes(((f(r) - f(p)) / dt).max(0.0)),
            _ => "-".into(),
        };
        let cpu = r.cpu_percent.or((r.processes > 0).then_some(r.process_cpu));
        let _ = write!(
            s,
            "{:<16} {:<24} {:<16} {:>7} {:>7} {:>10} {:>5} {:>11} {:>11} {:>5}",
            key.0,
            key.1,
            key.2,
            pct(cpu),
            pct(r.memory_percent),
            r.memory_bytes.map_or("-".into(), bytes),
            ["ok", "WARN", "CRIT", "EMERG"][r.alert.min(3) as usize],
            rate(|r| r.rx),
            rate(|r| r.tx),
            r.processes
        );
        for l in Latency::ALL {
            let cell = match (r.latency.get(&l), before.and_then(|(p, _)| p.latency.get(&l))) {
                (Some(h), Some(earlier)) => quantiles(&h.since(earlier)),
                (Some(h), None) => quantiles(h),
                (None, _) => "-".into(),
            };
            let _ = write!(s, " {cell:>15}");
        }
        s.push('\n');
    }
    if now.is_empty() {
        s.push_str("(no targets yet)\n");
    }
    s
}

#[cfg(test)]
mod tests;
