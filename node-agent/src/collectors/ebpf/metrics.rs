//! The eBPF source's self-metrics: `podtrace_agent_probe_info`, `podtrace_agent_ebpf_filter_info`
//! and `podtrace_agent_bpf_*` (program runs and time, drops).
//!
//! Kernel values are cumulative since a family was loaded; the counters here add what grew
//! since the last snapshot, and a family loaded anew (a probe disabled and enabled again)
//! restarts from zero.

use podtrace_ebpf::{Filter, ProbeState, ProbeStatus, Snapshot};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use std::collections::BTreeMap;

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

/// The eBPF self-metrics, and the kernel values already counted.
#[derive(Default)]
pub struct EbpfMetrics {
    probe_info: Family<ProbeInfoLabels, Gauge>,
    filter_info: Family<FilterLabels, Gauge>,
    runs: Family<ProgramLabels, Counter>,
    seconds: Family<ProgramLabels, Counter<f64>>,
    stats_enabled: Gauge,
    drops: Family<DropLabels, Counter>,
    /// Cgroups the packet programs are attached at.
    pub packet_cgroups: Gauge,
    /// Cumulative kernel values already added to the counters, by key.
    seen: BTreeMap<String, (u64, f64)>,
}

impl EbpfMetrics {
    /// Registers the metrics and sets the filter's info series (`forks`: see [`FilterLabels`]).
    pub fn register(registry: &mut Registry, filter: Filter, forks: &str) -> Self {
        let metrics = Self::default();
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
        r.register(
            "bpf_packet_cgroups",
            "Cgroups the packet programs (networkBytes, dns, tcpRtt on cgroup_skb) are attached at: one per tracked cgroup that asks for one of them (a tracked cgroup inside another shares its link); the packets of other cgroups run no podtrace program",
            metrics.packet_cgroups.clone(),
        );
        metrics
    }

    /// One `probe_info` series per probe, with its method, `unavailable` or `disabled`.
    pub fn publish_statuses(&self, statuses: &[ProbeStatus]) {
        self.probe_info.clear();
        for s in statuses {
            let method = match (s.state, s.method) {
                (ProbeState::Attached, Some(m)) => m.name(),
                (ProbeState::Disabled, _) => "disabled",
                _ => "unavailable",
            };
            let labels = ProbeInfoLabels { probe: s.probe.name().into(), method: method.into() };
            self.probe_info.get_or_create(&labels).set(1);
        }
    }

    /// Adds what the programs' run counters and the drop counters grew by since the last
    /// snapshot.
    pub fn record(&mut self, snap: &Snapshot, stats_active: bool) {
        self.stats_enabled.set(i64::from(stats_active));
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
                method: p.method.name().into(),
            };
            let (runs, secs) = self.seen.get(&key).copied().unwrap_or_default();
            let now_secs = p.run_time.as_secs_f64();
            // A program reloaded (probe disabled and enabled again) restarts from zero.
            let (d_runs, d_secs) = if p.run_count >= runs {
                (p.run_count - runs, (now_secs - secs).max(0.0))
            } else {
                (p.run_count, now_secs)
            };
            self.runs.get_or_create(&labels).inc_by(d_runs);
            self.seconds.get_or_create(&labels).inc_by(d_secs);
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
            self.drops.get_or_create(&DropLabels { reason: reason.into() }).inc_by(delta);
        }
        self.seen.insert(key.into(), (cumulative, 0.0));
    }
}
