//! [`Probes`]: the loaded probe families, the tracked cgroups and the map reads.
//!
//! ```text
//! Probes
//!  ├─ families: family name -> LoadedFamily { Ebpf (maps + programs + links), chosen rung }
//!  ├─ targets:  cgroup id -> { target index, probes }   (mirrored into every family's `tracked`)
//!  ├─ owners:   tgid -> cgroup id, process filter only   (the tgids the agent listed)
//!  ├─ tgids:    process filter only: the one `tracked_tgids` map every family reads, and the
//!  │            follower (fork + exit programs) that adds children and removes exited tgids
//!  └─ enabled:  probes attached node-wide
//! ```
//! Dropping a `LoadedFamily` closes its object: aya detaches the links and the kernel frees
//! the programs and maps. That is how a disabled probe and a dropped `Probes` leave nothing
//! behind.

use crate::abi::{
    BLOCK_START_CGROUP, ERR_COUNT, NET_RECV, NET_SEND, PtBlockStart, PtCommKey, PtCounter, PtHist,
    PtKey, PtNetCounters, PtTarget, err,
};
use crate::config::{Filter, ProbeConfig};
use crate::error::{Error, Result};
use crate::histogram::Histogram;
use crate::ladder::{AttachEnv, FAMILIES, FOLLOW, Family, Rung, family_of, try_rung};
use crate::snapshot::{
    CounterSample, HistogramSample, OTHER_PROCESS, Op, ProgramStats, Series, Snapshot, process_name,
};
use aya::maps::{HashMap, IterableMap, Map, MapData, MapError, PerCpuArray, PerCpuHashMap};
use aya::{Btf, Ebpf, EbpfLoader};
use podtrace_api::nodetrace::{AttachMethod, ProbeState, ProbeStatus};
use podtrace_api::profile::Probe;
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

/// Bit of a probe in the kernel's `pt_target.probes` mask: its position in `Probe::ALL`.
pub fn probe_bit(probe: Probe) -> u32 {
    Probe::ALL.iter().position(|p| *p == probe).expect("in ALL") as u32
}

fn mask(probes: impl IntoIterator<Item = Probe>) -> u32 {
    probes.into_iter().fold(0, |m, p| m | (1 << probe_bit(p)))
}

/// The name of a method as in NodeTrace status and metrics ("tp_btf").
pub fn method_name(method: AttachMethod) -> &'static str {
    match method {
        AttachMethod::Fentry => "fentry",
        AttachMethod::TpBtf => "tp_btf",
        AttachMethod::RawTracepoint => "raw_tracepoint",
        AttachMethod::Tracepoint => "tracepoint",
        AttachMethod::CgroupSkb => "cgroup_skb",
        AttachMethod::Kprobe => "kprobe",
    }
}

struct LoadedFamily {
    family: &'static Family,
    rung: &'static Rung,
    ebpf: Ebpf,
    /// Why the better rungs were not taken ("fentry: …; …"), empty on the first rung.
    fallbacks: String,
}

/// The process filter's kernel state shared by every family.
struct Tgids {
    /// The one `tracked_tgids` (a `Map::HashMap`), created by [`shared_tgids_map`] and put in
    /// place of each object's own copy by [`share_map`].
    map: Map,
    /// The fork and exit programs, or why they could not be attached anywhere.
    follower: Result<LoadedFamily, String>,
}

impl Tgids {
    fn fd(&self) -> Result<BorrowedFd<'_>, String> {
        match &self.map {
            Map::HashMap(data) => Ok(data.fd().as_fd()),
            _ => Err(format!("{TRACKED_TGIDS} is not a hash map")),
        }
    }
}

#[derive(Clone, Debug)]
struct Target {
    index: u32,
    probes: BTreeSet<Probe>,
}

/// The node's eBPF probes. See the crate documentation for the life cycle.
pub struct Probes {
    config: ProbeConfig,
    /// The kernel's BTF, parsed by the first family load of a change ([`Probes::kernel_btf`])
    /// and dropped when the change is done ([`Probes::with_btf`]): parsed, vmlinux's BTF holds
    /// ~13 MiB, which the agent would otherwise keep for its whole life to serve the rare reloads
    /// of a profile change, and a start with no probe wanted never parses it.
    btf: OnceLock<Option<Btf>>,
    families: BTreeMap<&'static str, LoadedFamily>,
    enabled: BTreeSet<Probe>,
    statuses: BTreeMap<Probe, ProbeStatus>,
    targets: BTreeMap<u64, Target>,
    /// Process filter: the target key each tgid the agent listed belongs to (one owner per
    /// tgid). The kernel map also holds the children the follower added (`followed`) and no
    /// longer holds the tgids that exited.
    owners: BTreeMap<u32, u64>,
    /// Process filter only: the shared `tracked_tgids` and the follower.
    tgids: Option<Tgids>,
    /// Keeps the kernel's bpf_stats on while held (BPF_ENABLE_STATS).
    stats: Option<OwnedFd>,
    /// Written to `tracked_gen` after every change of the tracked cgroups or of the enabled
    /// probes: the kernel's per-task caches of the tracked check are stale when it moves.
    generation: u32,
}

impl Probes {
    /// Loads and attaches the families of `config.probes`, each down its ladder.
    ///
    /// Returns the status of every probe (in `Probe::ALL` order): `Attached` with the method,
    /// `Unavailable` with the kernel's reason for each rung, or `Disabled`. A probe that cannot
    /// attach never fails the call; only an unusable configuration does.
    pub fn load(config: &ProbeConfig) -> Result<(Probes, Vec<ProbeStatus>)> {
        let stats = if config.bpf_stats {
            match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot enable bpf_stats; program run counts stay 0");
                    None
                }
            }
        } else {
            None
        };
        let mut probes = Probes {
            config: config.clone(),
            btf: OnceLock::new(),
            families: BTreeMap::new(),
            enabled: config.probes.clone(),
            statuses: BTreeMap::new(),
            targets: BTreeMap::new(),
            owners: BTreeMap::new(),
            tgids: None,
            stats,
            generation: 0,
        };
        if config.filter == Filter::Process {
            let map = shared_tgids_map(config.map_sizes.processes.max(1))?;
            probes.tgids = Some(Tgids { map, follower: Err(String::new()) });
            let follower = probes.with_btf(|probes| probes.load_follower());
            match &follower {
                Ok(loaded) => tracing::info!(
                    method = method_name(loaded.rung.method),
                    fell_back_from = %loaded.fallbacks,
                    "process filter: forks followed in the kernel (a child of a tracked process is tracked from its fork, an exited process is removed at its exit)"
                ),
                Err(reason) => tracing::warn!(
                    %reason,
                    "process filter: forks not followed; a new process is measured from the agent's next listing of its target, one that starts and exits between two listings is not seen"
                ),
            }
            probes.tgids.as_mut().expect("just set").follower = follower;
        }
        probes.with_btf(|probes| {
            for family in FAMILIES {
                probes.sync_family(family);
            }
        });
        probes.publish_generation();
        let statuses = probes.statuses();
        Ok((probes, statuses))
    }

    /// The status of every probe, in `Probe::ALL` order.
    pub fn statuses(&self) -> Vec<ProbeStatus> {
        probes_statuses(&self.statuses)
    }

    /// Attaches (`true`) or detaches (`false`) a probe node-wide, without touching the others.
    /// Detaching the last probe of a family unloads the family (its series restart at zero
    /// when enabled again). Returns the probe's new status.
    pub fn set_enabled(&mut self, probe: Probe, enabled: bool) -> ProbeStatus {
        if enabled {
            self.enabled.insert(probe);
        } else {
            self.enabled.remove(&probe);
        }
        let family = family_of(probe);
        self.with_btf(|probes| probes.sync_family(family));
        self.publish_generation();
        self.statuses[&probe].clone()
    }

    /// Starts measuring a cgroup v2 (by id, see [`crate::cgroup_id`]) for `probes`.
    /// Calling it again for the same cgroup replaces its index and probes.
    pub fn track(
        &mut self,
        cgroup_id: u64,
        target_index: u32,
        probes: impl IntoIterator<Item = Probe>,
    ) -> Result<()> {
        let target = Target { index: target_index, probes: probes.into_iter().collect() };
        let previous = self.targets.insert(cgroup_id, target);
        let names: Vec<&'static str> = self.families.keys().copied().collect();
        for name in names {
            if let Err(e) = self.write_target(name, cgroup_id) {
                match previous {
                    Some(p) => self.targets.insert(cgroup_id, p),
                    None => self.targets.remove(&cgroup_id),
                };
                self.rewrite_targets_of(cgroup_id);
                self.publish_generation(); // a task may have cached the half-written state
                return Err(e);
            }
        }
        self.publish_generation();
        tracing::debug!(cgroup_id, target_index, "tracking cgroup");
        Ok(())
    }

    /// Stops measuring a cgroup and deletes its series from the kernel maps. Returns whether
    /// it was tracked. Operations in flight finish uncounted and their start entries are
    /// removed by the kernel when they complete.
    pub fn untrack(&mut self, cgroup_id: u64) -> Result<bool> {
        let was = self.targets.remove(&cgroup_id).is_some();
        self.set_processes_unchecked(cgroup_id, &BTreeSet::new())?;
        for loaded in self.families.values_mut() {
            let name = loaded.family.name;
            let mut tracked = typed_map::<u64, PtTarget>(&mut loaded.ebpf, name, "tracked")?;
            ignore_missing(tracked.remove(&cgroup_id)).map_err(|e| map_err(name, "tracked", e))?;
            if name == NETWORK {
                set_net_bytes(&mut loaded.ebpf, cgroup_id, false)?;
            }
            if name == CPU_BLOCK {
                // Blocks in flight of its threads are dropped; the others' entries stay.
                let mut m = typed_map::<u32, PtBlockStart>(&mut loaded.ebpf, name, "block_start")?;
                let doomed: Vec<u32> = m
                    .iter()
                    .filter_map(|e| e.ok())
                    .filter(|(_, v)| v[BLOCK_START_CGROUP] == cgroup_id)
                    .map(|(tid, _)| tid)
                    .collect();
                for tid in doomed {
                    ignore_missing(m.remove(&tid)).map_err(|e| map_err(name, "block_start", e))?;
                }
            }
            purge(&mut loaded.ebpf, name, |id| id == cgroup_id)?;
        }
        self.publish_generation();
        Ok(was)
    }

    /// The filter the programs were loaded with.
    pub fn filter(&self) -> Filter {
        self.config.filter
    }

    /// With [`Filter::Process`]: makes `tgids` the processes of the tracked target `cgroup_id`.
    /// With [`Filter::Cgroup`] it does nothing. Call it for every target every interval, from
    /// its `cgroup.procs`.
    ///
    /// Afterwards the kernel map holds, for this target, exactly `tgids` plus the children the
    /// follower adds from then on (a tgid listed by two targets belongs to the last that listed
    /// it). The children the follower added before the call and that are not listed are removed:
    /// they left the target's cgroup (a dead one was already removed at its exit), or they were
    /// forked between the read of `cgroup.procs` and this call (then they are measured again
    /// from the next listing). Without the follower ([`Probes::fork_following`] is an error), a
    /// process started since the last call is not measured until the next.
    pub fn set_processes(&mut self, cgroup_id: u64, tgids: &BTreeSet<u32>) -> Result<()> {
        if self.config.filter != Filter::Process || !self.targets.contains_key(&cgroup_id) {
            return Ok(());
        }
        self.set_processes_unchecked(cgroup_id, tgids)
    }

    /// The tgids the agent listed for a target, with the process filter (not the children the
    /// kernel added since: see [`Probes::kernel_processes`]).
    pub fn processes(&self, cgroup_id: u64) -> impl Iterator<Item = u32> + '_ {
        self.owners.iter().filter(move |(_, k)| **k == cgroup_id).map(|(t, _)| *t)
    }

    /// With the process filter: what the programs filter by, read from the kernel map (tgid ->
    /// target key): the listed tgids that have not exited and the children the follower added.
    /// Empty with the cgroup filter.
    pub fn kernel_processes(&self) -> Result<BTreeMap<u32, u64>> {
        let Some(tgids) = &self.tgids else { return Ok(BTreeMap::new()) };
        let m = HashMap::<&MapData, u32, u64>::try_from(&tgids.map)
            .map_err(|e| map_err(FOLLOW.name, TRACKED_TGIDS, e))?;
        m.iter().collect::<Result<_, _>>().map_err(|e| map_err(FOLLOW.name, TRACKED_TGIDS, e))
    }

    /// With the process filter: the children the follower added and the agent has not listed
    /// (or dropped) yet, read from the kernel (`followed`: tgid -> target key). Empty with the
    /// cgroup filter or without the follower.
    pub fn kernel_children(&self) -> Result<BTreeMap<u32, u64>> {
        let Some(Ok(follower)) = self.tgids.as_ref().map(|t| &t.follower) else {
            return Ok(BTreeMap::new());
        };
        let map = follower.ebpf.map(FOLLOWED).ok_or_else(|| {
            map_err(FOLLOW.name, FOLLOWED, MapError::InvalidName { name: FOLLOWED.into() })
        })?;
        let m = HashMap::<&MapData, u32, u64>::try_from(map)
            .map_err(|e| map_err(FOLLOW.name, FOLLOWED, e))?;
        m.iter().collect::<Result<_, _>>().map_err(|e| map_err(FOLLOW.name, FOLLOWED, e))
    }

    /// With the process filter: the method of the programs that follow forks and exits in the
    /// kernel, or why none could be attached (the reason of every rung); `None` with the cgroup
    /// filter.
    pub fn fork_following(&self) -> Option<std::result::Result<AttachMethod, &str>> {
        let tgids = self.tgids.as_ref()?;
        Some(tgids.follower.as_ref().map(|l| l.rung.method).map_err(String::as_str))
    }

    fn set_processes_unchecked(&mut self, cgroup_id: u64, tgids: &BTreeSet<u32>) -> Result<()> {
        let Some(shared) = self.tgids.as_mut() else { return Ok(()) };
        let family = FOLLOW.name;
        let capacity = self.config.map_sizes.processes;
        let mut m = HashMap::<&mut MapData, u32, u64>::try_from(&mut shared.map)
            .map_err(|e| map_err(family, TRACKED_TGIDS, e))?;
        // The children the kernel added for this target: the listed ones are the agent's from
        // now on, the others go (unless another target listed them meanwhile).
        if let Ok(follower) = shared.follower.as_mut() {
            let mut followed = typed_map::<u32, u64>(&mut follower.ebpf, family, FOLLOWED)?;
            // Collect first: deleting while walking a hash map restarts the walk.
            let children: Vec<u32> = followed
                .iter()
                .filter_map(|e| e.ok())
                .filter(|(_, key)| *key == cgroup_id)
                .map(|(tgid, _)| tgid)
                .collect();
            for tgid in children {
                ignore_missing(followed.remove(&tgid)).map_err(|e| map_err(family, FOLLOWED, e))?;
                let other_owner = self.owners.get(&tgid).is_some_and(|k| *k != cgroup_id);
                if !tgids.contains(&tgid) && !other_owner {
                    ignore_missing(m.remove(&tgid))
                        .map_err(|e| map_err(family, TRACKED_TGIDS, e))?;
                }
            }
        }
        let gone: Vec<u32> = self
            .owners
            .iter()
            .filter(|(t, k)| **k == cgroup_id && !tgids.contains(t))
            .map(|(t, _)| *t)
            .collect();
        for tgid in gone {
            ignore_missing(m.remove(&tgid)).map_err(|e| map_err(family, TRACKED_TGIDS, e))?;
            self.owners.remove(&tgid);
        }
        // Every listed tgid is written, not only the new ones: the exit program removed the
        // entries of the processes that exited, and a listed pid may be a reused one.
        for tgid in tgids {
            m.insert(tgid, cgroup_id, 0).map_err(|e| match &e {
                MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::E2BIG) => {
                    Error::ProcessMapFull { capacity }
                }
                _ => map_err(family, TRACKED_TGIDS, e),
            })?;
            self.owners.insert(*tgid, cgroup_id);
        }
        Ok(())
    }

    /// Whether the kernel counts the programs' runs and run time now: this process holds
    /// BPF_ENABLE_STATS ([`ProbeConfig::bpf_stats`]), or `kernel.bpf_stats_enabled` is on.
    pub fn bpf_stats_active(&self) -> bool {
        self.stats.is_some() || bpf_stats_sysctl()
    }

    /// The tracked cgroup ids.
    pub fn tracked(&self) -> impl Iterator<Item = u64> + '_ {
        self.targets.keys().copied()
    }

    /// Reads every map once: the series of tracked cgroups, drops and program stats. Series
    /// of cgroups no longer tracked (written by an event racing with `untrack`) are deleted
    /// in the same pass.
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        let mut snap = Snapshot::default();
        for loaded in self.families.values_mut() {
            read_family(loaded, &self.targets, &mut snap)?;
        }
        if let Some(Ok(follower)) = self.tgids.as_ref().map(|t| &t.follower) {
            read_drops(&follower.ebpf, FOLLOW.name, &mut snap)?;
            read_programs(follower, &mut snap);
        }
        Ok(snap)
    }

    /// Moves the generation the kernel's per-task caches are checked against (families
    /// without a cache have no `tracked_gen`). Never 0: a cache entry with gen 0 is invalid.
    fn publish_generation(&mut self) {
        self.generation = self.generation.wrapping_add(1).max(1);
        for loaded in self.families.values_mut() {
            let Some(map) = loaded.ebpf.map_mut("tracked_gen") else { continue };
            let result = aya::maps::Array::<&mut MapData, u32>::try_from(map)
                .and_then(|mut a| a.set(0, self.generation, 0));
            if let Err(e) = result {
                // Without it the programs keep using a stale tracked check: say so loudly.
                tracing::error!(family = loaded.family.name, error = %e, "cannot write tracked_gen");
            }
        }
    }

    fn sync_family(&mut self, family: &'static Family) {
        let wanted = family.probes.iter().any(|p| self.enabled.contains(p));
        let loaded = self.families.contains_key(family.name);
        if wanted && !loaded {
            match self.load_family(family) {
                Ok(loaded) => {
                    let method = loaded.rung.method;
                    tracing::info!(
                        family = family.name,
                        method = method_name(method),
                        "probes attached"
                    );
                    self.families.insert(family.name, loaded);
                    let ids: Vec<u64> = self.targets.keys().copied().collect();
                    for id in ids {
                        if let Err(e) = self.write_target(family.name, id) {
                            tracing::warn!(family = family.name, cgroup_id = id, error = %e, "cannot track cgroup");
                        }
                    }
                }
                Err(reason) => {
                    tracing::warn!(family = family.name, %reason, "probes unavailable");
                    for p in family.probes {
                        self.statuses.insert(
                            *p,
                            status(*p, ProbeState::Unavailable, None, Some(reason.clone())),
                        );
                    }
                    return;
                }
            }
        } else if !wanted && loaded {
            self.families.remove(family.name);
            tracing::info!(family = family.name, "probes detached");
        } else if wanted {
            let ids: Vec<u64> = self.targets.keys().copied().collect();
            for id in ids {
                if let Err(e) = self.write_target(family.name, id) {
                    tracing::warn!(family = family.name, cgroup_id = id, error = %e, "cannot update cgroup");
                }
            }
        }
        let loaded = self.families.get(family.name);
        let method = loaded.map(|l| l.rung.method);
        // On a lower rung, say why the better ones failed: an SRE asks "why not fentry?".
        let fallbacks = loaded.map(|l| l.fallbacks.clone()).filter(|f| !f.is_empty());
        for p in family.probes {
            let st = match (self.enabled.contains(p), method) {
                (true, Some(m)) => status(*p, ProbeState::Attached, Some(m), fallbacks.clone()),
                _ => status(*p, ProbeState::Disabled, None, None),
            };
            self.statuses.insert(*p, st);
        }
    }

    /// Runs `f` (which may load families) and drops the kernel BTF they parsed, if any.
    fn with_btf<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        let out = f(self);
        self.btf = OnceLock::new();
        out
    }

    /// The kernel's BTF, parsed on first use within [`Probes::with_btf`].
    fn kernel_btf(&self) -> Option<&Btf> {
        self.btf
            .get_or_init(|| match Btf::from_sys_fs() {
                Ok(btf) => Some(btf),
                Err(e) => {
                    tracing::warn!(error = %e, "no kernel BTF: fentry and tp_btf rungs unavailable, CO-RE fails");
                    None
                }
            })
            .as_ref()
    }

    /// Loads a family's object and walks its ladder; the error is the reason of every rung.
    fn load_family(&self, family: &'static Family) -> Result<LoadedFamily, String> {
        let sizes = &self.config.map_sizes;
        let mut loader = EbpfLoader::new();
        loader
            .btf(self.kernel_btf())
            // task_cache (task storage) has no aya type; only the kernel programs use it.
            .allow_unsupported_maps()
            .map_max_entries("tracked", sizes.tracked)
            .map_max_entries("net_bytes", sizes.tracked)
            .map_max_entries("hists", sizes.histograms)
            .map_max_entries("counters", sizes.counters)
            .map_max_entries("comms", sizes.process_names)
            .override_global("pt_max_comms", &self.config.max_process_names, true);
        // The cgroup filter's objects have no `tracked_tgids` (see podtrace_common.h).
        let object = match self.config.filter {
            Filter::Cgroup => family.object,
            Filter::Process => {
                loader.map_max_entries(TRACKED_TGIDS, sizes.processes.max(1));
                family.object_by_tgid
            }
        };
        for inflight in ["connect_start", "block_start", "fs_start", "dns_start"] {
            loader.map_max_entries(inflight, sizes.inflight);
        }
        if family.name == "dns" {
            loader.override_global("pt_dns_port", &self.config.dns_port, true);
        }
        let ebpf = loader.load(object).map_err(|e| format!("object: {e}"))?;
        if let Some(tgids) = &self.tgids {
            share_map(&ebpf, TRACKED_TGIDS, tgids.fd()?)
                .map_err(|e| format!("{TRACKED_TGIDS}: {e}"))?;
        }
        self.walk_ladder(family, ebpf)
    }

    /// Loads the follower (process filter): its object with the shared `tracked_tgids`, down
    /// its ladder. The error is the reason of every rung.
    fn load_follower(&self) -> Result<LoadedFamily, String> {
        let tgids = self.tgids.as_ref().expect("process filter");
        let size = self.config.map_sizes.processes.max(1);
        let mut loader = EbpfLoader::new();
        loader
            .btf(self.kernel_btf())
            .map_max_entries(TRACKED_TGIDS, size)
            .map_max_entries(FOLLOWED, size);
        let ebpf = loader.load(FOLLOW.object).map_err(|e| format!("object: {e}"))?;
        share_map(&ebpf, TRACKED_TGIDS, tgids.fd()?)
            .map_err(|e| format!("{TRACKED_TGIDS}: {e}"))?;
        self.walk_ladder(&FOLLOW, ebpf)
    }

    /// Tries the rungs of `family` on its loaded object, best first.
    fn walk_ladder(&self, family: &'static Family, mut ebpf: Ebpf) -> Result<LoadedFamily, String> {
        let env = AttachEnv { btf: self.kernel_btf(), cgroup_root: &self.config.cgroup_skb_root };
        let mut reasons = Vec::new();
        for rung in family.rungs {
            let method = method_name(rung.method);
            if self.config.skip_methods.contains(&rung.method) {
                reasons.push(format!("{method}: skipped by configuration"));
                continue;
            }
            if self.config.filter == Filter::Process && rung.method == AttachMethod::CgroupSkb {
                // Its programs see the socket's cgroup v2 id only, never the process.
                reasons.push(format!("{method}: not used with the process filter"));
                continue;
            }
            match try_rung(&mut ebpf, rung, &env) {
                Ok(()) => {
                    if !reasons.is_empty() {
                        tracing::info!(family = family.name, method, fell_back_from = %reasons.join("; "), "ladder");
                    }
                    let fallbacks = reasons.join("; ");
                    return Ok(LoadedFamily { family, rung, ebpf, fallbacks });
                }
                Err(reason) => reasons.push(format!("{method}: {reason}")),
            }
        }
        Err(reasons.join("; "))
    }

    fn write_target(&mut self, family: &'static str, cgroup_id: u64) -> Result<()> {
        let Some(target) = self.targets.get(&cgroup_id) else { return Ok(()) };
        let probes = mask(target.probes.iter().copied().filter(|p| self.enabled.contains(p)));
        let index = target.index;
        let capacity = self.config.map_sizes.tracked;
        let loaded = self.families.get_mut(family).expect("loaded family");
        let mut tracked = typed_map::<u64, PtTarget>(&mut loaded.ebpf, family, "tracked")?;
        let comms = tracked.get(&cgroup_id, 0).map(|t| t.comms).unwrap_or(0);
        let value = PtTarget { index, probes, comms, _pad: 0 };
        let full = |map: &'static str, e: MapError| match &e {
            MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::E2BIG) => {
                Error::TrackedMapFull { capacity }
            }
            _ => map_err(family, map, e),
        };
        tracked.insert(cgroup_id, value, 0).map_err(|e| full("tracked", e))?;
        if family == NETWORK {
            let wanted = probes & (1 << probe_bit(Probe::NetworkBytes)) != 0;
            set_net_bytes(&mut loaded.ebpf, cgroup_id, wanted).map_err(|e| match e {
                Error::Map { source, .. } => full("net_bytes", *source),
                other => other,
            })?;
        }
        Ok(())
    }

    /// After a failed `track`, puts the kernel maps back to what `targets` says.
    fn rewrite_targets_of(&mut self, cgroup_id: u64) {
        let names: Vec<&'static str> = self.families.keys().copied().collect();
        for name in names {
            if self.targets.contains_key(&cgroup_id) {
                let _ = self.write_target(name, cgroup_id);
            } else if let Some(l) = self.families.get_mut(name) {
                if let Ok(mut m) = typed_map::<u64, PtTarget>(&mut l.ebpf, name, "tracked") {
                    let _ = m.remove(&cgroup_id);
                }
                if name == NETWORK {
                    let _ = set_net_bytes(&mut l.ebpf, cgroup_id, false);
                }
            }
        }
    }
}

fn status(
    probe: Probe,
    state: ProbeState,
    method: Option<AttachMethod>,
    reason: Option<String>,
) -> ProbeStatus {
    ProbeStatus { probe, state, method, reason }
}

fn probes_statuses(map: &BTreeMap<Probe, ProbeStatus>) -> Vec<ProbeStatus> {
    Probe::ALL
        .iter()
        .map(|p| {
            map.get(p).cloned().unwrap_or_else(|| status(*p, ProbeState::Disabled, None, None))
        })
        .collect()
}

fn typed_map<'a, K: aya::Pod, V: aya::Pod>(
    ebpf: &'a mut Ebpf,
    family: &'static str,
    map: &'static str,
) -> Result<HashMap<&'a mut MapData, K, V>> {
    let m = ebpf
        .map_mut(map)
        .ok_or_else(|| map_err(family, map, MapError::InvalidName { name: map.into() }))?;
    HashMap::try_from(m).map_err(|e| map_err(family, map, e))
}

fn map_err(family: &'static str, map: &'static str, e: MapError) -> Error {
    Error::Map { family, map, source: Box::new(e) }
}

fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        // aya reports a delete of a missing key as the syscall's ENOENT.
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

/// The process filter's map (tgid -> target key): one instance shared by every object.
const TRACKED_TGIDS: &str = "tracked_tgids";
/// The follower's map of the children it added (tgid -> target key).
const FOLLOWED: &str = "followed";

/// Creates the process filter's `tracked_tgids` (the definition of podtrace_tgids.h: hash,
/// u32 -> u64, not preallocated).
fn shared_tgids_map(max_entries: u32) -> Result<Map> {
    const BPF_MAP_TYPE_HASH: u32 = 1;
    const BPF_F_NO_PREALLOC: u32 = 1;
    let def =
        aya_obj::Map::new_from_params(BPF_MAP_TYPE_HASH, 4, 8, max_entries, BPF_F_NO_PREALLOC);
    MapData::create(def, TRACKED_TGIDS, None)
        .and_then(Map::from_map_data)
        .map_err(|e| map_err(FOLLOW.name, TRACKED_TGIDS, e))
}

/// Makes the map `name` of a loaded object (none of its programs loaded yet) the `shared` one.
///
/// aya 0.14 has no way to hand an existing map to an object short of pinning it in a mounted
/// bpffs (which a node may not have, and which outlives a killed agent). But aya has already
/// written the fd *number* of the object's own map into the programs' instructions, and the
/// kernel resolves it only when a program is loaded: duplicating the shared map onto that
/// number (dup3, keeping close-on-exec) makes every program of the object use the shared map.
/// The object's own copy, referenced by nothing else, is freed. aya's `MapData` still owns
/// that fd number and closes it on drop, which releases one reference to the shared map.
#[allow(
    unsafe_code,
    reason = "dup3 onto an fd number aya owns: the number stays open and owned by aya's MapData, only the map behind it changes (see above)"
)]
fn share_map(ebpf: &Ebpf, name: &str, shared: BorrowedFd<'_>) -> std::result::Result<(), String> {
    let map = ebpf.map(name).ok_or_else(|| "missing from the object".to_string())?;
    let own = HashMap::<&MapData, u32, u64>::try_from(map).map_err(|e| e.to_string())?;
    let target = own.map().fd().as_fd().as_raw_fd();
    // SAFETY: both fds are open for the whole call; `target` is owned by aya's MapData, which
    // keeps owning (and later closes) the same number.
    let r = unsafe { libc::dup3(shared.as_raw_fd(), target, libc::O_CLOEXEC) };
    if r < 0 {
        return Err(crate::ladder::errno_text(&std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The family whose counters are keyed by cgroup id alone (`net_bytes`).
const NETWORK: &str = "network";
/// The family with a start entry per thread (`block_start`).
const CPU_BLOCK: &str = "cpu_block";

/// Creates (zero, if absent) or deletes a cgroup's entry of `net_bytes`: the entry is the
/// network programs' tracked check.
fn set_net_bytes(ebpf: &mut Ebpf, cgroup_id: u64, wanted: bool) -> Result<()> {
    let mut m = per_cpu_map::<u64, PtNetCounters>(ebpf, NETWORK, "net_bytes")?;
    if !wanted {
        return ignore_missing(m.remove(&cgroup_id)).map_err(|e| map_err(NETWORK, "net_bytes", e));
    }
    let syscall = |call, io_error| {
        map_err(
            NETWORK,
            "net_bytes",
            MapError::SyscallError(aya::sys::SyscallError { call, io_error }),
        )
    };
    let cpus = aya::util::nr_cpus().map_err(|(call, e)| syscall(call, e))?;
    let zero = aya::maps::PerCpuValues::try_from(vec![PtNetCounters::default(); cpus])
        .map_err(|e| syscall("nr_cpus", e))?;
    match m.insert(cgroup_id, zero, 1 /* BPF_NOEXIST */) {
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r.map_err(|e| map_err(NETWORK, "net_bytes", e)),
    }
}

fn per_cpu_map<'a, K: aya::Pod, V: aya::Pod>(
    ebpf: &'a mut Ebpf,
    family: &'static str,
    map: &'static str,
) -> Result<PerCpuHashMap<&'a mut MapData, K, V>> {
    let m = ebpf
        .map_mut(map)
        .ok_or_else(|| map_err(family, map, MapError::InvalidName { name: map.into() }))?;
    PerCpuHashMap::try_from(m).map_err(|e| map_err(family, map, e))
}

/// Deletes the histogram, counter and process-name entries of the cgroups `doomed` selects.
fn purge(ebpf: &mut Ebpf, family: &'static str, doomed: impl Fn(u64) -> bool) -> Result<()> {
    purge_series::<PtHist>(ebpf, family, "hists", &doomed)?;
    purge_series::<PtCounter>(ebpf, family, "counters", &doomed)?;
    purge_map::<PtCommKey, u8>(ebpf, family, "comms", |k| doomed(k.cgroup_id))
}

/// `purge_map` for the per-CPU series maps.
fn purge_series<V: aya::Pod>(
    ebpf: &mut Ebpf,
    family: &'static str,
    map: &'static str,
    doomed: &impl Fn(u64) -> bool,
) -> Result<()> {
    let mut m = per_cpu_map::<PtKey, V>(ebpf, family, map)?;
    let keys: Vec<PtKey> =
        m.keys().collect::<Result<_, _>>().map_err(|e| map_err(family, map, e))?;
    for key in keys.iter().filter(|k| doomed(k.cgroup_id)) {
        ignore_missing(m.remove(key)).map_err(|e| map_err(family, map, e))?;
    }
    Ok(())
}

fn purge_map<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    family: &'static str,
    map: &'static str,
    doomed: impl Fn(&K) -> bool,
) -> Result<()> {
    let mut m = typed_map::<K, V>(ebpf, family, map)?;
    // Collect first: deleting while walking a hash map restarts the walk.
    let keys: Vec<K> = m.keys().collect::<Result<_, _>>().map_err(|e| map_err(family, map, e))?;
    for key in keys.iter().filter(|k| doomed(k)) {
        ignore_missing(m.remove(key)).map_err(|e| map_err(family, map, e))?;
    }
    Ok(())
}

fn read_family(
    loaded: &mut LoadedFamily,
    targets: &BTreeMap<u64, Target>,
    snap: &mut Snapshot,
) -> Result<()> {
    let name = loaded.family.name;
    let series = |k: &PtKey| -> Option<Series> {
        let target = targets.get(&k.cgroup_id)?;
        let probe = *Probe::ALL.get(usize::from(k.probe))?;
        Some(Series {
            cgroup_id: k.cgroup_id,
            target_index: target.index,
            probe,
            op: Op::from_raw(k.op),
            process_name: process_name(&k.comm),
        })
    };
    {
        let mut hists = per_cpu_map::<PtKey, PtHist>(&mut loaded.ebpf, name, "hists")?;
        let mut stale = Vec::new();
        for entry in hists.iter() {
            let (k, per_cpu) = entry.map_err(|e| map_err(name, "hists", e))?;
            match series(&k) {
                Some(series) => {
                    let histogram = sum_histograms(per_cpu.iter());
                    snap.histograms.push(HistogramSample { series, histogram });
                }
                None => stale.push(k),
            }
        }
        for k in &stale {
            ignore_missing(hists.remove(k)).map_err(|e| map_err(name, "hists", e))?;
        }
    }
    {
        let mut counters = per_cpu_map::<PtKey, PtCounter>(&mut loaded.ebpf, name, "counters")?;
        let mut stale = Vec::new();
        for entry in counters.iter() {
            let (k, per_cpu) = entry.map_err(|e| map_err(name, "counters", e))?;
            match series(&k) {
                Some(series) => {
                    let bytes = per_cpu.iter().map(|c| c.bytes).sum();
                    let events = per_cpu.iter().map(|c| c.events).sum();
                    snap.counters.push(CounterSample { series, bytes, events })
                }
                None => stale.push(k),
            }
        }
        for k in &stale {
            ignore_missing(counters.remove(k)).map_err(|e| map_err(name, "counters", e))?;
        }
    }
    if name == NETWORK {
        let mut net = per_cpu_map::<u64, PtNetCounters>(&mut loaded.ebpf, name, "net_bytes")?;
        let mut stale = Vec::new();
        for entry in net.iter() {
            let (cgroup_id, per_cpu) = entry.map_err(|e| map_err(name, "net_bytes", e))?;
            let Some(target) = targets.get(&cgroup_id) else {
                stale.push(cgroup_id);
                continue;
            };
            for (dir, op) in [(NET_SEND, Op::Send), (NET_RECV, Op::Recv)] {
                let bytes = per_cpu.iter().map(|c| c[dir].bytes).sum();
                let events: u64 = per_cpu.iter().map(|c| c[dir].events).sum();
                if events == 0 {
                    continue; /* a series appears with its first packet, as the others do */
                }
                let series = Series {
                    cgroup_id,
                    target_index: target.index,
                    probe: Probe::NetworkBytes,
                    op,
                    process_name: OTHER_PROCESS.to_string(),
                };
                snap.counters.push(CounterSample { series, bytes, events });
            }
        }
        for k in &stale {
            ignore_missing(net.remove(k)).map_err(|e| map_err(name, "net_bytes", e))?;
        }
    }
    read_drops(&loaded.ebpf, name, snap)?;
    read_programs(loaded, snap);
    Ok(())
}

/// Adds a loaded object's `errors` to the snapshot's drops.
fn read_drops(ebpf: &Ebpf, name: &'static str, snap: &mut Snapshot) -> Result<()> {
    let m = ebpf
        .map("errors")
        .ok_or_else(|| map_err(name, "errors", MapError::InvalidName { name: "errors".into() }))?;
    let errors =
        PerCpuArray::<&MapData, u64>::try_from(m).map_err(|e| map_err(name, "errors", e))?;
    let mut sums = [0u64; ERR_COUNT];
    for (i, sum) in sums.iter_mut().enumerate() {
        let per_cpu = errors.get(&(i as u32), 0).map_err(|e| map_err(name, "errors", e))?;
        *sum = per_cpu.iter().sum();
    }
    let d = &mut snap.drops;
    d.histograms_full += sums[err::HIST_FULL as usize];
    d.counters_full += sums[err::COUNTER_FULL as usize];
    d.process_names_full += sums[err::COMM_FULL as usize];
    d.inflight_full += sums[err::INFLIGHT_FULL as usize];
    d.unclosed_blocks += sums[err::UNCLOSED as usize];
    d.processes_full += sums[err::PROCS_FULL as usize];
    Ok(())
}

/// Adds the run counts and times of a loaded object's programs (on its rung) to the snapshot.
fn read_programs(loaded: &LoadedFamily, snap: &mut Snapshot) {
    let name = loaded.family.name;
    for (program, _) in loaded.rung.programs {
        let Some(p) = loaded.ebpf.program(program) else { continue };
        match p.info() {
            Ok(info) => snap.programs.push(ProgramStats {
                family: name,
                program,
                id: info.id(),
                method: loaded.rung.method,
                run_count: info.run_count(),
                run_time: info.run_time(),
                recursion_misses: recursion_misses(p),
            }),
            Err(e) => tracing::debug!(program, error = %e, "program info"),
        }
    }
}

/// One histogram from the per-CPU values of a series: buckets, counts and sums added, the
/// latest value of the CPU that took a sample last.
fn sum_histograms<'a>(per_cpu: impl Iterator<Item = &'a PtHist>) -> Histogram {
    let mut out = Histogram::default();
    let mut latest_at = None;
    for v in per_cpu.filter(|v| v.count > 0) {
        for (o, b) in out.buckets.iter_mut().zip(v.buckets) {
            *o += b;
        }
        out.count += v.count;
        out.sum_ns += v.sum_ns;
        if latest_at.is_none_or(|at| v.latest_at >= at) {
            latest_at = Some(v.latest_at);
            out.latest_ns = v.latest_ns;
        }
    }
    out
}

/// `recursion_misses` of a program, from its fdinfo (aya 0.14's ProgramInfo does not expose
/// it); 0 when unknown.
fn recursion_misses(program: &aya::programs::Program) -> u64 {
    let Ok(fd) = program.fd() else { return 0 };
    let path = format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd());
    std::fs::read_to_string(path).map(|text| fdinfo_field(&text, "recursion_misses")).unwrap_or(0)
}

fn fdinfo_field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().parse().ok())
        .unwrap_or(0)
}

/// `kernel.bpf_stats_enabled`. It shows only what was written to it: stats enabled by a
/// BPF_ENABLE_STATS fd (how [`Probes`] turns them on) still read 0 there.
pub fn bpf_stats_sysctl() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|s| s.trim() == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_histograms_add_up_and_keep_the_most_recent_latest_value() {
        let mut a =
            PtHist { count: 2, sum_ns: 300, latest_ns: 200, latest_at: 50, ..Default::default() };
        a.buckets[0] = 2;
        let mut b = PtHist {
            count: 1,
            sum_ns: 5_000_000,
            latest_ns: 5_000_000,
            latest_at: 70,
            ..Default::default()
        };
        b.buckets[6] = 1;
        let idle = PtHist::default();
        let h = sum_histograms([a, idle, b].iter());
        assert_eq!((h.count, h.sum_ns, h.latest_ns), (3, 5_000_300, 5_000_000));
        assert_eq!((h.buckets[0], h.buckets[6], h.buckets.iter().sum::<u64>()), (2, 1, 3));
        // The order of the CPUs does not matter, an idle CPU never wins.
        assert_eq!(sum_histograms([b, a, idle].iter()).latest_ns, 5_000_000);
        b.latest_at = 10;
        assert_eq!(sum_histograms([idle, b, a].iter()).latest_ns, 200);
    }

    #[test]
    fn fdinfo_fields_are_parsed_by_exact_key() {
        let text = "prog_type:\t26\nrun_cnt:\t5\nrecursion_misses:\t3\nverified_insns:\t90\n";
        assert_eq!(fdinfo_field(text, "recursion_misses"), 3);
        assert_eq!(fdinfo_field(text, "run_cnt"), 5);
        assert_eq!(fdinfo_field(text, "missing"), 0);
    }

    #[test]
    fn probe_bits_are_distinct_and_fit_the_kernel_mask() {
        let all = mask(Probe::ALL);
        assert_eq!(all.count_ones() as usize, Probe::ALL.len());
        assert!(all < (1 << 7) + 1);
    }

    #[test]
    fn statuses_list_every_probe_in_order() {
        let s = probes_statuses(&BTreeMap::new());
        assert_eq!(s.iter().map(|s| s.probe).collect::<Vec<_>>(), Probe::ALL.to_vec());
        assert!(s.iter().all(|s| s.state == ProbeState::Disabled));
    }
}
