//! The eBPF source: keeps the kernel programs of `podtrace-ebpf` attached to what the targets'
//! profiles ask for, keeps the tracked-cgroup map equal to the targets' cgroups, and turns one
//! snapshot of the kernel maps per collection into the reference's series.
//!
//! ```text
//!  set_targets ─► sync: set_enabled(union of probes) · track(cgroup id, probes) / untrack
//!  tick        ─► snapshot() once ─► samples::samples(target) ─► Store (source ebpf)
//!                                 └► podtrace_agent_bpf_* self-metrics (metrics.rs)
//! ```
//!
//! This is where the agent meets the eBPF crate's own vocabulary ([`crd`] maps it to the CRD's).
//! The conversion ([`samples::samples`]) is pure and unit-tested; loading and reading the maps is
//! exercised by the root tests.

pub mod crd;
pub mod metrics;
pub mod samples;
pub mod tracefs;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use podtrace_api::{profile::Probe, status::ProbeStatus};
use podtrace_ebpf::{Filter, ProbeConfig, ProbeState, Probes, Snapshot};
use prometheus_client::registry::Registry;

use metrics::EbpfMetrics;
pub use samples::{samples, summary};

/// The eBPF source.
pub struct EbpfSource {
    probes: Option<Probes>,
    filter: Filter,
    /// Why nothing could be loaded at all (no BTF, no permission), for every status.
    load_error: Option<String>,
    enabled: BTreeSet<podtrace_ebpf::Probe>,
    /// Tracked keys (cgroup v2 ids, or process-filter keys) and the probes of each.
    tracked: BTreeMap<u64, BTreeSet<podtrace_ebpf::Probe>>,
    metrics: EbpfMetrics,
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
        let forks = match probes.as_ref().map(Probes::fork_following) {
            _ if filter == Filter::Cgroup => "by_cgroup",
            Some(Some(Ok(method))) => method.name(),
            _ => "unavailable",
        };
        let metrics = EbpfMetrics::register(registry, filter, forks);
        let source = Self {
            probes,
            filter,
            load_error,
            enabled: BTreeSet::new(),
            tracked: BTreeMap::new(),
            metrics,
        };
        source.metrics.publish_statuses(&source.kernel_statuses());
        source
    }

    /// Attaches the union of the targets' probes, detaches the rest, and makes the tracked
    /// cgroups those of `targets` (key from [`EbpfSource::key_of`], directory from
    /// [`EbpfSource::dir_of`], probes). Errors are logged and reflected in the statuses; the
    /// other probes and cgroups are unaffected.
    pub fn sync(&mut self, targets: &[(u64, PathBuf, BTreeSet<Probe>)]) {
        let Some(probes) = self.probes.as_mut() else { return };
        let desired: BTreeMap<u64, (&Path, BTreeSet<podtrace_ebpf::Probe>)> = targets
            .iter()
            .map(|(id, dir, p)| {
                (*id, (dir.as_path(), p.iter().copied().map(crd::to_kernel).collect()))
            })
            .collect();
        let wanted: BTreeSet<_> = desired.values().flat_map(|(_, p)| p).copied().collect();
        for probe in podtrace_ebpf::Probe::ALL {
            if wanted.contains(&probe) != self.enabled.contains(&probe) {
                let status = probes.set_enabled(probe, wanted.contains(&probe));
                tracing::info!(probe = probe.name(), state = ?status.state, method = ?status.method, reason = ?status.reason, "probe");
            }
        }
        self.enabled = wanted;
        let gone: Vec<u64> =
            self.tracked.keys().filter(|id| !desired.contains_key(id)).copied().collect();
        for id in gone {
            if let Err(e) = probes.untrack(id) {
                tracing::warn!(cgroup_id = id, error = %e, "untracking a cgroup failed");
            }
            self.tracked.remove(&id);
        }
        for (id, (dir, wanted)) in desired {
            if self.tracked.get(&id) == Some(&wanted) {
                continue;
            }
            match probes.track(dir, wanted.iter().copied()) {
                Ok(tracked) if tracked == id => {
                    self.tracked.insert(id, wanted);
                }
                Ok(other) => {
                    // The directory was replaced since it was resolved: the next rescan
                    // resolves it again.
                    tracing::warn!(cgroup_id = id, now = other, cgroup = %dir.display(), "the cgroup changed while being tracked");
                    if let Err(e) = probes.untrack(other) {
                        tracing::warn!(cgroup_id = other, error = %e, "untracking a cgroup failed");
                    }
                }
                Err(e) => tracing::warn!(cgroup_id = id, error = %e, "tracking a cgroup failed"),
            }
        }
        self.metrics.packet_cgroups.set(probes.packet_cgroups() as i64);
        self.metrics.publish_statuses(&self.kernel_statuses());
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

    /// The directory a target is tracked with (whose inode is [`EbpfSource::key_of`]): its v2
    /// directory, where the packet programs attach, or with the process filter the directory
    /// its processes are listed from.
    pub fn dir_of<'a>(&self, cgroup: &'a crate::cgroup::Cgroup) -> Option<&'a Path> {
        match self.filter {
            Filter::Cgroup => cgroup.v2.as_deref(),
            Filter::Process => cgroup.procs_dir().map(PathBuf::as_path),
        }
    }

    /// Why the packet probes (networkBytes, dns, tcpRtt) do not measure a tracked cgroup, by
    /// key: their programs could not be attached at it.
    pub fn packet_problems(&self) -> BTreeMap<u64, String> {
        self.probes.as_ref().map(Probes::packet_problems).unwrap_or_default()
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
                let stats_active = probes.bpf_stats_active();
                self.metrics.record(&snap, stats_active);
                Some(snap)
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the eBPF maps failed");
                None
            }
        }
    }

    /// The status of every probe, as NodeTrace status and the `podtrace.probes` health read it.
    pub fn statuses(&self) -> Vec<ProbeStatus> {
        self.kernel_statuses().into_iter().map(crd::status).collect()
    }

    /// The status of every probe in the kernel's vocabulary: a probe no target asks for is
    /// Disabled (the crate reports what it loaded), and with nothing loaded every probe is
    /// Unavailable with the load error.
    fn kernel_statuses(&self) -> Vec<podtrace_ebpf::ProbeStatus> {
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
            None => podtrace_ebpf::Probe::ALL
                .into_iter()
                .map(|probe| podtrace_ebpf::ProbeStatus {
                    probe,
                    state: ProbeState::Unavailable,
                    method: None,
                    reason: self.load_error.clone(),
                })
                .collect(),
        }
    }
}
