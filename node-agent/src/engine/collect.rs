//! One tick's collection, one function per metric source. Each reads its files for the targets
//! that are due, hands the pure conversion's samples to the store under the pod's budget, counts
//! its errors (one target's error never stops the others) and says how long it took.
//!
//! ```text
//!  kernel   (node)        /proc/stat, entropy, /proc/net ─► node_*            ─► KernelSample
//!  resource (per target)  cgroup files                   ─► podtrace_resource_*
//!  process  (per target)  /proc/<pid> of its processes   ─► podtrace_process_* ─► TargetSample
//!  net, fs, cpu (due targets) one snapshot of the kernel maps ─► podtrace_{rtt,dns,fs,…}
//! ```

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use crate::{
    collectors::{
        ebpf::{self, EbpfSource},
        kernel,
        process::{self, NetDevCache, ProcessCollector},
        resource::{self, GroupFiles, LIMITS_REFRESH, Reading},
    },
    gaps::Gap,
    metrics::{
        Labels, Sample, Sources, Store, TargetKey, agent::AgentMetrics, catalog::FAMILIES,
        sources::Source,
    },
    sample::{
        AggregatedMetrics, EbpfSample, History, KernelSample, ProcessMetrics, ResourceSample,
        TargetSample, record,
    },
    targets::Target,
};

/// What the engine keeps of one target between collections.
pub(super) struct TargetState {
    pub target: Target,
    pub next_due: Instant,
    /// The last resource reading and when it was taken (for rates).
    previous: Option<(Instant, Reading)>,
    /// When the limits in `previous` were read.
    limits_at: Option<Instant>,
    pub files: GroupFiles,
    processes: ProcessCollector,
    /// The container's summed samples, for the push messages' aggregates.
    history: History,
    /// Series dropped for the pod's budget at the last collection.
    pub dropped: usize,
    /// What its last process collection was refused (left out of its series).
    pub gaps: BTreeSet<Gap>,
    /// This interval's series for the push exporters (only with [`Tick::keep_series`]).
    pub series: Vec<Sample>,
}

impl TargetState {
    pub fn new(target: Target, now: Instant) -> Self {
        Self {
            target,
            next_due: now,
            previous: None,
            limits_at: None,
            files: GroupFiles::default(),
            processes: ProcessCollector::default(),
            history: History::default(),
            dropped: 0,
            gaps: BTreeSet::new(),
            series: Vec::new(),
        }
    }

    /// The processes of the target: its own pid list (standalone process selectors), else its
    /// cgroup's `cgroup.procs`.
    pub fn pids(&mut self) -> std::io::Result<Vec<u32>> {
        match &self.target.pids {
            Some(p) => Ok(p.clone()),
            None => self.files.pids(&self.target.cgroup),
        }
    }
}

/// What every collection of one tick shares.
pub(super) struct Tick<'a> {
    pub store: &'a Store,
    pub metrics: &'a AgentMetrics,
    pub proc_root: &'a Path,
    pub now: Instant,
    pub wall: SystemTime,
    /// Whether a push exporter wants the series themselves (OTLP): each target keeps a copy.
    pub keep_series: bool,
}

/// Per-source time spent over the due targets of one tick.
#[derive(Default)]
pub(super) struct Spent {
    pub resource: Duration,
    pub process: Duration,
}

impl Tick<'_> {
    /// Stores what `source` produced for `t` under its pod's budget; returns the lines dropped
    /// for the budget. A profile with `export.prometheus: false` keeps its pods off `/metrics`
    /// (their samples still go to the push exporters it enables): nothing is stored, and what
    /// an earlier profile stored is removed.
    /// With [`Tick::keep_series`] the target keeps a copy for the push exporters, whatever
    /// `export.prometheus` says.
    fn store_for(&self, state: &mut TargetState, source: Source, samples: Vec<Sample>) -> usize {
        if self.keep_series {
            state.series.extend(samples.iter().cloned());
        }
        let t = &state.target;
        let samples = if t.profile.export.prometheus { samples } else { Vec::new() };
        let dropped = self.store.replace(source, &t.key, samples, Some(t.budget()));
        state.dropped += dropped;
        dropped
    }

    /// The node's kernel counters (`kernel`).
    pub fn kernel(&self) -> Option<KernelSample> {
        let started = Instant::now();
        let result = match kernel::read(self.proc_root, self.wall) {
            Ok(reading) => {
                let samples = kernel::samples(&reading);
                self.store.replace(Source::Kernel, &TargetKey::default(), samples, None);
                Some(reading)
            }
            Err(e) => {
                tracing::warn!(error = %e, "kernel collector failed");
                self.metrics.error(Source::Kernel.name(), e.reason());
                None
            }
        };
        self.metrics.observe(Source::Kernel.name(), started.elapsed());
        result
    }

    /// A target's cgroup limits and usage (`resource`); returns the memory limit read, which
    /// the processes' memory percent reuses, and the resources for the push exporters.
    pub fn resource(
        &self,
        state: &mut TargetState,
        labels: &Labels,
    ) -> (Option<u64>, BTreeMap<&'static str, ResourceSample>) {
        let now = self.now;
        let t = &state.target;
        let fresh = state.limits_at.filter(|at| now.duration_since(*at) < LIMITS_REFRESH);
        let limits = fresh.and(state.previous.as_ref().map(|(_, r)| r));
        match resource::read(&t.cgroup, &t.profile.collect, &mut state.files, limits) {
            Ok(reading) => {
                if limits.is_none() {
                    state.limits_at = Some(now);
                }
                let prev = state
                    .previous
                    .as_ref()
                    .map(|(at, r)| (r, now.duration_since(*at).as_secs_f64()));
                let summary = resource::summary(&reading, prev, &t.profile.resource_limits);
                let samples = resource::samples_of(labels, &summary);
                self.store_for(state, Source::Resource, samples);
                state.previous = Some((now, reading));
                (reading.memory.and_then(|m| m.1), summary)
            }
            Err(e) => {
                tracing::debug!(target = ?t.key, error = %e, "resource collector failed");
                self.metrics.error(Source::Resource.name(), e.reason());
                (None, BTreeMap::new())
            }
        }
    }

    /// A target's processes (`process`), and the container's sample for the push exporters.
    /// `memory_base` is what memory percent is relative to (none known: no percent); `uptime` the
    /// node's seconds since boot; at most `max_processes` processes get series of their own.
    pub fn process(
        &self,
        state: &mut TargetState,
        labels: &Labels,
        net: &mut NetDevCache,
        (uptime, memory_base, max_processes): (f64, Option<u64>, usize),
    ) -> Option<Vec<ProcessMetrics>> {
        let pids = match state.pids() {
            Ok(pids) => pids,
            Err(source) => {
                let t = &state.target;
                let e = crate::Error::Read { path: t.cgroup.relative.clone().into(), source };
                tracing::debug!(target = ?t.key, error = %e, "listing processes failed");
                self.metrics.error(Source::Process.name(), e.reason());
                return None;
            }
        };
        let raws: Vec<_> = pids
            .into_iter()
            .filter_map(|p| {
                let collect = &state.target.profile.collect;
                Some((p, state.processes.read_raw(self.proc_root, p, net, collect)?))
            })
            .collect();
        let t = &state.target;
        let history = t.profile.history.size.max(0) as usize;
        let procs = state.processes.record(raws, self.now, self.wall, uptime, memory_base, history);
        state.gaps = procs.iter().flat_map(|p| p.denied.gaps()).collect();
        let samples = process::samples(labels, &procs, &t.profile, max_processes);
        self.store_for(state, Source::Process, samples);
        Some(procs.into_iter().map(|p| p.sample).collect())
    }

    /// The eBPF series of the due targets from one snapshot of the kernel maps, stored under
    /// the source of each probe family (`net`, `fs`, `cpu`) that `sources` enables; returns the
    /// targets' summaries for the push exporters.
    pub fn ebpf(
        &self,
        source: &mut EbpfSource,
        due: &[TargetKey],
        targets: &mut BTreeMap<TargetKey, TargetState>,
        sources: &Sources,
    ) -> BTreeMap<TargetKey, EbpfSample> {
        let mut summaries = BTreeMap::new();
        let Some(snap) = source.snapshot() else { return summaries };
        let started = Instant::now();
        let wanted = |p| sources.enabled(Source::of_probe(ebpf::crd::probe(p)));
        for key in due {
            let Some(state) = targets.get_mut(key) else { continue };
            let Some(id) = source.key_of(&state.target.cgroup) else { continue };
            let t = &state.target;
            let samples = ebpf::samples(&snap, id, &t.labels(), t.profile.labels.process_name);
            let mut by_source: BTreeMap<Source, Vec<Sample>> =
                Source::EBPF.into_iter().map(|s| (s, Vec::new())).collect();
            for s in samples {
                by_source.entry(FAMILIES[s.family].source).or_default().push(s);
            }
            for (family, samples) in by_source {
                if sources.enabled(family) {
                    self.store_for(state, family, samples);
                }
            }
            summaries.insert(key.clone(), ebpf::summary(&snap, id, wanted));
        }
        self.metrics.observe("ebpf", started.elapsed());
        summaries
    }
}

/// The push exporters' sample of a container from what its sources measured this interval: its
/// processes summed (appended to its history, for the aggregates) when the process source ran,
/// and its resources. The eBPF summary is added once the kernel maps are read.
pub(super) fn target_sample(
    state: &mut TargetState,
    node: &str,
    procs: Option<&[ProcessMetrics]>,
    resources: BTreeMap<&'static str, ResourceSample>,
    wall: SystemTime,
) -> TargetSample {
    let t = &state.target;
    let history = t.profile.history.size.max(0) as usize;
    let metrics = procs.map(|procs| ProcessMetrics::sum(procs, wall));
    if let Some(m) = &metrics
        && history > 0
    {
        record(&mut state.history, m, history);
    }
    let aggregated =
        metrics.as_ref().map(|_| AggregatedMetrics::of(&state.history).unwrap_or_default());
    TargetSample {
        node: node.to_owned(),
        namespace: t.key.namespace.clone(),
        pod: t.key.pod.clone(),
        pod_uid: t.uid.clone(),
        container: t.key.container.clone(),
        timestamp: wall,
        metrics,
        aggregated,
        resources,
        ebpf: EbpfSample::default(),
        export: t.profile.export.clone(),
        unavailable: state.gaps.iter().filter(|g| g.source == "process").map(|g| g.data).collect(),
        // Filled once the eBPF series are in (see `Engine::tick`).
        series: Vec::new(),
    }
}
