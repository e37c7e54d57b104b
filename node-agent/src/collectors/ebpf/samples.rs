//! The pure half of the eBPF source: one kernel [`Snapshot`] and a target's labels in, the
//! reference's series out (histograms with cumulative `le` buckets, `_sum`, `_count`, the
//! latest-value gauges, byte counters with `direction` or `operation`).

use podtrace_ebpf::{Histogram, HistogramSample, Op, Probe, Snapshot, type_label};
use std::collections::BTreeMap;

use crate::{
    metrics::{Labels, Sample, catalog::*},
    sample::{ByteSample, EbpfSample, LatencySample},
};

/// The families of a latency probe: histogram, latest-value gauge.
fn histogram_families(probe: Probe) -> Option<(FamilyId, FamilyId)> {
    Some(match probe {
        Probe::TcpRtt => (RTT, RTT_LATEST),
        Probe::TcpConnect => (LATENCY, LATENCY_LATEST),
        Probe::Dns => (DNS, DNS_LATEST),
        Probe::FsLatency => (FS, FS_LATEST),
        Probe::CpuBlock => (CPU_BLOCK, CPU_BLOCK_LATEST),
        Probe::FsBytes | Probe::NetworkBytes => return None,
    })
}

/// The series of one cgroup in `snap`, labelled with `labels` (namespace, pod, container, pod
/// labels) plus the reference's `type` and `process_name`. With `process_name` false the process
/// names are summed away (the profile's `labels.processName`).
pub fn samples(
    snap: &Snapshot,
    cgroup_id: u64,
    labels: &Labels,
    process_name: bool,
) -> Vec<Sample> {
    let name = |n: &str| if process_name { n.to_owned() } else { String::new() };
    // (probe, op, process) → summed histogram; latest from the series seen last.
    let mut hists: BTreeMap<(Probe, Op, String), Histogram> = BTreeMap::new();
    for HistogramSample { series, histogram } in
        snap.histograms.iter().filter(|h| h.series.cgroup_id == cgroup_id)
    {
        hists
            .entry((series.probe, series.op, name(&series.process_name)))
            .or_default()
            .merge(histogram);
    }
    let mut out = Vec::new();
    for ((probe, op, process), h) in &hists {
        let Some((hist, latest)) = histogram_families(*probe) else { continue };
        let mut base = labels.clone();
        base.push("type", type_label(*probe, *op));
        if process_name {
            base.push("process_name", process);
        }
        for (le, cumulative) in h.cumulative() {
            let mut l = base.clone();
            l.push("le", &le.to_string());
            out.push(Sample::histogram(hist, "_bucket", l, cumulative as f64));
        }
        let mut inf = base.clone();
        inf.push("le", "+Inf");
        out.push(Sample::histogram(hist, "_bucket", inf, h.count as f64));
        out.push(Sample::histogram(hist, "_sum", base.clone(), h.sum_seconds()));
        out.push(Sample::histogram(hist, "_count", base.clone(), h.count as f64));
        if *probe == Probe::FsLatency {
            out.push(Sample::new(FS_COUNT, base.clone(), h.count as f64));
        }
        out.push(Sample::new(latest, base, h.latest_seconds()));
    }
    let mut counters: BTreeMap<(Probe, Op, String), u64> = BTreeMap::new();
    for c in snap.counters.iter().filter(|c| c.series.cgroup_id == cgroup_id) {
        *counters
            .entry((c.series.probe, c.series.op, name(&c.series.process_name)))
            .or_default() += c.bytes;
    }
    for ((probe, op, process), bytes) in counters {
        let (family, key) = match probe {
            Probe::NetworkBytes => (NETWORK_BYTES, "direction"),
            Probe::FsBytes => (FILESYSTEM_BYTES, "operation"),
            _ => continue,
        };
        let mut l = labels.clone();
        l.push("type", type_label(probe, op));
        if process_name {
            l.push("process_name", &process);
        }
        l.push(key, op.as_str());
        out.push(Sample::new(family, l, bytes as f64));
    }
    out
}

/// The series of one cgroup in `snap` in brief, for the push messages: per latency probe and
/// type the count, sum and latest value, per byte counter and direction or operation its bytes,
/// summed over the process names; only the probes `wanted` says (their sources enabled).
pub fn summary(snap: &Snapshot, cgroup_id: u64, wanted: impl Fn(Probe) -> bool) -> EbpfSample {
    let mut hists: BTreeMap<(Probe, Op), Histogram> = BTreeMap::new();
    for h in snap.histograms.iter().filter(|h| h.series.cgroup_id == cgroup_id) {
        if wanted(h.series.probe) {
            hists.entry((h.series.probe, h.series.op)).or_default().merge(&h.histogram);
        }
    }
    let mut counters: BTreeMap<(Probe, Op), u64> = BTreeMap::new();
    for c in snap.counters.iter().filter(|c| c.series.cgroup_id == cgroup_id) {
        if wanted(c.series.probe) {
            *counters.entry((c.series.probe, c.series.op)).or_default() += c.bytes;
        }
    }
    EbpfSample {
        latencies: hists
            .into_iter()
            .map(|((probe, op), h)| LatencySample {
                probe: probe.name(),
                kind: type_label(probe, op),
                count: h.count,
                sum_seconds: h.sum_seconds(),
                latest_seconds: h.latest_seconds(),
            })
            .collect(),
        bytes: counters
            .into_iter()
            .map(|((probe, op), bytes)| {
                let network = probe == Probe::NetworkBytes;
                ByteSample {
                    probe: probe.name(),
                    direction: network.then_some(op.as_str()),
                    operation: (!network).then_some(op.as_str()),
                    bytes,
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::catalog::FAMILIES;
    use podtrace_ebpf::{CounterSample, Series};

    fn series(cgroup_id: u64, probe: Probe, op: Op, comm: &str) -> Series {
        Series { cgroup_id, probe, op, process_name: comm.into() }
    }

    fn hist(samples_ns: &[u64]) -> Histogram {
        let mut h = Histogram::default();
        for &ns in samples_ns {
            h.buckets[podtrace_ebpf::bucket_index(ns)] += 1;
            h.count += 1;
            h.sum_ns += ns;
            h.latest_ns = ns;
        }
        h
    }

    fn lines(samples: &[Sample]) -> Vec<String> {
        samples
            .iter()
            .map(|s| {
                format!(
                    "{}{}{{{}}} {}",
                    FAMILIES[s.family].name,
                    s.suffix,
                    s.labels.as_str(),
                    s.value
                )
            })
            .collect()
    }

    fn snap() -> Snapshot {
        Snapshot {
            histograms: vec![
                HistogramSample {
                    series: series(7, Probe::Dns, Op::None, "curl"),
                    histogram: hist(&[150_000, 10_000_000]),
                },
                HistogramSample {
                    series: series(7, Probe::Dns, Op::None, "dig"),
                    histogram: hist(&[12_000_000]),
                },
                HistogramSample {
                    series: series(7, Probe::FsLatency, Op::Fsync, "db"),
                    histogram: hist(&[2_000_000]),
                },
                HistogramSample {
                    series: series(8, Probe::Dns, Op::None, "other-pod"),
                    histogram: hist(&[1]),
                },
            ],
            counters: vec![
                CounterSample {
                    series: series(7, Probe::NetworkBytes, Op::Send, "curl"),
                    bytes: 1500,
                    events: 2,
                },
                CounterSample {
                    series: series(7, Probe::FsBytes, Op::Write, "db"),
                    bytes: 4096,
                    events: 1,
                },
            ],
            ..Default::default()
        }
    }

    fn pod() -> Labels {
        let mut l = Labels::default();
        l.push("namespace", "shop").push("pod", "api-0").push("container", "api");
        l
    }

    #[test]
    fn histograms_become_cumulative_buckets_with_sum_count_and_latest() {
        let out = lines(&samples(&snap(), 7, &pod(), true));
        let base = r#"namespace="shop",pod="api-0",container="api",type="DNS",process_name="curl""#;
        // 150 µs falls in le=0.0002 (cumulative 1), 10 ms in le=0.0128 (cumulative 2).
        assert!(out.contains(&format!(
            "podtrace_dns_latency_seconds_histogram_bucket{{{base},le=\"0.0001\"}} 0"
        )));
        assert!(out.contains(&format!(
            "podtrace_dns_latency_seconds_histogram_bucket{{{base},le=\"0.0002\"}} 1"
        )));
        assert!(out.contains(&format!(
            "podtrace_dns_latency_seconds_histogram_bucket{{{base},le=\"0.0128\"}} 2"
        )));
        assert!(out.contains(&format!(
            "podtrace_dns_latency_seconds_histogram_bucket{{{base},le=\"+Inf\"}} 2"
        )));
        assert!(out.contains(&format!("podtrace_dns_latency_seconds_histogram_count{{{base}}} 2")));
        assert!(
            out.contains(&format!("podtrace_dns_latency_seconds_histogram_sum{{{base}}} 0.01015"))
        );
        assert!(out.contains(&format!("podtrace_dns_latency_seconds_gauge{{{base}}} 0.01")));
        // 20 finite buckets + Inf + sum + count + latest, per series.
        assert_eq!(
            out.iter()
                .filter(|l| l.contains("process_name=\"curl\"") && l.starts_with("podtrace_dns"))
                .count(),
            24
        );
    }

    #[test]
    fn other_cgroups_are_not_mixed_in() {
        let out = lines(&samples(&snap(), 7, &pod(), true));
        assert!(!out.iter().any(|l| l.contains("other-pod")));
        assert!(lines(&samples(&snap(), 9, &pod(), true)).is_empty());
    }

    #[test]
    fn fs_latency_carries_its_type_and_the_reference_count_alias() {
        let out = lines(&samples(&snap(), 7, &pod(), true));
        let base = r#"namespace="shop",pod="api-0",container="api",type="fsync",process_name="db""#;
        assert!(out.contains(&format!("podtrace_fs_latency_seconds_histogram_count{{{base}}} 1")));
        assert!(out.contains(&format!("podtrace_fs_latency_seconds_count{{{base}}} 1")));
    }

    #[test]
    fn byte_counters_carry_direction_and_operation() {
        let out = lines(&samples(&snap(), 7, &pod(), true));
        assert!(out.contains(&r#"podtrace_network_bytes_total{namespace="shop",pod="api-0",container="api",type="NET",process_name="curl",direction="send"} 1500"#.to_string()));
        assert!(out.contains(&r#"podtrace_filesystem_bytes_total{namespace="shop",pod="api-0",container="api",type="FS",process_name="db",operation="write"} 4096"#.to_string()));
    }

    #[test]
    fn the_summary_sums_process_names_and_keeps_only_the_wanted_probes() {
        let all = summary(&snap(), 7, |_| true);
        assert_eq!(
            all.latencies,
            [
                LatencySample {
                    probe: "dns",
                    kind: "DNS",
                    count: 3,
                    sum_seconds: 0.02215,
                    latest_seconds: 0.012
                },
                LatencySample {
                    probe: "fsLatency",
                    kind: "fsync",
                    count: 1,
                    sum_seconds: 0.002,
                    latest_seconds: 0.002
                },
            ]
        );
        assert_eq!(
            all.bytes,
            [
                ByteSample {
                    probe: "fsBytes",
                    direction: None,
                    operation: Some("write"),
                    bytes: 4096
                },
                ByteSample {
                    probe: "networkBytes",
                    direction: Some("send"),
                    operation: None,
                    bytes: 1500
                },
            ]
        );
        let net_only = summary(&snap(), 7, |p| matches!(p, Probe::Dns | Probe::NetworkBytes));
        assert_eq!(net_only.latencies.len(), 1);
        assert_eq!(net_only.bytes.len(), 1);
        assert!(summary(&snap(), 9, |_| true).is_empty());
    }

    #[test]
    fn without_process_names_the_processes_are_summed() {
        let out = lines(&samples(&snap(), 7, &pod(), false));
        assert!(!out.iter().any(|l| l.contains("process_name")));
        let base = r#"namespace="shop",pod="api-0",container="api",type="DNS""#;
        assert!(out.contains(&format!("podtrace_dns_latency_seconds_histogram_count{{{base}}} 3")));
        assert!(out.contains(&format!("podtrace_dns_latency_seconds_gauge{{{base}}} 0.012")));
    }
}
