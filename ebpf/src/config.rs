//! Load-time settings of the probes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::probe::{AttachMethod, Probe};

/// Capacities of the kernel maps (entries). Every family gets its own maps of these sizes.
/// When one is full, new keys are dropped and counted (see `Snapshot::drops`), never silently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapSizes {
    /// Tracked cgroups (pods × containers on the node).
    pub tracked: u32,
    /// Histogram series: cgroups × process names × types.
    pub histograms: u32,
    /// Counter series.
    pub counters: u32,
    /// (cgroup, process name) pairs that keep their own name.
    pub process_names: u32,
    /// Operations in flight (connects, file syscalls, blocked threads, DNS queries).
    pub inflight: u32,
    /// Processes of the tracked targets, with [`Filter::Process`] (unused otherwise).
    pub processes: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        Self {
            tracked: 4096,
            histograms: 16384,
            counters: 16384,
            process_names: 16384,
            inflight: 16384,
            processes: 32768,
        }
    }
}

/// Settings for [`crate::Probes::load`].
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// Probes attached at load (the union over the node's profiles); others can be enabled
    /// later with [`crate::Probes::set_enabled`].
    pub probes: BTreeSet<Probe>,
    /// Map capacities.
    pub map_sizes: MapSizes,
    /// Process names per cgroup (and per probe family) that keep their own `process_name`;
    /// later names are counted as "other".
    pub max_process_names: u32,
    /// The cgroup v2 root, where loading checks that `cgroup_skb` programs can attach at all
    /// (they are then attached at each tracked cgroup, see [`crate::Probes::track`]).
    pub cgroup_skb_root: PathBuf,
    /// UDP port of DNS servers (53).
    pub dns_port: u16,
    /// Keep `kernel.bpf_stats_enabled` on while loaded, for per-program run counts and times.
    /// Off by default: it is node-wide, and every program run then pays two clock reads
    /// (`make bench-ebpf`, configuration `tracked-stats`).
    pub bpf_stats: bool,
    /// How the programs tell a tracked task from the others.
    pub filter: Filter,
    /// Attach methods never tried (for kernels where one misbehaves, and for tests of the
    /// ladder); reported as "skipped" in the probe's reason.
    pub skip_methods: BTreeSet<AttachMethod>,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            probes: Probe::ALL.into_iter().collect(),
            map_sizes: MapSizes::default(),
            max_process_names: 16,
            cgroup_skb_root: default_cgroup2_root(),
            dns_port: 53,
            bpf_stats: false,
            skip_methods: BTreeSet::new(),
            filter: Filter::Cgroup,
        }
    }
}

/// The cgroup v2 mount: `/sys/fs/cgroup` on a unified host, `/sys/fs/cgroup/unified` on a
/// hybrid one.
pub fn default_cgroup2_root() -> PathBuf {
    let unified = Path::new("/sys/fs/cgroup");
    if unified.join("cgroup.controllers").exists() {
        unified.to_path_buf()
    } else {
        unified.join("unified")
    }
}

/// How the kernel programs decide that an event belongs to a tracked target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Filter {
    /// By the task's (or socket's) cgroup v2 id: the targets are tracked with
    /// [`crate::Probes::track`] under their cgroup id. Needs a cgroup v2 hierarchy.
    Cgroup,
    /// By process: the programs look the current tgid up in a map that the agent fills from
    /// each target's `cgroup.procs` ([`crate::Probes::set_processes`]), for nodes with no
    /// cgroup v2 hierarchy. A target is tracked under any unique key (its cgroup directory's
    /// inode). Costs one more hash lookup per event; `dns` is unavailable (its `cgroup_skb`
    /// programs see only the socket's cgroup v2 id) and `networkBytes` counts payload bytes of
    /// the socket calls. A child of a tracked process is tracked from its fork and an exited
    /// process removed at its exit, by kernel programs loaded with this filter
    /// ([`crate::Probes::fork_following`]); where they cannot attach, a process started since
    /// the last `set_processes` is not seen until the next.
    Process,
}

impl Filter {
    /// `cgroup` or `process`, as in logs, metrics and NodeTrace status.
    pub fn name(self) -> &'static str {
        match self {
            Filter::Cgroup => "cgroup",
            Filter::Process => "process",
        }
    }

    /// The filter for a node: by cgroup when a cgroup v2 hierarchy is mounted at `cgroup2_root`
    /// (`Some`), else by process.
    pub fn for_node(cgroup2_root: Option<&Path>) -> Filter {
        match cgroup2_root {
            Some(root) if root.join("cgroup.procs").exists() => Filter::Cgroup,
            _ => Filter::Process,
        }
    }
}
