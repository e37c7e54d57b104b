//! The process filter ([`Filter::Process`], for nodes without cgroup v2): one `tracked_tgids`
//! map (tgid → target key) that every object's programs read, kept by the agent from each
//! target's `cgroup.procs`, and the follower (`follow.bpf.c`) that adds a tracked process's
//! children at their fork and removes a process at the exit of its last thread.
//!
//! ```text
//!  agent ── set_processes(key, tgids) ─► tracked_tgids ◄── fork: child of a tracked tgid (+ followed)
//!                                           │          ◄── exit: last thread of a group
//!                                           ▼
//!                 every family's programs: tgid → key, in place of the cgroup id
//! ```

use aya::maps::{HashMap, IterableMap, Map, MapData, MapError};
use aya::{Btf, Ebpf, EbpfLoader};
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use crate::config::ProbeConfig;
use crate::error::{Error, Result};
use crate::family::{LoadedFamily, walk_ladder};
use crate::ladder::FOLLOW;
use crate::maps::{full_or, ignore_missing, map_err, retain, typed_map};
use crate::probe::AttachMethod;

/// The process filter's map (tgid -> target key): one instance shared by every object.
pub(crate) const TRACKED_TGIDS: &str = "tracked_tgids";
/// The follower's map of the children it added (tgid -> target key).
const FOLLOWED: &str = "followed";

/// The process filter's kernel state shared by every family.
pub(crate) struct Tgids {
    /// The one `tracked_tgids` (a `Map::HashMap`), created by [`shared_tgids_map`] and put in
    /// place of each object's own copy by [`share_map`].
    map: Map,
    /// The fork and exit programs, or why they could not be attached anywhere.
    follower: Result<LoadedFamily, String>,
    /// The target key each tgid the agent listed belongs to (one owner per tgid). The kernel
    /// map also holds the children the follower added (`followed`) and no longer holds the
    /// tgids that exited.
    owners: BTreeMap<u32, u64>,
}

impl Tgids {
    /// Creates `tracked_tgids` with room for `capacity` processes and loads the follower
    /// (its error is kept: the filter then works from the agent's listings alone).
    pub(crate) fn load(config: &ProbeConfig, btf: Option<&Btf>, capacity: u32) -> Result<Tgids> {
        let map = shared_tgids_map(capacity.max(1))?;
        let fd = map_fd(&map).map_err(|e| map_err(FOLLOW.name, TRACKED_TGIDS, e))?;
        let follower = load_follower(config, btf, fd, capacity.max(1));
        match &follower {
            Ok(loaded) => tracing::info!(
                method = loaded.rung.method.name(),
                fell_back_from = %loaded.fallbacks,
                "process filter: forks followed in the kernel (a child of a tracked process is tracked from its fork, an exited process is removed at its exit)"
            ),
            Err(reason) => tracing::warn!(
                %reason,
                "process filter: forks not followed; a new process is measured from the agent's next listing of its target, one that starts and exits between two listings is not seen"
            ),
        }
        Ok(Tgids { map, follower, owners: BTreeMap::new() })
    }

    /// The shared map, to substitute into an object before its programs load.
    pub(crate) fn fd(&self) -> Result<BorrowedFd<'_>, String> {
        map_fd(&self.map).map_err(|e| e.to_string())
    }

    /// The follower, when it attached.
    pub(crate) fn follower(&self) -> Option<&LoadedFamily> {
        self.follower.as_ref().ok()
    }

    /// The tgids the agent listed for `key`.
    pub(crate) fn listed(&self, key: u64) -> impl Iterator<Item = u32> + '_ {
        self.owners.iter().filter(move |(_, k)| **k == key).map(|(t, _)| *t)
    }

    /// What the programs filter by, read from the kernel map (tgid -> target key).
    pub(crate) fn kernel_processes(&self) -> Result<BTreeMap<u32, u64>> {
        read_all(&self.map, TRACKED_TGIDS)
    }

    /// The children the follower added and the agent has not listed yet (`followed`).
    pub(crate) fn kernel_children(&self) -> Result<BTreeMap<u32, u64>> {
        let Some(follower) = self.follower() else { return Ok(BTreeMap::new()) };
        let map = follower.ebpf.map(FOLLOWED).ok_or_else(|| {
            map_err(FOLLOW.name, FOLLOWED, MapError::InvalidName { name: FOLLOWED.into() })
        })?;
        read_all(map, FOLLOWED)
    }

    /// The follower's attach method, or why it could not attach (the reason of every rung).
    pub(crate) fn fork_following(&self) -> std::result::Result<AttachMethod, &str> {
        self.follower.as_ref().map(|l| l.rung.method).map_err(String::as_str)
    }

    /// Makes `tgids` the processes of `key` (see `Probes::set_processes`).
    pub(crate) fn set(&mut self, key: u64, tgids: &BTreeSet<u32>, capacity: u32) -> Result<()> {
        let family = FOLLOW.name;
        let mut m = HashMap::<&mut MapData, u32, u64>::try_from(&mut self.map)
            .map_err(|e| map_err(family, TRACKED_TGIDS, e))?;
        // The children the kernel added for this target: the listed ones are the agent's from
        // now on, the others go (unless another target listed them meanwhile).
        if let Ok(follower) = self.follower.as_mut() {
            let followed = typed_map::<u32, u64>(&mut follower.ebpf, family, FOLLOWED);
            let children = retain(&mut followed?, family, FOLLOWED, |_, owner| *owner != key)?;
            for tgid in children {
                let other_owner = self.owners.get(&tgid).is_some_and(|k| *k != key);
                if !tgids.contains(&tgid) && !other_owner {
                    ignore_missing(m.remove(&tgid))
                        .map_err(|e| map_err(family, TRACKED_TGIDS, e))?;
                }
            }
        }
        let gone: Vec<u32> = self
            .owners
            .iter()
            .filter(|(t, k)| **k == key && !tgids.contains(t))
            .map(|(t, _)| *t)
            .collect();
        for tgid in gone {
            ignore_missing(m.remove(&tgid)).map_err(|e| map_err(family, TRACKED_TGIDS, e))?;
            self.owners.remove(&tgid);
        }
        // Every listed tgid is written, not only the new ones: the exit program removed the
        // entries of the processes that exited, and a listed pid may be a reused one.
        for tgid in tgids {
            m.insert(tgid, key, 0).map_err(|e| {
                full_or(family, TRACKED_TGIDS, e, || Error::ProcessMapFull { capacity })
            })?;
            self.owners.insert(*tgid, key);
        }
        Ok(())
    }
}

/// Every entry of a `u32 -> u64` hash map.
fn read_all(map: &Map, name: &'static str) -> Result<BTreeMap<u32, u64>> {
    let m =
        HashMap::<&MapData, u32, u64>::try_from(map).map_err(|e| map_err(FOLLOW.name, name, e))?;
    m.iter().collect::<Result<_, _>>().map_err(|e| map_err(FOLLOW.name, name, e))
}

fn map_fd(map: &Map) -> Result<BorrowedFd<'_>, MapError> {
    match map {
        Map::HashMap(data) => Ok(data.fd().as_fd()),
        _ => Err(MapError::InvalidName { name: format!("{TRACKED_TGIDS} (not a hash map)") }),
    }
}

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

/// Loads the follower: its object with the shared `tracked_tgids`, down its ladder. The error
/// is the reason of every rung.
fn load_follower(
    config: &ProbeConfig,
    btf: Option<&Btf>,
    tgids: BorrowedFd<'_>,
    capacity: u32,
) -> Result<LoadedFamily, String> {
    let mut loader = EbpfLoader::new();
    loader.btf(btf).map_max_entries(TRACKED_TGIDS, capacity).map_max_entries(FOLLOWED, capacity);
    let ebpf = loader.load(FOLLOW.object).map_err(|e| format!("object: {e}"))?;
    share_map(&ebpf, TRACKED_TGIDS, tgids).map_err(|e| format!("{TRACKED_TGIDS}: {e}"))?;
    walk_ladder(&FOLLOW, ebpf, config, btf)
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
pub(crate) fn share_map(
    ebpf: &Ebpf,
    name: &str,
    shared: BorrowedFd<'_>,
) -> std::result::Result<(), String> {
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
