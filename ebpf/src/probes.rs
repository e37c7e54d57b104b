//! [`Probes`]: the life cycle of the loaded probe families and of the tracked cgroups.
//!
//! ```text
//! Probes
//!  ├─ families: family name -> LoadedFamily { Ebpf (maps + programs + links), chosen rung }
//!  ├─ targets:  cgroup id -> probes               (mirrored into every family's `tracked`)
//!  ├─ dirs:     cgroup id -> its directory        (where the packet programs attach)
//!  ├─ packet_links: the packet programs' links per tracked cgroup (packet_links.rs)
//!  ├─ tgids:    process filter only (process_filter.rs): the one `tracked_tgids` map every
//!  │            family reads, the tgids the agent listed, and the fork/exit follower
//!  └─ enabled:  probes attached node-wide
//! ```
//! Dropping a `LoadedFamily` closes its object: aya detaches the links and the kernel frees
//! the programs and maps. That is how a disabled probe and a dropped `Probes` leave nothing
//! behind. Reading the maps is in `read.rs`, the map helpers in `maps.rs`.

use aya::maps::MapData;
use aya::{Btf, EbpfLoader};
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::abi::{BLOCK_START_CGROUP, PtBlockStart, PtTarget};
use crate::config::{Filter, ProbeConfig};
use crate::error::{Error, Result};
use crate::family::{LoadedFamily, walk_ladder};
use crate::ladder::{FAMILIES, FOLLOW, Family, PACKET, family_of};
use crate::maps::{full_or, ignore_missing, map_err, purge, retain, set_pkt_target, typed_map};
use crate::packet_links::PacketLinks;
use crate::probe::{AttachMethod, Probe, ProbeState, ProbeStatus, mask};
use crate::process_filter::{TRACKED_TGIDS, Tgids, share_map};
use crate::read::{bpf_stats_sysctl, read_drops, read_family, read_programs};
use crate::snapshot::Snapshot;

/// The family with a start entry per thread (`block_start`).
const CPU_BLOCK: &str = "cpu_block";

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
    /// Tracked cgroups (or, with the process filter, target keys) and their probes.
    targets: BTreeMap<u64, BTreeSet<Probe>>,
    /// The directory each target was tracked with.
    dirs: BTreeMap<u64, PathBuf>,
    /// The packet programs' links at the tracked cgroups (cgroup_skb rung, cgroup filter).
    packet_links: PacketLinks,
    /// Process filter only: the shared `tracked_tgids`, its owners and the follower.
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
            dirs: BTreeMap::new(),
            packet_links: PacketLinks::default(),
            tgids: None,
            stats,
            generation: 0,
        };
        if config.filter == Filter::Process {
            let capacity = config.map_sizes.processes;
            let tgids = probes.with_btf(|p| Tgids::load(&p.config, p.kernel_btf(), capacity));
            probes.tgids = Some(tgids?);
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

    /// Starts measuring the cgroup v2 directory `cgroup` for `probes`, and returns its id (the
    /// directory's inode, see [`crate::cgroup_id`]): the key of its series and of
    /// [`Probes::untrack`]. With the process filter, `cgroup` is any directory of the target (a
    /// v1 one on a node without cgroup v2); its inode is then only a key. Calling it again for
    /// the same cgroup replaces its probes.
    ///
    /// The packet programs (networkBytes, dns, tcpRtt on cgroup_skb) are attached at `cgroup`
    /// (or at a tracked ancestor of it); a cgroup where they cannot attach is still tracked for
    /// the other probes, and [`Probes::packet_problems`] says why.
    pub fn track(&mut self, cgroup: &Path, probes: impl IntoIterator<Item = Probe>) -> Result<u64> {
        let cgroup_id = crate::cgroup_id(cgroup)?;
        let previous = self.targets.insert(cgroup_id, probes.into_iter().collect());
        self.dirs.insert(cgroup_id, cgroup.to_path_buf());
        let names: Vec<&'static str> = self.families.keys().copied().collect();
        for name in names {
            if let Err(e) = self.write_target(name, cgroup_id) {
                match previous {
                    Some(p) => self.targets.insert(cgroup_id, p),
                    None => {
                        self.dirs.remove(&cgroup_id);
                        self.targets.remove(&cgroup_id)
                    }
                };
                self.rewrite_targets_of(cgroup_id);
                self.sync_packet_links();
                self.publish_generation(); // a task may have cached the half-written state
                return Err(e);
            }
        }
        self.sync_packet_links();
        self.publish_generation();
        tracing::debug!(cgroup_id, cgroup = %cgroup.display(), "tracking cgroup");
        Ok(cgroup_id)
    }

    /// Why the packet probes do not measure a tracked cgroup (by id), for each one they should
    /// measure and cannot: its packet programs could not be attached there (the kernel's
    /// reason). Empty when every tracked cgroup has them.
    pub fn packet_problems(&self) -> BTreeMap<u64, String> {
        self.dirs
            .iter()
            .filter_map(|(id, dir)| Some((*id, self.packet_links.error(dir)?.to_string())))
            .collect()
    }

    /// The cgroups the packet programs are attached at (each with an egress and an ingress
    /// link); 0 when they are not loaded.
    pub fn packet_cgroups(&self) -> usize {
        self.packet_links.attached()
    }

    /// Stops measuring a cgroup and deletes its series from the kernel maps. Returns whether
    /// it was tracked. Operations in flight finish uncounted and their start entries are
    /// removed by the kernel when they complete.
    pub fn untrack(&mut self, cgroup_id: u64) -> Result<bool> {
        let was = self.targets.remove(&cgroup_id).is_some();
        self.dirs.remove(&cgroup_id);
        self.sync_packet_links();
        let capacity = self.config.map_sizes.processes;
        if let Some(tgids) = self.tgids.as_mut() {
            tgids.set(cgroup_id, &BTreeSet::new(), capacity)?;
        }
        for loaded in self.families.values_mut() {
            let name = loaded.family.name;
            let mut tracked = typed_map::<u64, PtTarget>(&mut loaded.ebpf, name, "tracked")?;
            ignore_missing(tracked.remove(&cgroup_id)).map_err(|e| map_err(name, "tracked", e))?;
            if name == PACKET {
                set_pkt_target(&mut loaded.ebpf, cgroup_id, 0)?;
            }
            if name == CPU_BLOCK {
                // Blocks in flight of its threads are dropped; the others' entries stay.
                let starts = typed_map::<u32, PtBlockStart>(&mut loaded.ebpf, name, "block_start");
                retain(&mut starts?, name, "block_start", |_, v| {
                    v[BLOCK_START_CGROUP] != cgroup_id
                })?;
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
        if let Some(follower) = self.tgids.as_ref().and_then(Tgids::follower) {
            read_drops(&follower.ebpf, FOLLOW.name, &mut snap)?;
            read_programs(follower, &mut snap);
        }
        Ok(snap)
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
        let capacity = self.config.map_sizes.processes;
        match self.tgids.as_mut() {
            Some(shared) if self.targets.contains_key(&cgroup_id) => {
                shared.set(cgroup_id, tgids, capacity)
            }
            _ => Ok(()),
        }
    }

    /// The tgids the agent listed for a target, with the process filter (not the children the
    /// kernel added since: see [`Probes::kernel_processes`]).
    pub fn processes(&self, cgroup_id: u64) -> impl Iterator<Item = u32> + '_ {
        self.tgids.iter().flat_map(move |t| t.listed(cgroup_id))
    }

    /// With the process filter: what the programs filter by, read from the kernel map (tgid ->
    /// target key): the listed tgids that have not exited and the children the follower added.
    /// Empty with the cgroup filter.
    pub fn kernel_processes(&self) -> Result<BTreeMap<u32, u64>> {
        self.tgids.as_ref().map_or(Ok(BTreeMap::new()), Tgids::kernel_processes)
    }

    /// With the process filter: the children the follower added and the agent has not listed
    /// (or dropped) yet, read from the kernel (`followed`: tgid -> target key). Empty with the
    /// cgroup filter or without the follower.
    pub fn kernel_children(&self) -> Result<BTreeMap<u32, u64>> {
        self.tgids.as_ref().map_or(Ok(BTreeMap::new()), Tgids::kernel_children)
    }

    /// With the process filter: the method of the programs that follow forks and exits in the
    /// kernel, or why none could be attached (the reason of every rung); `None` with the cgroup
    /// filter.
    pub fn fork_following(&self) -> Option<std::result::Result<AttachMethod, &str>> {
        self.tgids.as_ref().map(Tgids::fork_following)
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

    /// Loads, unloads or updates `family` so that it serves the enabled probes, and records
    /// their statuses.
    fn sync_family(&mut self, family: &'static Family) {
        let wanted = family.probes.iter().any(|p| self.enabled.contains(p));
        let loaded = self.families.contains_key(family.name);
        if wanted && !loaded {
            match self.load_family(family) {
                Ok(loaded) => {
                    let method = loaded.rung.method.name();
                    tracing::info!(family = family.name, method, "probes attached");
                    self.families.insert(family.name, loaded);
                }
                Err(reason) => {
                    tracing::warn!(family = family.name, %reason, "probes unavailable");
                    for p in family.probes {
                        let reason = Some(reason.clone());
                        let status = ProbeStatus::new(*p, ProbeState::Unavailable, None, reason);
                        self.statuses.insert(*p, status);
                    }
                    return;
                }
            }
        } else if !wanted && loaded {
            self.families.remove(family.name);
            if family.name == PACKET {
                self.packet_links.reset(); // the links went with the programs
            }
            tracing::info!(family = family.name, "probes detached");
        }
        if wanted {
            // New: every tracked cgroup enters its map; loaded: the enabled probes changed.
            let ids: Vec<u64> = self.targets.keys().copied().collect();
            for id in ids {
                if let Err(e) = self.write_target(family.name, id) {
                    tracing::warn!(family = family.name, cgroup_id = id, error = %e, "cannot track cgroup");
                }
            }
            if family.name == PACKET {
                self.sync_packet_links();
            }
        }
        let loaded = self.families.get(family.name);
        for p in family.probes {
            let st = match loaded {
                _ if !self.enabled.contains(p) => {
                    ProbeStatus::new(*p, ProbeState::Disabled, None, None)
                }
                Some(l) if l.rung.serves(*p) => {
                    // On a lower rung, say why the better ones failed: an SRE asks "why not
                    // fentry?".
                    let fallbacks = Some(l.fallbacks.clone()).filter(|f| !f.is_empty());
                    ProbeStatus::new(*p, ProbeState::Attached, Some(l.rung.method), fallbacks)
                }
                Some(l) => {
                    let method = l.rung.method.name();
                    let own = format!("{method}: does not measure {}", p.name());
                    let reason = [l.fallbacks.as_str(), &own]
                        .iter()
                        .filter(|r| !r.is_empty())
                        .copied()
                        .collect::<Vec<_>>()
                        .join("; ");
                    ProbeStatus::new(*p, ProbeState::Unavailable, None, Some(reason))
                }
                None => ProbeStatus::new(*p, ProbeState::Disabled, None, None),
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
            .map_max_entries("pkt_targets", sizes.tracked)
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
        if family.name == PACKET {
            loader.override_global("pt_dns_port", &self.config.dns_port, true);
        }
        let ebpf = loader.load(object).map_err(|e| format!("object: {e}"))?;
        if let Some(tgids) = &self.tgids {
            share_map(&ebpf, TRACKED_TGIDS, tgids.fd()?)
                .map_err(|e| format!("{TRACKED_TGIDS}: {e}"))?;
        }
        walk_ladder(family, ebpf, &self.config, self.kernel_btf())
    }

    /// Puts the packet programs' links on the tracked cgroups that want a packet probe, and
    /// takes them off the others (cgroup_skb rung, attached per cgroup, cgroup filter only).
    fn sync_packet_links(&mut self) {
        let Some(loaded) = self.families.get_mut(PACKET) else { return };
        if loaded.rung.method != AttachMethod::CgroupSkb || self.config.filter != Filter::Cgroup {
            return;
        }
        let rung = loaded.rung;
        let wanted: BTreeSet<PathBuf> = self
            .targets
            .iter()
            .filter(|(_, probes)| {
                probes.iter().any(|p| {
                    loaded.family.probes.contains(p) && self.enabled.contains(p) && rung.serves(*p)
                })
            })
            .filter_map(|(id, _)| self.dirs.get(id).cloned())
            .collect();
        self.packet_links.sync(&mut loaded.ebpf, &wanted);
    }

    /// Writes a tracked cgroup's entry (its enabled probes that the family's rung measures)
    /// into one family's maps.
    fn write_target(&mut self, family: &'static str, cgroup_id: u64) -> Result<()> {
        let Some(probes) = self.targets.get(&cgroup_id) else { return Ok(()) };
        let loaded = self.families.get_mut(family).expect("loaded family");
        let rung = loaded.rung;
        let probes =
            mask(probes.iter().copied().filter(|p| self.enabled.contains(p) && rung.serves(*p)));
        let capacity = self.config.map_sizes.tracked;
        let mut tracked = typed_map::<u64, PtTarget>(&mut loaded.ebpf, family, "tracked")?;
        let comms = tracked.get(&cgroup_id, 0).map(|t| t.comms).unwrap_or(0);
        let full = || Error::TrackedMapFull { capacity };
        tracked
            .insert(cgroup_id, PtTarget { probes, comms }, 0)
            .map_err(|e| full_or(family, "tracked", e, full))?;
        if family == PACKET {
            set_pkt_target(&mut loaded.ebpf, cgroup_id, probes).map_err(|e| match e {
                Error::Map { source, .. } => full_or(family, "pkt_targets", *source, full),
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
                if name == PACKET {
                    let _ = set_pkt_target(&mut l.ebpf, cgroup_id, 0);
                }
            }
        }
    }
}

fn probes_statuses(map: &BTreeMap<Probe, ProbeStatus>) -> Vec<ProbeStatus> {
    let disabled = |p: Probe| ProbeStatus::new(p, ProbeState::Disabled, None, None);
    Probe::ALL.iter().map(|p| map.get(p).cloned().unwrap_or_else(|| disabled(*p))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_list_every_probe_in_order() {
        let s = probes_statuses(&BTreeMap::new());
        assert_eq!(s.iter().map(|s| s.probe).collect::<Vec<_>>(), Probe::ALL.to_vec());
        assert!(s.iter().all(|s| s.state == ProbeState::Disabled));
    }
}
