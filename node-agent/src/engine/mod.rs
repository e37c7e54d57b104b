//! The collection engine: keeps the resolved targets, runs each metric source for the targets
//! that are due (each at its profile's interval), writes the store, hands every interval's
//! samples to the push exporters and publishes what it achieved. An error for one target is
//! counted and never stops the others.
//!
//! ```text
//!  configuration (watch) ─► resolve ─► set_targets ─► series of gone targets removed,
//!   (run.rs: on change, and every RESCAN)             eBPF tracking synced
//!  tick: kernel (node interval) · per due target: resource, process ─► Store
//!        ebpf (one snapshot for the due targets) ─► Store          (collect.rs)
//!        PushBatch ─► Pusher (exporters)
//!        EngineStatus ─► watch channel ─► NodeTrace status writer, health
//! ```
//!
//! It runs on a thread of its own: the collectors do blocking file I/O.

mod collect;
mod run;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};
use tokio::sync::watch;

use podtrace_api::{
    profile::Probe,
    status::{ProbeState, ProbeStatus},
};

use crate::{
    collectors::{ebpf::EbpfSource, process::NetDevCache, resource},
    gaps::{self, Gap},
    metrics::{
        Sample, Sources, Store, TargetKey, agent::AgentMetrics, agent::StateLabels, budget,
        sources::Source,
    },
    procfs,
    sample::{PushBatch, TargetSample},
    targets::{Pending, Target},
};
use collect::{Spent, TargetState, Tick, target_sample};
pub use run::{RESCAN, run};

/// Receives every tick's samples (the push exporters).
pub trait Pusher: Send + Sync {
    /// Called after each tick that collected at least one target or the kernel.
    fn push(&self, batch: PushBatch);

    /// Whether the batches should carry each target's series as `/metrics` shows them
    /// ([`TargetSample::series`]); copying them costs, so only an exporter that sends them
    /// (OTLP) asks.
    fn wants_series(&self) -> bool {
        false
    }
}

/// What the engine achieved, for the NodeTrace status writer and health.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EngineStatus {
    /// Targets with a cgroup, with their pod UID and cgroup v2 id (the eBPF filter map's keys).
    pub attached: Vec<(TargetKey, String, Option<u64>)>,
    /// Targets without one yet.
    pub pending: Vec<Pending>,
    /// Series exported.
    pub series: usize,
    /// Series dropped by budgets since start.
    pub dropped: u64,
    /// Whether the first resolution has run.
    pub resolved: bool,
    /// Targets whose pod dropped series for its budget at their last collection.
    pub over_budget: Vec<TargetKey>,
    /// How each eBPF probe attached (empty when the agent runs without eBPF).
    pub probes: Vec<ProbeStatus>,
    /// Whether every probe some target asks for is attached.
    pub probes_ok: bool,
    /// Targets whose packet probes (networkBytes, dns, tcpRtt) are not measured although
    /// attached on the node: their programs could not be attached at the target's cgroup.
    pub packet_problems: Vec<(TargetKey, String)>,
    /// Data the agent cannot read (see [`crate::gaps`]), sorted.
    pub gaps: Vec<Gap>,
}

/// Processes per container with series of their own unless `--max-processes` says otherwise.
pub const DEFAULT_MAX_PROCESSES: u16 = 16;

/// Where the engine's samples go: the exporters, with this node's name on every sample.
struct Push {
    to: Arc<dyn Pusher>,
    node: String,
}

/// The engine.
pub struct Engine {
    store: Arc<Store>,
    sources: Arc<Sources>,
    metrics: AgentMetrics,
    status: watch::Sender<EngineStatus>,
    proc_root: PathBuf,
    kernel_interval: Duration,
    kernel_next: Instant,
    targets: BTreeMap<TargetKey, TargetState>,
    pending: Vec<Pending>,
    /// The node's memory in bytes (`MemTotal`), what the memory percent of processes without a
    /// container limit is relative to; `None` when `meminfo` could not be read (no percent then).
    mem_total: Option<u64>,
    max_processes: usize,
    net: NetDevCache,
    dropped_seen: u64,
    /// Series the budget kept from push exporters only (pods off `/metrics`, whose budget the
    /// store never applies), in the total of `podtrace_agent_series_dropped_total`.
    push_dropped: u64,
    push: Option<Push>,
    ebpf: Option<EbpfSource>,
    /// Gaps found at start (the PID namespace), reported for the agent's whole life.
    start_gaps: BTreeSet<Gap>,
    /// The gaps of the last published status, to clear their gauges when they go.
    reported_gaps: BTreeSet<Gap>,
}

impl Engine {
    /// An engine with no targets; the kernel source runs every `kernel_interval`.
    pub fn new(
        proc_root: PathBuf,
        store: Arc<Store>,
        sources: Arc<Sources>,
        metrics: AgentMetrics,
        kernel_interval: Duration,
    ) -> Self {
        let mem_total = node_memory(&proc_root, &metrics);
        Self {
            store,
            sources,
            metrics,
            status: watch::Sender::default(),
            proc_root,
            kernel_interval,
            kernel_next: Instant::now(),
            targets: BTreeMap::new(),
            pending: Vec::new(),
            mem_total,
            max_processes: usize::from(DEFAULT_MAX_PROCESSES),
            net: NetDevCache::default(),
            dropped_seen: 0,
            push_dropped: 0,
            push: None,
            ebpf: None,
            start_gaps: BTreeSet::new(),
            reported_gaps: BTreeSet::new(),
        }
    }

    /// Reports `gap` as long as the agent runs (found at start, e.g. [`crate::gaps::PID_NAMESPACE`]).
    pub fn add_gap(&mut self, gap: Gap) {
        self.start_gaps.insert(gap);
    }

    /// Exports at most `max` processes per container on their own (see
    /// [`crate::collectors::process::top`]).
    pub fn set_max_processes(&mut self, max: usize) {
        self.max_processes = max.max(1);
    }

    /// Measures the targets with the eBPF probes too.
    pub fn set_ebpf(&mut self, source: EbpfSource) {
        self.ebpf = Some(source);
    }

    /// Hands every tick's samples, named after `node`, to `pusher`.
    pub fn set_pusher(&mut self, pusher: Arc<dyn Pusher>, node: String) {
        self.push = Some(Push { to: pusher, node });
    }

    /// What the engine achieved, updated after every change of targets and every tick (the
    /// receiver wakes only when it changed).
    pub fn subscribe(&self) -> watch::Receiver<EngineStatus> {
        self.status.subscribe()
    }

    /// Replaces the targets. Targets whose key and cgroup are unchanged keep their state (CPU
    /// readings, history); the series of targets that went away are removed.
    pub fn set_targets(&mut self, targets: Vec<Target>, pending: Vec<Pending>) {
        let now = Instant::now();
        let mut next = BTreeMap::new();
        for t in targets {
            let state = match self.targets.remove(&t.key) {
                Some(mut s) if s.target.cgroup.relative == t.cgroup.relative => {
                    if s.target.interval() != t.interval() {
                        s.next_due = now;
                    }
                    s.target = t;
                    s
                }
                _ => TargetState::new(t, now),
            };
            next.insert(state.target.key.clone(), state);
        }
        for gone in self.targets.keys() {
            self.store.remove_target(gone);
        }
        self.targets = next;
        if let Some(ebpf) = self.ebpf.as_mut() {
            let wanted: Vec<(u64, PathBuf, BTreeSet<Probe>)> = self
                .targets
                .values()
                .filter_map(|s| {
                    let probes: BTreeSet<Probe> = s.target.profile.probes.active().collect();
                    let cgroup = &s.target.cgroup;
                    let dir = ebpf.dir_of(cgroup)?.to_path_buf();
                    Some((ebpf.key_of(cgroup)?, dir, probes)).filter(|(_, _, p)| !p.is_empty())
                })
                .collect();
            ebpf.sync(&wanted);
            // With the process filter a new target is measured from now, not from its first tick.
            for state in self.targets.values_mut() {
                sync_processes(ebpf, state);
            }
        }
        self.pending = pending;
        let gauge =
            |s: &str| self.metrics.targets.get_or_create(&StateLabels { state: s.into() }).clone();
        gauge("attached").set(self.targets.len() as i64);
        gauge("pending").set(self.pending.len() as i64);
        self.publish_status(true);
    }

    /// Collects what is due at `now`; returns when the next collection is due.
    pub fn tick(&mut self, now: Instant) -> Instant {
        let tick = Tick {
            store: &self.store,
            metrics: &self.metrics,
            proc_root: &self.proc_root,
            now,
            wall: SystemTime::now(),
            keep_series: self.push.as_ref().is_some_and(|p| p.to.wants_series()),
        };
        let mut kernel = None;
        if now >= self.kernel_next {
            self.kernel_next = now + self.kernel_interval;
            if self.sources.enabled(Source::Kernel) {
                kernel = tick.kernel();
            }
        }
        let uptime = std::fs::read_to_string(self.proc_root.join("uptime"))
            .ok()
            .and_then(|t| procfs::parse_uptime(&t))
            .unwrap_or(0.0);
        let resource_on = self.sources.enabled(Source::Resource);
        let process_on = self.sources.enabled(Source::Process);
        let node = self.push.as_ref().map_or("", |p| p.node.as_str());
        let (mut samples, mut ebpf_due, mut spent) = (Vec::new(), Vec::new(), Spent::default());
        let mut collected = 0usize;
        self.net.new_cycle();
        for state in self.targets.values_mut().filter(|s| now >= s.next_due) {
            if let Some(ebpf) = self.ebpf.as_mut() {
                sync_processes(ebpf, state);
            }
            state.dropped = 0;
            state.next_due = now + state.target.interval();
            collected += 1;
            let labels = state.target.labels();
            if self.ebpf.as_ref().and_then(|e| e.key_of(&state.target.cgroup)).is_some()
                && state.target.profile.probes.active().next().is_some()
            {
                ebpf_due.push(state.target.key.clone());
            }
            // The memory limit read by the resource source, reused for the processes' percent.
            let (mut memory_limit, mut resources) = (None, BTreeMap::new());
            if resource_on {
                let started = Instant::now();
                (memory_limit, resources) = tick.resource(state, &labels);
                spent.resource += started.elapsed();
            }
            // Without the host's PID namespace, cgroup.procs lists every process as 0: the
            // processes are not measured (the pids gap names it in the push messages) rather
            // than summed over none. A standalone pid selector resolves pids itself.
            let pids_unreadable =
                self.start_gaps.contains(&gaps::PID_NAMESPACE) && state.target.pids.is_none();
            let mut procs = None;
            if process_on && !pids_unreadable {
                let started = Instant::now();
                // Memory percent needs the limit: read here only when the resource source did
                // not, and only when memory is collected at all.
                let limit = memory_limit.or_else(|| {
                    let memory = state.target.profile.collect.memory;
                    memory.then(|| resource::memory_limit(&state.target.cgroup)).flatten()
                });
                let base = (uptime, limit.or(self.mem_total), self.max_processes);
                procs = tick.process(state, &labels, &mut self.net, base);
                spent.process += started.elapsed();
            }
            let mut sample = target_sample(state, node, procs.as_deref(), resources, tick.wall);
            if pids_unreadable {
                sample.unavailable.push(gaps::PID_NAMESPACE.data);
            }
            samples.push((state.target.key.clone(), sample));
        }
        if resource_on && collected > 0 {
            self.metrics.observe(Source::Resource.name(), spent.resource);
        }
        if process_on && collected == self.targets.len() {
            // Every target was read: a namespace nobody read belongs to no target any more.
            self.net.forget_unread();
        }
        if process_on && collected > 0 {
            self.metrics.observe(Source::Process.name(), spent.process);
        }
        if let Some(ebpf) = self.ebpf.as_mut()
            && !ebpf_due.is_empty()
            && self.sources.any_ebpf()
        {
            let mut summaries = tick.ebpf(ebpf, &ebpf_due, &mut self.targets, &self.sources);
            for (key, sample) in &mut samples {
                if let Some(summary) = summaries.remove(key) {
                    sample.ebpf = summary;
                }
            }
        }
        for (key, sample) in &mut samples {
            if let Some(state) = self.targets.get_mut(key) {
                sample.series = std::mem::take(&mut state.series);
            }
        }
        if tick.keep_series {
            self.push_dropped += self.within_budget(&mut samples);
        }
        // What no source measured (every one off, or all failed) is not sent.
        let samples: Vec<TargetSample> =
            samples.into_iter().map(|(_, s)| s).filter(|s| !s.is_empty()).collect();
        if let Some(push) = self.push.as_ref()
            && (kernel.is_some() || !samples.is_empty())
        {
            // The kernel counters only when read now: a target due more often than the node's
            // interval must not send the same counters again.
            push.to.push(PushBatch { kernel, targets: samples });
        }
        self.publish_status(false);
        let next_target = self.targets.values().map(|s| s.next_due).min();
        next_target.map_or(self.kernel_next, |t| t.min(self.kernel_next))
    }

    /// Keeps the series the push exporters get of each pod within its `maxSeriesPerPod`, as
    /// `/metrics` (see [`budget`]); `samples` are in target order, so a pod's containers are
    /// next to each other. Returns the lines dropped from pods the store does not hold (off
    /// `/metrics`), whose containers are then reported over budget; the store counted the
    /// others' already.
    fn within_budget(&mut self, samples: &mut [(TargetKey, TargetSample)]) -> u64 {
        let mut uncounted = 0;
        let same_pod = |a: &(TargetKey, _), b: &(TargetKey, _)| {
            a.0.namespace == b.0.namespace && a.0.pod == b.0.pod
        };
        for pod in samples.chunk_by_mut(same_pod) {
            let states = pod.iter().filter_map(|(key, _)| self.targets.get(key));
            let Some(budget) = states.map(|s| s.target.budget()).min() else { continue };
            let mut series: Vec<&mut Vec<Sample>> =
                pod.iter_mut().map(|(_, s)| &mut s.series).collect();
            let dropped = budget::trim(&mut series, budget);
            let off_metrics = |s: &TargetState| !s.target.profile.export.prometheus;
            if dropped > 0 && pod.iter().any(|(k, _)| self.targets.get(k).is_some_and(off_metrics))
            {
                uncounted += dropped as u64;
                for (key, _) in pod.iter() {
                    if let Some(state) = self.targets.get_mut(key) {
                        state.dropped += dropped;
                    }
                }
            }
        }
        uncounted
    }

    /// Publishes the engine's status (waking its readers only when it changed) and the series
    /// gauges.
    fn publish_status(&mut self, resolved: bool) {
        let dropped = self.store.dropped() + self.push_dropped;
        self.metrics.series_dropped.inc_by(dropped - self.dropped_seen);
        self.dropped_seen = dropped;
        let series = self.store.series();
        self.metrics.series.set(series as i64);
        let ebpf = self.ebpf.as_ref();
        let probes = ebpf.map(EbpfSource::statuses).unwrap_or_default();
        let requested: BTreeSet<Probe> =
            self.targets.values().flat_map(|s| s.target.profile.probes.active()).collect();
        let probes_ok = requested
            .iter()
            .all(|p| probes.iter().any(|s| s.probe == *p && s.state == ProbeState::Attached));
        let gaps: BTreeSet<Gap> = self
            .start_gaps
            .iter()
            .chain(self.targets.values().flat_map(|s| &s.gaps))
            .copied()
            .collect();
        if gaps != self.reported_gaps {
            for gap in self.reported_gaps.difference(&gaps) {
                self.metrics.set_gap(gap, false);
            }
            for gap in gaps.difference(&self.reported_gaps) {
                tracing::warn!(
                    source = gap.source,
                    data = gap.data,
                    reason = gap.reason,
                    "{}",
                    gap.advice()
                );
                self.metrics.set_gap(gap, true);
            }
            self.reported_gaps = gaps.clone();
        }
        let next = EngineStatus {
            attached: self
                .targets
                .values()
                .map(|s| {
                    let key = ebpf.map_or(s.target.cgroup.v2_id, |e| e.key_of(&s.target.cgroup));
                    (s.target.key.clone(), s.target.uid.clone(), key)
                })
                .collect(),
            pending: self.pending.clone(),
            series,
            dropped,
            resolved: resolved || self.status.borrow().resolved,
            over_budget: self
                .targets
                .values()
                .filter(|s| s.dropped > 0)
                .map(|s| s.target.key.clone())
                .collect(),
            probes,
            probes_ok,
            packet_problems: ebpf.map_or_else(Vec::new, |e| {
                let problems = e.packet_problems();
                self.targets
                    .values()
                    .filter_map(|s| {
                        let why = problems.get(&e.key_of(&s.target.cgroup)?)?;
                        Some((s.target.key.clone(), why.clone()))
                    })
                    .collect()
            }),
            gaps: gaps.into_iter().collect(),
        };
        self.status.send_if_modified(|status| {
            let changed = *status != next;
            *status = next;
            changed
        });
    }
}

/// The node's memory from `<proc>/meminfo`. When it cannot be read the processes of containers
/// without a memory limit get no memory percent at all (a percent of a made-up total would be
/// wrong by orders of magnitude): logged and counted as an error of the `process` source.
fn node_memory(proc_root: &std::path::Path, metrics: &AgentMetrics) -> Option<u64> {
    let path = proc_root.join("meminfo");
    let total = procfs::read(&path).and_then(|text| {
        procfs::parse_mem_total(&text)
            .filter(|t| *t > 0)
            .ok_or(crate::Error::Parse { path: path.clone(), expected: "a MemTotal line" })
    });
    match total {
        Ok(total) => Some(total),
        Err(e) => {
            tracing::error!(error = %e, "the node's memory is unknown: processes of containers without a memory limit get no podtrace_process_memory_usage_percent");
            metrics.error(Source::Process.name(), e.reason());
            None
        }
    }
}

/// With the process filter, hands the target's current processes (its own pid list, else its
/// cgroup.procs) to the eBPF source: new processes start being measured, exited ones are
/// dropped from the kernel map. Nothing to do with the cgroup filter.
fn sync_processes(ebpf: &mut EbpfSource, state: &mut TargetState) {
    if ebpf.filter() != podtrace_ebpf::Filter::Process
        || state.target.profile.probes.active().next().is_none()
    {
        return;
    }
    let Some(key) = ebpf.key_of(&state.target.cgroup) else { return };
    match state.pids() {
        Ok(pids) => ebpf.set_processes(key, &pids),
        Err(e) => {
            tracing::debug!(target = ?state.target.key, error = %e, "listing processes for the eBPF process filter failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{cgroup::Cgroup, metrics::Labels, targets::Target};
    use parking_lot::Mutex;
    use podtrace_api::MonitoringProfileSpec;
    use prometheus_client::registry::Registry;

    /// Keeps every batch the engine pushes; asks for the series when its flag is set.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<PushBatch>>, bool);

    impl Pusher for Recorder {
        fn push(&self, batch: PushBatch) {
            self.0.lock().push(batch);
        }

        fn wants_series(&self) -> bool {
            self.1
        }
    }

    fn engine(proc_root: &std::path::Path, registry: &mut Registry) -> Engine {
        engine_with_store(proc_root, registry).0
    }

    fn engine_with_store(
        proc_root: &std::path::Path,
        registry: &mut Registry,
    ) -> (Engine, Arc<Store>) {
        let metrics = AgentMetrics::register(registry);
        let store = Arc::new(Store::default());
        let engine = Engine::new(
            proc_root.into(),
            store.clone(),
            Arc::default(),
            metrics,
            Duration::from_secs(10),
        );
        (engine, store)
    }

    /// This test process as a target (a standalone pid selector: no cgroup needed).
    fn me(interval: &str) -> Target {
        Target {
            key: TargetKey::new("ns", "me", "test"),
            uid: "uid".into(),
            cgroup: Cgroup::default(),
            pids: Some(vec![std::process::id()]),
            profile: MonitoringProfileSpec { interval: interval.into(), ..Default::default() },
            pod_labels: Labels::default(),
        }
    }

    /// The series names (with labels) of the store's `/metrics` text, sorted.
    fn lines_on_metrics(store: &Store) -> Vec<String> {
        let mut text = String::new();
        store.encode(&mut text, |s| s != Source::Kernel).unwrap();
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.rsplit_once(' ').unwrap().0.to_owned())
            .collect();
        lines.sort();
        lines
    }

    /// The series names (with labels) of the first target of the last batch `recorder` got,
    /// sorted.
    fn lines_pushed(recorder: &Recorder) -> Vec<String> {
        let batches = recorder.0.lock();
        let series = &batches.last().unwrap().targets[0].series;
        let mut lines: Vec<String> = series
            .iter()
            .map(|s| {
                let name = crate::metrics::catalog::FAMILIES[s.family].name;
                format!("{name}{}{{{}}}", s.suffix, s.labels.as_str())
            })
            .collect();
        lines.sort();
        lines
    }

    #[test]
    fn kernel_counters_are_pushed_once_per_node_interval_however_often_targets_are_due() {
        let mut registry = Registry::default();
        let mut engine = engine(std::path::Path::new("/proc"), &mut registry);
        let recorder = Arc::new(Recorder::default());
        engine.set_pusher(recorder.clone(), "node-1".into());
        engine.set_targets(vec![me("1s")], vec![]);
        let start = Instant::now();
        for s in 0..5 {
            engine.tick(start + Duration::from_secs(s));
        }
        let batches = recorder.0.lock();
        assert_eq!(batches.len(), 5, "the 1s target is due every second");
        assert!(batches.iter().all(|b| b.targets.len() == 1 && b.targets[0].node == "node-1"));
        let kernel = batches.iter().filter(|b| b.kernel.is_some()).count();
        assert_eq!(kernel, 1, "one kernel reading in 10 s of node INTERVAL, sent once");
    }

    #[test]
    fn a_profile_without_prometheus_export_serves_nothing_on_metrics_but_still_pushes() {
        let mut registry = Registry::default();
        let (mut engine, store) = engine_with_store(std::path::Path::new("/proc"), &mut registry);
        let recorder = Arc::new(Recorder::default());
        engine.set_pusher(recorder.clone(), "node-1".into());
        engine.set_targets(vec![me("1s")], vec![]);
        let start = Instant::now();
        engine.tick(start);
        assert!(store.series_of_pod("ns", "me") > 0, "exported by default");
        let mut off = me("1s");
        off.profile.export.prometheus = false;
        engine.set_targets(vec![off], vec![]);
        engine.tick(start + Duration::from_secs(1));
        assert_eq!(store.series_of_pod("ns", "me"), 0, "export.prometheus: false");
        let batches = recorder.0.lock();
        let last = batches.last().unwrap();
        assert_eq!(last.targets.len(), 1, "the push exporters still get the pod");
    }

    /// An exporter that asks for the series (OTLP) gets the very lines `/metrics` shows for
    /// the target, also with `export.prometheus: false`; the others get none.
    #[test]
    fn a_pusher_that_wants_the_series_gets_those_of_metrics() {
        let mut registry = Registry::default();
        let (mut engine, store) = engine_with_store(std::path::Path::new("/proc"), &mut registry);
        let recorder = Arc::new(Recorder(Mutex::default(), true));
        engine.set_pusher(recorder.clone(), "node-1".into());
        engine.set_targets(vec![me("1s")], vec![]);
        let start = Instant::now();
        engine.tick(start);
        let pushed = lines_pushed(&recorder);
        assert!(!pushed.is_empty());
        assert_eq!(pushed, lines_on_metrics(&store));

        let mut off = me("1s");
        off.profile.export.prometheus = false;
        engine.set_targets(vec![off], vec![]);
        engine.tick(start + Duration::from_secs(1));
        assert!(!recorder.0.lock().last().unwrap().targets[0].series.is_empty());

        let plain = Arc::new(Recorder::default());
        engine.set_pusher(plain.clone(), "node-1".into());
        engine.tick(start + Duration::from_secs(2));
        assert!(plain.0.lock().last().unwrap().targets[0].series.is_empty(), "no copy");
    }

    /// maxSeriesPerPod bounds what a pusher of series (OTLP) gets as it bounds `/metrics`: the
    /// same lines for a pod on `/metrics`; for a pod kept off it (which the store never
    /// bounds) at most the budget, counted as dropped and reported over budget.
    #[test]
    fn a_pods_budget_bounds_the_pushed_series_as_it_bounds_metrics() {
        let mut registry = Registry::default();
        let (mut engine, store) = engine_with_store(std::path::Path::new("/proc"), &mut registry);
        let recorder = Arc::new(Recorder(Mutex::default(), true));
        engine.set_pusher(recorder.clone(), "node-1".into());
        let status = engine.subscribe();
        let mut unbounded = me("1s");
        unbounded.profile.max_series_per_pod = 100_000;
        engine.set_targets(vec![unbounded], vec![]);
        let start = Instant::now();
        engine.tick(start);
        let all = recorder.0.lock().last().unwrap().targets[0].series.len();
        assert!(all > 12, "this process yields {all} series");

        let mut bounded = me("1s");
        bounded.profile.max_series_per_pod = 10;
        engine.set_targets(vec![bounded.clone()], vec![]);
        engine.tick(start + Duration::from_secs(1));
        let pushed = lines_pushed(&recorder);
        assert_eq!(pushed, lines_on_metrics(&store), "the lines /metrics keeps");
        assert!(pushed.len() <= 10, "{pushed:?}");
        let dropped_by_store = status.borrow().dropped;
        assert!(dropped_by_store > 0);

        bounded.profile.export.prometheus = false;
        engine.set_targets(vec![bounded], vec![]);
        engine.tick(start + Duration::from_secs(2));
        let pushed = recorder.0.lock().last().unwrap().targets[0].series.len();
        assert!((1..=10).contains(&pushed), "{pushed} of {all} series pushed off /metrics");
        let s = status.borrow().clone();
        assert!(s.dropped > dropped_by_store, "the lines not pushed are counted");
        assert_eq!(s.over_budget, [TargetKey::new("ns", "me", "test")]);
    }

    #[test]
    fn without_the_pid_namespace_cgroup_processes_are_unavailable_not_summed_over_none() {
        let mut registry = Registry::default();
        let mut engine = engine(std::path::Path::new("/proc"), &mut registry);
        let recorder = Arc::new(Recorder::default());
        engine.set_pusher(recorder.clone(), "node-1".into());
        engine.add_gap(gaps::PID_NAMESPACE);
        // A pod cgroup as an agent outside the host's PID namespace sees it: every pid is 0.
        let root = std::env::temp_dir().join(format!("podtrace-pidns-{}", std::process::id()));
        let dir = root.join("unified/pod");
        std::fs::create_dir_all(&dir).unwrap();
        for (file, text) in [("cgroup.procs", "0\n0\n"), ("memory.current", "4096\n")] {
            std::fs::write(dir.join(file), text).unwrap();
        }
        let cgroup = crate::cgroup::CgroupLayout::hybrid_under(&root).resolve("/pod").unwrap();
        let key = TargetKey::new("ns", "pod", "c");
        let by_cgroup = Target { pids: None, key, cgroup, ..me("1s") };
        engine.set_targets(vec![me("1s"), by_cgroup], vec![]);
        engine.tick(Instant::now());
        std::fs::remove_dir_all(root).unwrap();
        let batches = recorder.0.lock();
        let targets = &batches.last().expect("a batch").targets;
        let of = |pod: &str| targets.iter().find(|t| t.pod == pod).expect(pod);
        let (cgroup, selector) = (of("pod"), of("me"));
        assert_eq!(cgroup.unavailable, ["pids"], "the cgroup's processes cannot be listed");
        assert!(cgroup.metrics.is_none() && cgroup.aggregated.is_none(), "{cgroup:?}");
        assert_eq!(cgroup.resources["memory"].usage, 4096.0, "its cgroup is still measured");
        // A pid selector's processes are read from the /proc it names: measured.
        assert!(selector.unavailable.is_empty() && selector.metrics.is_some());
    }

    #[test]
    fn without_meminfo_the_memory_percent_has_no_base_and_the_error_is_counted() {
        let dir = std::env::temp_dir().join(format!("podtrace-nomeminfo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut registry = Registry::default();
        let engine = engine(&dir, &mut registry);
        assert_eq!(engine.mem_total, None);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("podtrace_agent_errors_total{source=\"process\",reason=\"not_found\"} 1"),
            "{text}"
        );
        let mut registry = Registry::default();
        assert!(self::engine(std::path::Path::new("/proc"), &mut registry).mem_total > Some(0));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
