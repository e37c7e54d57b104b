//! The eBPF source: keeps the kernel programs of `podtrace-ebpf` attached to what the targets'
//! profiles ask for, keeps the tracked-cgroup map equal to the targets' cgroups, and turns one
//! snapshot of the kernel maps per collection into the reference's series.
//!
//! ```text
//!  set_targets ─► sync: set_enabled(union of probes) · track(cgroup id, index, probes) / untrack
//!  tick        ─► snapshot() once ─► samples(target) ─► Store (source "ebpf")
//!                                 └► podtrace_agent_bpf_* self-metrics
//! ```
//!
//! The conversion ([`samples`]) is pure and unit-tested; loading and reading the maps is
//! exercised by the root tests.

use std::collections::{BTreeMap, BTreeSet};

use podtrace_api::{
    nodetrace::{ProbeState, ProbeStatus},
    profile::Probe,
};
use podtrace_ebpf::{Filter, Histogram, HistogramSample, Op, ProbeConfig, Probes, Snapshot};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::metrics::{Labels, Sample, catalog::*};

/// Labels of `podtrace_agent_probe_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeInfoLabels {
    /// The probe (`tcpRtt`, `dns`, …).
    pub probe: String,
    /// The attach method (`tp_btf`, `tracepoint`, `cgroup_skb`, …), `unavailable` or `disabled`.
    pub method: String,
}

/// Labels of `podtrace_agent_ebpf_filter_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FilterLabels {
    /// `cgroup` or `process`.
    pub filter: String,
    /// How a new process of a target is seen from its start: `by_cgroup` (the cgroup filter
    /// sees it by its cgroup), or with the process filter the method of the kernel programs
    /// that follow forks (`tp_btf`, `raw_tracepoint`, `tracepoint`), `unavailable` when they
    /// could not attach (then it is seen from the agent's next listing of its target).
    pub forks: String,
}

/// Labels of the per-program overhead counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProgramLabels {
    /// Probe family (one BPF object).
    pub family: String,
    /// Program name.
    pub program: String,
    /// Attach method.
    pub method: String,
}

/// Labels of the kernel drop counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// `histograms_full`, `counters_full`, `process_names_full`, `inflight_full`,
    /// `unclosed_blocks`, `processes_full` (process filter: a forked child that did not fit in
    /// the tracked-process map) or `recursion_miss`.
    pub reason: String,
}

/// The eBPF self-metrics.
#[derive(Clone, Default)]
struct EbpfMetrics {
    probe_info: Family<ProbeInfoLabels, Gauge>,
    filter_info: Family<FilterLabels, Gauge>,
    runs: Family<ProgramLabels, Counter>,
    seconds: Family<ProgramLabels, Counter<f64>>,
    stats_enabled: Gauge,
    drops: Family<DropLabels, Counter>,
}

/// The eBPF source.
pub struct EbpfSource {
    probes: Option<Probes>,
    filter: Filter,
    /// Why nothing could be loaded at all (no BTF, no permission), for every status.
    load_error: Option<String>,
    enabled: BTreeSet<Probe>,
    /// cgroup v2 id → the index given to the kernel, and the probes it is tracked for.
    tracked: BTreeMap<u64, (u32, BTreeSet<Probe>)>,
    next_index: u32,
    metrics: EbpfMetrics,
    /// Cumulative kernel values already added to the counters, by key.
    seen: BTreeMap<String, (u64, f64)>,
}

impl EbpfSource {
    /// Loads the probe objects (none attached until a target asks) and registers the
    /// `podtrace_agent_probe_info` and `podtrace_agent_bpf_*` metrics. A kernel that loads
    /// nothing is reported in every probe's status, never fatal.
    pub fn load(mut config: ProbeConfig, registry: &mut Registry) -> Self {
        config.probes.clear();
        let filter = config.filter;
        let (probes, load_error) = match Probes::load(&config) {
            Ok((probes, _)) => (Some(probes), None),
            Err(e) => {
                tracing::error!(error = %e, "loading the eBPF probes failed; only cgroup and /proc collectors run");
                (None, Some(e.to_string()))
            }
        };
        let metrics = EbpfMetrics::default();
        let r = registry.sub_registry_with_prefix("podtrace_agent");
        r.register(
            "probe_info",
            "1 per probe with the attach method chosen on this kernel (unavailable: none loaded; disabled: no profile asks for it)",
            metrics.probe_info.clone(),
        );
        r.register(
            "ebpf_filter_info",
            "1 for the filter the eBPF programs run with: cgroup (cgroup v2 id) or process (tgids from cgroup.procs, on nodes without cgroup v2); forks: how a new process is seen from its start (by_cgroup, the method of the fork-following programs, or unavailable: from the next listing)",
            metrics.filter_info.clone(),
        );
        let forks = match probes.as_ref().map(Probes::fork_following) {
            _ if filter == Filter::Cgroup => "by_cgroup",
            Some(Some(Ok(method))) => podtrace_ebpf::method_name(method),
            _ => "unavailable",
        };
        let labels = FilterLabels { filter: filter.name().into(), forks: forks.into() };
        metrics.filter_info.get_or_create(&labels).set(1);
        r.register(
            "bpf_program_runs",
            "Runs of each eBPF program since it was loaded (bpf_stats)",
            metrics.runs.clone(),
        );
        r.register(
            "bpf_program_seconds",
            "Time spent running each eBPF program since it was loaded (bpf_stats)",
            metrics.seconds.clone(),
        );
        r.register(
            "bpf_stats_enabled",
            "1 while the kernel counts eBPF program runs (--bpf-stats, or kernel.bpf_stats_enabled set by another tool): the bpf_program counters move only then",
            metrics.stats_enabled.clone(),
        );
        r.register(
            "bpf_drops",
            "Events the eBPF programs could not record (full maps, recursion), by reason",
            metrics.drops.clone(),
        );
        let source = Self {
            probes,
            filter,
            load_error,
            enabled: BTreeSet::new(),
            tracked: BTreeMap::new(),
            next_index: 0,
            metrics,
            seen: BTreeMap::new(),
        };
        source.publish_statuses();
        source
    }

    /// Attaches the union of the targets' probes, detaches the rest, and makes the tracked
    /// cgroups those of `targets` (cgroup v2 id, probes). Errors are logged and reflected in the
    /// statuses; the other probes and cgroups are unaffected.
    pub fn sync(&mut self, targets: &[(u64, BTreeSet<Probe>)]) {
        let Some(probes) = self.probes.as_mut() else { return };
        let wanted: BTreeSet<Probe> = targets.iter().flat_map(|(_, p)| p.iter().copied()).collect();
        for probe in Probe::ALL {
            if wanted.contains(&probe) != self.enabled.contains(&probe) {
                let status = probes.set_enabled(probe, wanted.contains(&probe));
                tracing::info!(probe = probe.name(), state = ?status.state, method = ?status.method, reason = ?status.reason, "probe");
            }
        }
        self.enabled = wanted;
        let desired: BTreeMap<u64, &BTreeSet<Probe>> =
            targets.iter().map(|(id, p)| (*id, p)).collect();
        let gone: Vec<u64> =
            self.tracked.keys().filter(|id| !desired.contains_key(id)).copied().collect();
        for id in gone {
            if let Err(e) = probes.untrack(id) {
                tracing::warn!(cgroup_id = id, error = %e, "untracking a cgroup failed");
            }
            self.tracked.remove(&id);
        }
        for (id, wanted) in desired {
            if self.tracked.get(&id).is_some_and(|(_, p)| p == wanted) {
                continue;
            }
            let index = self.tracked.get(&id).map(|(i, _)| *i).unwrap_or_else(|| {
                self.next_index = self.next_index.wrapping_add(1);
                self.next_index
            });
            match probes.track(id, index, wanted.iter().copied()) {
                Ok(()) => {
                    self.tracked.insert(id, (index, wanted.clone()));
                }
                Err(e) => tracing::warn!(cgroup_id = id, error = %e, "tracking a cgroup failed"),
            }
        }
        self.publish_statuses();
    }

    /// The filter the programs run with.
    pub fn filter(&self) -> Filter {
        self.filter
    }

    /// Whether the kernel counts the programs' runs (`--bpf-stats`, or the sysctl).
    pub fn bpf_stats_active(&self) -> bool {
        self.probes.as_ref().map_or_else(podtrace_ebpf::bpf_stats_sysctl, Probes::bpf_stats_active)
    }

    /// With the process filter: makes `pids` the processes of the tracked target `key` (the
    /// engine calls it every interval from the target's cgroup.procs). A failure is logged;
    /// the processes that fit stay measured.
    pub fn set_processes(&mut self, key: u64, pids: &[u32]) {
        let Some(probes) = self.probes.as_mut() else { return };
        if self.filter != Filter::Process || !self.tracked.contains_key(&key) {
            return;
        }
        let pids: BTreeSet<u32> = pids.iter().copied().collect();
        if let Err(e) = probes.set_processes(key, &pids) {
            tracing::warn!(key, processes = pids.len(), error = %e, "tracking processes failed");
        }
    }

    /// The key of a target's cgroup in the kernel maps: its v2 id, or with the process filter
    /// [`crate::cgroup::Cgroup::process_key`]. `None`: it cannot be measured by eBPF.
    pub fn key_of(&self, cgroup: &crate::cgroup::Cgroup) -> Option<u64> {
        match self.filter {
            Filter::Cgroup => cgroup.v2_id,
            Filter::Process => cgroup.process_key(),
        }
    }

    /// One read of the kernel maps (`None` when nothing is loaded or the read failed, which is
    /// logged), and the self-metrics updated from it.
    pub fn snapshot(&mut self) -> Option<Snapshot> {
        let probes = self.probes.as_mut()?;
        if self.tracked.is_empty() {
            return None;
        }
        match probes.snapshot() {
            Ok(snap) => {
                self.record_overhead(&snap);
                Some(snap)
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the eBPF maps failed");
                None
            }
        }
    }

    /// The status of every probe, for NodeTrace status and the `podtrace.probes` health.
    pub fn statuses(&self) -> Vec<ProbeStatus> {
        match &self.probes {
            Some(p) => p
                .statuses()
                .into_iter()
                .map(|mut s| {
                    if !self.enabled.contains(&s.probe) && s.state != ProbeState::Unavailable {
                        s.state = ProbeState::Disabled;
                        s.method = None;
                    }
                    s
                })
                .collect(),
            None => Probe::ALL
                .into_iter()
                .map(|probe| ProbeStatus {
                    probe,
                    state: ProbeState::Unavailable,
                    method: None,
                    reason: self.load_error.clone(),
                })
                .collect(),
        }
    }

    fn publish_statuses(&self) {
        self.metrics.probe_info.clear();
        for s in self.statuses() {
            let method = match (s.state, s.method) {
                (ProbeState::Attached, Some(m)) => podtrace_ebpf::method_name(m),
                (ProbeState::Disabled, _) => "disabled",
                _ => "unavailable",
            };
            let labels = ProbeInfoLabels { probe: s.probe.name().into(), method: method.into() };
            self.metrics.probe_info.get_or_create(&labels).set(1);
        }
    }

    fn record_overhead(&mut self, snap: &Snapshot) {
        self.metrics.stats_enabled.set(i64::from(self.bpf_stats_active()));
        for p in &snap.programs {
            self.add_drop(&format!("recursion/{}", p.id), "recursion_miss", p.recursion_misses);
            let key = format!("prog/{}", p.id);
            if p.run_count == 0 && !self.seen.contains_key(&key) {
                // Not counted (bpf_stats off) or not run yet: no series that reads "never runs".
                continue;
            }
            let labels = ProgramLabels {
                family: p.family.into(),
                program: p.program.into(),
                method: podtrace_ebpf::method_name(p.method).into(),
            };
            let (runs, secs) = self.seen.get(&key).copied().unwrap_or_default();
            let now_secs = p.run_time.as_secs_f64();
            // A program reloaded (probe disabled and enabled again) restarts from zero.
            let (d_runs, d_secs) = if p.run_count >= runs {
                (p.run_count - runs, (now_secs - secs).max(0.0))
            } else {
                (p.run_count, now_secs)
            };
            self.metrics.runs.get_or_create(&labels).inc_by(d_runs);
            self.metrics.seconds.get_or_create(&labels).inc_by(d_secs);
            self.seen.insert(key, (p.run_count, now_secs));
        }
        let d = snap.drops;
        for (reason, value) in [
            ("histograms_full", d.histograms_full),
            ("counters_full", d.counters_full),
            ("process_names_full", d.process_names_full),
            ("inflight_full", d.inflight_full),
            ("unclosed_blocks", d.unclosed_blocks),
            ("processes_full", d.processes_full),
        ] {
            self.add_drop(reason, reason, value);
        }
    }

    fn add_drop(&mut self, key: &str, reason: &str, cumulative: u64) {
        let (before, _) = self.seen.get(key).copied().unwrap_or_default();
        let delta = if cumulative >= before { cumulative - before } else { cumulative };
        if delta > 0 {
            self.metrics.drops.get_or_create(&DropLabels { reason: reason.into() }).inc_by(delta);
        }
        self.seen.insert(key.into(), (cumulative, 0.0));
    }
}

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
        let entry = hists.entry((series.probe, series.op, name(&series.process_name))).or_default();
        for (acc, b) in entry.buckets.iter_mut().zip(histogram.buckets.iter()) {
            *acc += b;
        }
        entry.count += histogram.count;
        entry.sum_ns += histogram.sum_ns;
        // The kernel keeps no time with a latest value: merged series report the largest.
        entry.latest_ns = entry.latest_ns.max(histogram.latest_ns);
    }
    let mut out = Vec::new();
    for ((probe, op, process), h) in &hists {
        let Some((hist, latest)) = histogram_families(*probe) else { continue };
        let series = podtrace_ebpf::Series {
            cgroup_id,
            target_index: 0,
            probe: *probe,
            op: *op,
            process_name: process.clone(),
        };
        let mut base = labels.clone();
        base.push("type", series.type_label());
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
        let series = podtrace_ebpf::Series {
            cgroup_id,
            target_index: 0,
            probe,
            op,
            process_name: process.clone(),
        };
        let mut l = labels.clone();
        l.push("type", series.type_label());
        if process_name {
            l.push("process_name", &process);
        }
        l.push(key, op.as_str());
        out.push(Sample::new(family, l, bytes as f64));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use podtrace_ebpf::{CounterSample, Series};

    fn series(cgroup_id: u64, probe: Probe, op: Op, comm: &str) -> Series {
        Series { cgroup_id, target_index: 1, probe, op, process_name: comm.into() }
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
    fn without_process_names_the_processes_are_summed() {
        let out = lines(&samples(&snap(), 7, &pod(), false));
        assert!(!out.iter().any(|l| l.contains("process_name")));
        let base = r#"namespace="shop",pod="api-0",container="api",type="DNS""#;
        assert!(out.contains(&format!("podtrace_dns_latency_seconds_histogram_count{{{base}}} 3")));
        assert!(out.contains(&format!("podtrace_dns_latency_seconds_gauge{{{base}}} 0.012")));
    }
}
