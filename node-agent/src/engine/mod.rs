//! The collection engine: keeps the resolved targets, runs each metric source for the targets
//! that are due (each at its profile's interval), writes the store and hands every interval's
//! samples to the push exporters. An error for one target is counted and never stops the others.
//!
//! ```text
//!  resolver (every 2s, or when the config changes) ─► set_targets ─► series of gone targets removed
//!  tick: kernel (node interval) · per due target: resource, process ─► Store ─► Pusher
//! ```
//!
//! It runs on a thread of its own: the collectors do blocking file I/O.

use parking_lot::RwLock;
use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use podtrace_api::{
    profile::{ExportSettings, Probe},
    status::ProbeStatus,
};

use crate::{
    collectors::{
        ebpf::{self, EbpfSource},
        kernel::{self, KernelReading},
        process::{self, Aggregates, NetDevCache, ProcessCollector},
        resource::{self, GroupFiles, LIMITS_REFRESH, Reading},
    },
    exporters::ProcessMetrics,
    metrics::{Sources, Store, TargetKey, agent::AgentMetrics, agent::StateLabels, catalog},
    procfs,
    targets::{Pending, Target},
};

/// One container's interval, summed over its processes (the push message's shape).
#[derive(Clone, Debug, PartialEq)]
pub struct TargetReport {
    /// namespace / pod / container.
    pub key: TargetKey,
    /// Pod UID.
    pub uid: String,
    /// The profile's exporters.
    pub export: ExportSettings,
    /// Sum over the processes (network: the largest, since processes share the namespace).
    pub sample: ProcessMetrics,
    /// Aggregates over the container's history.
    pub aggregates: Option<Aggregates>,
}

/// Receives every tick's reports (the push exporters).
pub trait Pusher: Send {
    /// Called after each tick that collected at least one target or the kernel.
    fn push(&self, kernel: Option<(KernelReading, SystemTime)>, targets: &[TargetReport]);
}

/// What the status writer and `health` read.
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
}

struct TargetState {
    target: Target,
    next_due: Instant,
    previous: Option<(Instant, Reading)>,
    /// When the limits in `previous` were read.
    limits_at: Option<Instant>,
    files: GroupFiles,
    processes: ProcessCollector,
    history: VecDeque<ProcessMetrics>,
    dropped: usize,
}

/// Processes per container with series of their own unless `--max-processes` says otherwise.
pub const DEFAULT_MAX_PROCESSES: u16 = 16;

/// The engine.
pub struct Engine {
    /// The series.
    pub store: Arc<Store>,
    /// The switchable sources.
    pub sources: Arc<Sources>,
    /// Self-metrics.
    pub metrics: AgentMetrics,
    /// What the status writer reads.
    pub status: Arc<RwLock<EngineStatus>>,
    proc_root: PathBuf,
    kernel_interval: Duration,
    kernel_next: Instant,
    targets: BTreeMap<TargetKey, TargetState>,
    pending: Vec<Pending>,
    mem_total: u64,
    max_processes: usize,
    net: NetDevCache,
    dropped_seen: u64,
    pusher: Option<Box<dyn Pusher>>,
    ebpf: Option<EbpfSource>,
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
        let mem_total = std::fs::read_to_string(proc_root.join("meminfo"))
            .ok()
            .and_then(|t| procfs::parse_mem_total(&t))
            .unwrap_or(1);
        Self {
            store,
            sources,
            metrics,
            status: Arc::default(),
            proc_root,
            kernel_interval,
            kernel_next: Instant::now(),
            targets: BTreeMap::new(),
            pending: Vec::new(),
            mem_total,
            max_processes: usize::from(DEFAULT_MAX_PROCESSES),
            net: NetDevCache::default(),
            dropped_seen: 0,
            pusher: None,
            ebpf: None,
        }
    }

    /// Exports at most `max` processes per container on their own (see [`process::top`]).
    pub fn set_max_processes(&mut self, max: usize) {
        self.max_processes = max.max(1);
    }

    /// Measures the targets with the eBPF probes too.
    pub fn set_ebpf(&mut self, source: EbpfSource) {
        self.ebpf = Some(source);
    }

    /// Sets where every tick's reports go.
    pub fn set_pusher(&mut self, pusher: Box<dyn Pusher>) {
        self.pusher = Some(pusher);
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
                _ => TargetState {
                    target: t,
                    next_due: now,
                    previous: None,
                    limits_at: None,
                    files: GroupFiles::default(),
                    processes: ProcessCollector::default(),
                    history: VecDeque::new(),
                    dropped: 0,
                },
            };
            next.insert(state.target.key.clone(), state);
        }
        for gone in self.targets.keys() {
            self.store.remove_target(gone);
        }
        self.targets = next;
        if let Some(ebpf) = self.ebpf.as_mut() {
            let wanted: Vec<(u64, BTreeSet<Probe>)> = self
                .targets
                .values()
                .filter_map(|s| {
                    let probes: BTreeSet<Probe> = s.target.profile.probes.active().collect();
                    Some((ebpf.key_of(&s.target.cgroup)?, probes)).filter(|(_, p)| !p.is_empty())
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
        let wall = SystemTime::now();
        let mut kernel_reading = None;
        if now >= self.kernel_next {
            self.kernel_next = now + self.kernel_interval;
            if self.sources.enabled(catalog::KERNEL) {
                let started = Instant::now();
                match kernel::read(&self.proc_root) {
                    Ok(r) => {
                        self.store.replace(
                            catalog::KERNEL,
                            &TargetKey::default(),
                            kernel::samples(&r),
                            None,
                        );
                        kernel_reading = Some((r, wall));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "kernel collector failed");
                        self.metrics.error(catalog::KERNEL, e.reason());
                    }
                }
                self.observe(catalog::KERNEL, started);
            }
        }
        let uptime = std::fs::read_to_string(self.proc_root.join("uptime"))
            .ok()
            .and_then(|t| procfs::parse_uptime(&t))
            .unwrap_or(0.0);
        let resource_on = self.sources.enabled(catalog::RESOURCE);
        let process_on = self.sources.enabled(catalog::PROCESS);
        let mut reports = Vec::new();
        let mut collected = 0usize;
        // Targets due for the eBPF source: (key, cgroup id, labels, budget, process names).
        let mut ebpf_due = Vec::new();
        let (mut resource_time, mut process_time) = (Duration::ZERO, Duration::ZERO);
        self.net.new_cycle();
        for state in self.targets.values_mut().filter(|s| now >= s.next_due) {
            if let Some(ebpf) = self.ebpf.as_mut() {
                sync_processes(ebpf, state);
            }
            state.dropped = 0;
            state.next_due = now + state.target.interval();
            collected += 1;
            let t = &state.target;
            let labels = t.labels();
            let budget = Some(t.budget());
            // The memory limit read by the resource source, reused for the processes' percent.
            let mut memory_limit = None;
            if let Some(id) = self.ebpf.as_ref().and_then(|e| e.key_of(&t.cgroup))
                && t.profile.probes.active().next().is_some()
            {
                let process_names = t.profile.labels.process_name;
                ebpf_due.push((t.key.clone(), id, labels.clone(), budget, process_names));
            }
            if resource_on {
                let started = Instant::now();
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
                        let samples =
                            resource::samples(&labels, &reading, prev, &t.profile.resource_limits);
                        state.dropped +=
                            self.store.replace(catalog::RESOURCE, &t.key, samples, budget);
                        memory_limit = reading.memory.map(|m| m.1);
                        state.previous = Some((now, reading));
                    }
                    Err(e) => {
                        tracing::debug!(target = ?t.key, error = %e, "resource collector failed");
                        self.metrics.error(catalog::RESOURCE, e.reason());
                    }
                }
                resource_time += started.elapsed();
            }
            if process_on {
                let started = Instant::now();
                let pids = match &t.pids {
                    Some(p) => Ok(p.clone()),
                    None => state.files.pids(&t.cgroup),
                };
                match pids {
                    Ok(pids) => {
                        let raws: Vec<_> = pids
                            .into_iter()
                            .filter_map(|p| {
                                Some((
                                    p,
                                    state.processes.read_raw(&self.proc_root, p, &mut self.net)?,
                                ))
                            })
                            .collect();
                        let limit =
                            memory_limit.unwrap_or_else(|| resource::memory_limit(&t.cgroup));
                        let base = limit.unwrap_or(self.mem_total);
                        let history = t.profile.history.size.max(0) as usize;
                        let procs = state.processes.record(raws, now, wall, uptime, base, history);
                        let samples =
                            process::samples(&labels, &procs, &t.profile, self.max_processes);
                        state.dropped +=
                            self.store.replace(catalog::PROCESS, &t.key, samples, budget);
                        let sample = sum(procs.iter().map(|p| &p.sample), wall);
                        if history > 0 {
                            state.history.push_back(sample.clone());
                            while state.history.len() > history {
                                state.history.pop_front();
                            }
                        }
                        reports.push(TargetReport {
                            key: t.key.clone(),
                            uid: t.uid.clone(),
                            export: t.profile.export.clone(),
                            sample,
                            aggregates: process::aggregate(&state.history),
                        });
                    }
                    Err(e) => {
                        let e = crate::Error::Read {
                            path: t.cgroup.relative.clone().into(),
                            source: e,
                        };
                        tracing::debug!(target = ?t.key, error = %e, "listing processes failed");
                        self.metrics.error(catalog::PROCESS, e.reason());
                    }
                }
                process_time += started.elapsed();
            }
        }
        if resource_on && collected > 0 {
            self.metrics
                .collection_seconds
                .get_or_create(&source(catalog::RESOURCE))
                .observe(resource_time.as_secs_f64());
        }
        if process_on && collected == self.targets.len() {
            // Every target was read: a namespace nobody read belongs to no target any more.
            self.net.forget_unread();
        }
        if process_on && collected > 0 {
            self.metrics
                .collection_seconds
                .get_or_create(&source(catalog::PROCESS))
                .observe(process_time.as_secs_f64());
        }
        if !ebpf_due.is_empty()
            && self.sources.enabled(catalog::EBPF)
            && let Some(snap) = self.ebpf.as_mut().and_then(EbpfSource::snapshot)
        {
            let started = Instant::now();
            for (key, id, labels, budget, process_names) in ebpf_due {
                let samples = ebpf::samples(&snap, id, &labels, process_names);
                let dropped = self.store.replace(catalog::EBPF, &key, samples, budget);
                if let Some(state) = self.targets.get_mut(&key) {
                    state.dropped += dropped;
                }
            }
            self.observe(catalog::EBPF, started);
        }
        if let Some(p) = &self.pusher
            && (kernel_reading.is_some() || !reports.is_empty())
        {
            p.push(kernel_reading, &reports);
        }
        self.publish_status(false);
        let next_target = self.targets.values().map(|s| s.next_due).min();
        next_target.map_or(self.kernel_next, |t| t.min(self.kernel_next))
    }

    fn observe(&self, name: &str, started: Instant) {
        self.metrics
            .collection_seconds
            .get_or_create(&source(name))
            .observe(started.elapsed().as_secs_f64());
    }

    fn publish_status(&mut self, resolved: bool) {
        let dropped = self.store.dropped();
        self.metrics.series_dropped.inc_by(dropped - self.dropped_seen);
        self.dropped_seen = dropped;
        let series = self.store.series();
        self.metrics.series.set(series as i64);
        let mut status = self.status.write();
        let ebpf = self.ebpf.as_ref();
        status.attached = self
            .targets
            .values()
            .map(|s| {
                let key = ebpf.map_or(s.target.cgroup.v2_id, |e| e.key_of(&s.target.cgroup));
                (s.target.key.clone(), s.target.uid.clone(), key)
            })
            .collect();
        status.pending = self.pending.clone();
        status.series = series;
        status.dropped = dropped;
        status.resolved |= resolved;
        status.over_budget =
            self.targets.values().filter(|s| s.dropped > 0).map(|s| s.target.key.clone()).collect();
        status.probes = self.ebpf.as_ref().map(EbpfSource::statuses).unwrap_or_default();
        let requested: BTreeSet<Probe> =
            self.targets.values().flat_map(|s| s.target.profile.probes.active()).collect();
        status.probes_ok = requested.iter().all(|p| {
            status
                .probes
                .iter()
                .any(|s| s.probe == *p && s.state == podtrace_api::status::ProbeState::Attached)
        });
    }

    /// The keys of the attached targets in the eBPF programs' tracked map (cgroup v2 ids, or
    /// with the process filter [`crate::cgroup::Cgroup::process_key`]).
    pub fn tracked_cgroup_ids(&self) -> Vec<u64> {
        let ebpf = self.ebpf.as_ref();
        self.targets
            .values()
            .filter_map(|s| ebpf.map_or(s.target.cgroup.v2_id, |e| e.key_of(&s.target.cgroup)))
            .collect()
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
    let pids = match &state.target.pids {
        Some(p) => Ok(p.clone()),
        None => state.files.pids(&state.target.cgroup),
    };
    match pids {
        Ok(pids) => ebpf.set_processes(key, &pids),
        Err(e) => {
            tracing::debug!(target = ?state.target.key, error = %e, "listing processes for the eBPF process filter failed")
        }
    }
}

fn source(name: &str) -> crate::metrics::agent::SourceLabels {
    crate::metrics::agent::SourceLabels { source: name.into() }
}

/// The container's sample: processes summed; network counters are per namespace, so the largest
/// is taken instead of the sum; uptime is the oldest process's.
pub fn sum<'a>(
    procs: impl IntoIterator<Item = &'a ProcessMetrics>,
    wall: SystemTime,
) -> ProcessMetrics {
    let mut s = ProcessMetrics { timestamp: wall, ..Default::default() };
    for p in procs {
        s.cpu_usage_percent += p.cpu_usage_percent;
        s.memory_usage_bytes += p.memory_usage_bytes;
        s.memory_usage_percent += p.memory_usage_percent;
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

/// Produces the wanted targets: called every [`RESCAN`] and when `changed` is set.
pub type Resolver = Box<dyn FnMut() -> (Vec<Target>, Vec<Pending>) + Send>;

/// How often targets are resolved again (pending cgroups retried, new processes found).
pub const RESCAN: Duration = Duration::from_secs(2);

/// Runs the engine on the current thread until `stop` is set. `changed` forces a resolution
/// (a new configuration) and is cleared by it.
pub fn run(
    mut engine: Engine,
    mut resolver: Resolver,
    changed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    let mut next_scan = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next_scan || changed.swap(false, Ordering::Relaxed) {
            let (targets, pending) = resolver();
            engine.set_targets(targets, pending);
            next_scan = now + RESCAN;
        }
        let next = engine.tick(Instant::now()).min(next_scan);
        let wait = next
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(5), Duration::from_millis(200));
        std::thread::sleep(wait);
    }
}
