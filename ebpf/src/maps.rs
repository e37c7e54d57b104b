//! Access to the kernel maps of a loaded object: typed handles with errors that name the family
//! and the map, and the one walk that reads a map and deletes what it should no longer hold.
//!
//! ```text
//!  typed_map / per_cpu_map ─► HashMap / PerCpuHashMap of an object's map, by name
//!  retain(map, keep)        ─► walks every entry once; deletes (after the walk) those `keep`
//!                               rejects: stale series at each read, a cgroup's entries at untrack
//! ```

use aya::maps::{HashMap, Map, MapData, MapError, PerCpuHashMap, PerCpuValues};
use aya::{Ebpf, Pod};

use crate::abi::{PtCommKey, PtCounter, PtHist, PtKey, PtPktTarget};
use crate::error::{Error, Result};
use crate::ladder::PACKET;

/// The map `map` of a loaded object as the typed map `M` (a hash map, per-CPU or not).
fn map_as<'a, M>(ebpf: &'a mut Ebpf, family: &'static str, map: &'static str) -> Result<M>
where
    M: TryFrom<&'a mut Map, Error = MapError>,
{
    let m = ebpf
        .map_mut(map)
        .ok_or_else(|| map_err(family, map, MapError::InvalidName { name: map.into() }))?;
    M::try_from(m).map_err(|e| map_err(family, map, e))
}

/// The map `map` of a loaded object as a hash map.
pub(crate) fn typed_map<'a, K: Pod, V: Pod>(
    ebpf: &'a mut Ebpf,
    family: &'static str,
    map: &'static str,
) -> Result<HashMap<&'a mut MapData, K, V>> {
    map_as(ebpf, family, map)
}

/// The map `map` of a loaded object as a per-CPU hash map.
pub(crate) fn per_cpu_map<'a, K: Pod, V: Pod>(
    ebpf: &'a mut Ebpf,
    family: &'static str,
    map: &'static str,
) -> Result<PerCpuHashMap<&'a mut MapData, K, V>> {
    map_as(ebpf, family, map)
}

/// An aya map error with the family and map it happened on.
pub(crate) fn map_err(family: &'static str, map: &'static str, e: MapError) -> Error {
    Error::Map { family, map, source: Box::new(e) }
}

/// `Ok` for a key that is not (or no longer) in the map.
pub(crate) fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(e) if is_missing(&e) => Ok(()),
        other => other,
    }
}

fn is_missing(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        // aya reports a delete (or lookup) of a missing key as the syscall's ENOENT.
        MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// A hash map, per-CPU or not, whose entries can be walked and deleted.
pub(crate) trait Entries<K, V> {
    /// Every entry (key, then a lookup of its value).
    fn entries(&self) -> impl Iterator<Item = Result<(K, V), MapError>> + '_;
    /// Deletes `key`.
    fn delete(&mut self, key: &K) -> Result<(), MapError>;
}

impl<K: Pod, V: Pod> Entries<K, V> for HashMap<&mut MapData, K, V> {
    fn entries(&self) -> impl Iterator<Item = Result<(K, V), MapError>> + '_ {
        self.iter()
    }
    fn delete(&mut self, key: &K) -> Result<(), MapError> {
        self.remove(key)
    }
}

impl<K: Pod, V: Pod> Entries<K, PerCpuValues<V>> for PerCpuHashMap<&mut MapData, K, V> {
    fn entries(&self) -> impl Iterator<Item = Result<(K, PerCpuValues<V>), MapError>> + '_ {
        self.iter()
    }
    fn delete(&mut self, key: &K) -> Result<(), MapError> {
        self.remove(key)
    }
}

/// Walks every entry of `m` once, calls `keep` on it, and deletes the entries it rejects;
/// returns their keys.
///
/// The keys are collected first and deleted after the walk: deleting while walking a hash map
/// restarts the walk. An entry the kernel deleted between reading its key and its value (the
/// start entries of operations in flight come and go) is passed over.
pub(crate) fn retain<K: Pod, V>(
    m: &mut impl Entries<K, V>,
    family: &'static str,
    map: &'static str,
    mut keep: impl FnMut(&K, &V) -> bool,
) -> Result<Vec<K>> {
    let mut doomed = Vec::new();
    for entry in m.entries() {
        match entry {
            Ok((key, value)) if !keep(&key, &value) => doomed.push(key),
            Ok(_) => {}
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(map_err(family, map, e)),
        }
    }
    for key in &doomed {
        ignore_missing(m.delete(key)).map_err(|e| map_err(family, map, e))?;
    }
    Ok(doomed)
}

/// Deletes the histogram, counter and process-name entries of the cgroups `doomed` selects.
pub(crate) fn purge(
    ebpf: &mut Ebpf,
    family: &'static str,
    doomed: impl Fn(u64) -> bool,
) -> Result<()> {
    let hists = per_cpu_map::<PtKey, PtHist>(ebpf, family, "hists");
    retain(&mut hists?, family, "hists", |k, _| !doomed(k.cgroup_id))?;
    let counters = per_cpu_map::<PtKey, PtCounter>(ebpf, family, "counters");
    retain(&mut counters?, family, "counters", |k, _| !doomed(k.cgroup_id))?;
    let comms = typed_map::<PtCommKey, u8>(ebpf, family, "comms");
    retain(&mut comms?, family, "comms", |k, _| !doomed(k.cgroup_id))?;
    Ok(())
}

/// Sets a cgroup's entry of the packet family's `pkt_targets` to `probes` (the packet probes
/// enabled for it, a bit mask), creating it with zero counters if absent, or deletes it when
/// `probes` is 0: the entry is the packet programs' tracked check.
///
/// The value is per CPU, so changing the probes of an existing entry writes back every CPU's
/// counters as read just before: bytes the kernel counted between that read and the write (a
/// few microseconds, at a profile change only) are lost.
pub(crate) fn set_pkt_target(ebpf: &mut Ebpf, cgroup_id: u64, probes: u32) -> Result<()> {
    let mut m = per_cpu_map::<u64, PtPktTarget>(ebpf, PACKET, "pkt_targets")?;
    let err = |e| map_err(PACKET, "pkt_targets", e);
    if probes == 0 {
        return ignore_missing(m.remove(&cgroup_id)).map_err(err);
    }
    let syscall =
        |call, io_error| err(MapError::SyscallError(aya::sys::SyscallError { call, io_error }));
    let mut values = match m.get(&cgroup_id, 0) {
        Ok(per_cpu) if per_cpu.iter().all(|v| v.probes == probes) => return Ok(()),
        Ok(per_cpu) => per_cpu.iter().copied().collect(),
        Err(e) if is_missing(&e) => {
            let cpus = aya::util::nr_cpus().map_err(|(call, e)| syscall(call, e))?;
            vec![PtPktTarget::default(); cpus]
        }
        Err(e) => return Err(err(e)),
    };
    values.iter_mut().for_each(|v| v.probes = probes);
    let values = PerCpuValues::try_from(values).map_err(|e| syscall("nr_cpus", e))?;
    m.insert(cgroup_id, values, 0).map_err(err)
}

/// The error of an insert into a map of `capacity` entries: `full` when the kernel says E2BIG
/// (the map is full), the map error otherwise.
pub(crate) fn full_or(
    family: &'static str,
    map: &'static str,
    e: MapError,
    full: impl FnOnce() -> Error,
) -> Error {
    match &e {
        MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::E2BIG) => full(),
        _ => map_err(family, map, e),
    }
}
