//! One tick's collection, one function per metric source. Each reads its files for the targets
//! that are due, hands the pure conversion's samples to the store under the pod's budget, counts
//! its errors (one target's error never stops the others) and says how long it took.
//!
//! ```text
//!  kernel   (node)        /proc/stat, entropy, /proc/net ─► node_*            ─► KernelSample
//!  resource (per target)  cgroup files                   ─► podtrace_resource_*
//!  process  (per target)  /proc/<pid> of its processes   ─► podtrace_process_* ─► TargetSample
//!  ebpf     (due targets) one snapshot of the kernel maps ─► podtrace_{rtt,dns,fs,…}
//! ```

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
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
    metrics::{Labels, Store, TargetKey, agent::AgentMetrics, sources::Source},
    sample::{AggregatedMetrics, KernelSample, ProcessMetrics, TargetSample, record},
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
    history: VecDeque<ProcessMetrics>,
    /// Series dropped for the pod's budget at the last collection.
    pub dropped: usize,
    /// What its last process collection was refused (left out of its series).
    pub gaps: BTreeSet<Gap>,
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
            history: VecDeque::new(),
            dropped: 0,
            gaps: BTreeSet::new(),
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
}

/// Per-source time spent over the due targets of one tick.
#[derive(Default)]
pub(super) struct Spent {
    pub resource: Duration,
    pub process: Duration,
}

impl Tick<'_> {
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
        self.metrics.observe(Source::Kernel, started.elapsed());
        result
    }

    /// A target's cgroup limits and usage (`resource`); returns the memory limit read, which
    /// the processes' memory percent reuses.
    pub fn resource(&self, state: &mut TargetState, labels: &Labels) -> Option<u64> {
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
                let samples = resource::samples(labels, &reading, prev, &t.profile.resource_limits);
                state.dropped +=
                    self.store.replace(Source::Resource, &t.key, samples, Some(t.budget()));
                state.previous = Some((now, reading));
                reading.memory.and_then(|m| m.1)
            }
            Err(e) => {
                tracing::debug!(target = ?t.key, error = %e, "resource collector failed");
                self.metrics.error(Source::Resource.name(), e.reason());
                None
            }
        }
    }

    /// A target's processes (`process`), and the container's sample for the push exporters.
    /// `memory_base` is what memory percent is relative to; `uptime` the node's seconds since
    /// boot; at most `max_processes` processes get series of their own.
    pub fn process(
        &self,
        state: &mut TargetState,
        labels: &Labels,
        net: &mut NetDevCache,
        (uptime, memory_base, max_processes): (f64, u64, usize),
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
        state.dropped += self.store.replace(Source::Process, &t.key, samples, Some(t.budget()));
        Some(procs.into_iter().map(|p| p.sample).collect())
    }

    /// The eBPF series of the due targets (`ebpf`) from one snapshot of the kernel maps.
    pub fn ebpf(
        &self,
        source: &mut EbpfSource,
        due: &[TargetKey],
        targets: &mut BTreeMap<TargetKey, TargetState>,
    ) {
        let Some(snap) = source.snapshot() else { return };
        let started = Instant::now();
        for key in due {
            let Some(state) = targets.get_mut(key) else { continue };
            let Some(id) = source.key_of(&state.target.cgroup) else { continue };
            let t = &state.target;
            let samples = ebpf::samples(&snap, id, &t.labels(), t.profile.labels.process_name);
            state.dropped += self.store.replace(Source::Ebpf, key, samples, Some(t.budget()));
        }
        self.metrics.observe(Source::Ebpf, started.elapsed());
    }
}

/// The push exporters' sample of a container: its processes summed, appended to its history.
pub(super) fn target_sample(
    state: &mut TargetState,
    node: &str,
    procs: &[ProcessMetrics],
    wall: SystemTime,
) -> TargetSample {
    let t = &state.target;
    let metrics = ProcessMetrics::sum(procs, wall);
    let history = t.profile.history.size.max(0) as usize;
    if history > 0 {
        record(&mut state.history, &metrics, history);
    }
    TargetSample {
        node: node.to_owned(),
        namespace: t.key.namespace.clone(),
        pod: t.key.pod.clone(),
        pod_uid: t.uid.clone(),
        container: t.key.container.clone(),
        metrics,
        aggregated: AggregatedMetrics::of(&state.history).unwrap_or_default(),
        export: t.profile.export.clone(),
    }
}
