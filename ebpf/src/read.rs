//! Reading a loaded object into a [`Snapshot`]: its series (histograms, byte counters), the
//! drops its programs counted and their run statistics.
//!
//! ```text
//!  hists     (per CPU, key pt_key)   ─► HistogramSample  (CPUs summed, latest of the last CPU)
//!  counters  (per CPU, key pt_key)   ─► CounterSample
//!  pkt_targets (per CPU, key cgroup) ─► CounterSample × {send, recv}   (packet family only)
//!  errors    (per-CPU array)         ─► Drops
//!  programs of the rung taken        ─► ProgramStats (bpf_stats, fdinfo recursion_misses)
//! ```
//! An entry of a cgroup that is no longer tracked (written by an event racing with `untrack`)
//! is deleted in the same walk.

use aya::Ebpf;
use aya::maps::{MapData, MapError, PerCpuArray};
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, AsRawFd};

use crate::abi::{ERR_COUNT, NET_RECV, NET_SEND, PtCounter, PtHist, PtKey, PtPktTarget, err};
use crate::error::Result;
use crate::family::LoadedFamily;
use crate::histogram::Histogram;
use crate::ladder::PACKET;
use crate::maps::{map_err, per_cpu_map, retain};
use crate::probe::Probe;
use crate::snapshot::{
    CounterSample, HistogramSample, OTHER_PROCESS, Op, ProgramStats, Series, Snapshot, process_name,
};

/// Adds the series `loaded` holds for the tracked cgroups (by id, with their probes), its drops
/// and its programs' statistics to `snap`.
pub(crate) fn read_family(
    loaded: &mut LoadedFamily,
    tracked: &BTreeMap<u64, BTreeSet<Probe>>,
    snap: &mut Snapshot,
) -> Result<()> {
    let name = loaded.family.name;
    let series = |k: &PtKey| -> Option<Series> {
        tracked.get(&k.cgroup_id)?;
        Some(Series {
            cgroup_id: k.cgroup_id,
            probe: Probe::from_bit(k.probe)?,
            op: Op::from_raw(k.op),
            process_name: process_name(&k.comm),
        })
    };
    let hists = per_cpu_map::<PtKey, PtHist>(&mut loaded.ebpf, name, "hists");
    retain(&mut hists?, name, "hists", |k, per_cpu| {
        let Some(series) = series(k) else { return false };
        snap.histograms.push(HistogramSample { series, histogram: sum_histograms(per_cpu.iter()) });
        true
    })?;
    let counters = per_cpu_map::<PtKey, PtCounter>(&mut loaded.ebpf, name, "counters");
    retain(&mut counters?, name, "counters", |k, per_cpu| {
        let Some(series) = series(k) else { return false };
        let bytes = per_cpu.iter().map(|c| c.bytes).sum();
        let events = per_cpu.iter().map(|c| c.events).sum();
        snap.counters.push(CounterSample { series, bytes, events });
        true
    })?;
    if name == PACKET {
        let net = per_cpu_map::<u64, PtPktTarget>(&mut loaded.ebpf, name, "pkt_targets");
        retain(&mut net?, name, "pkt_targets", |&cgroup_id, per_cpu| {
            if !tracked.contains_key(&cgroup_id) {
                return false;
            }
            for (dir, op) in [(NET_SEND, Op::Send), (NET_RECV, Op::Recv)] {
                let bytes = per_cpu.iter().map(|c| c.dir[dir].bytes).sum();
                let events: u64 = per_cpu.iter().map(|c| c.dir[dir].events).sum();
                if events == 0 {
                    continue; /* a series appears with its first packet, as the others do */
                }
                let series = Series {
                    cgroup_id,
                    probe: Probe::NetworkBytes,
                    op,
                    process_name: OTHER_PROCESS.to_string(),
                };
                snap.counters.push(CounterSample { series, bytes, events });
            }
            true
        })?;
    }
    read_drops(&loaded.ebpf, name, snap)?;
    read_programs(loaded, snap);
    Ok(())
}

/// Adds a loaded object's `errors` to the snapshot's drops.
pub(crate) fn read_drops(ebpf: &Ebpf, name: &'static str, snap: &mut Snapshot) -> Result<()> {
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
pub(crate) fn read_programs(loaded: &LoadedFamily, snap: &mut Snapshot) {
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
/// BPF_ENABLE_STATS fd (how [`crate::Probes`] turns them on) still read 0 there.
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
}
