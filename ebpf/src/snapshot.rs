//! What [`crate::Probes::snapshot`] returns: every series of every tracked cgroup, read from
//! the kernel maps in one pass, plus drop counters and per-program overhead.
//!
//! ```text
//! Snapshot
//!  ├─ histograms: [HistogramSample { series: Series, histogram: Histogram }]
//!  ├─ counters:   [CounterSample   { series: Series, bytes, events }]
//!  ├─ drops:      Drops { histograms_full, counters_full, process_names_full, inflight_full,
//!  │                      unclosed_blocks, processes_full }
//!  └─ programs:   [ProgramStats { family, program, method, run_count, run_time }]
//! Series = (cgroup_id, probe, op, process_name)
//! ```
//! Values are cumulative since the probe family was loaded (Prometheus counters and
//! histograms); a family that is disabled and enabled again starts from zero.

use crate::abi::{COMM_LEN, op};
use crate::histogram::Histogram;
use crate::probe::{AttachMethod, Probe};
use std::time::Duration;

/// The process name of series whose process is not among the cgroup's first names.
pub const OTHER_PROCESS: &str = "other";

/// The sub-type of a series: the reference's `type` label for file-system latency, the
/// `direction` of network bytes, the `operation` of file-system bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// No sub-type.
    None,
    /// File read (read, pread64, readv).
    Read,
    /// File write (write, pwrite64, writev).
    Write,
    /// fsync or fdatasync.
    Fsync,
    /// Bytes sent.
    Send,
    /// Bytes received.
    Recv,
}

impl Op {
    pub(crate) fn from_raw(raw: u8) -> Op {
        match raw {
            op::READ => Op::Read,
            op::WRITE => Op::Write,
            op::FSYNC => Op::Fsync,
            op::SEND => Op::Send,
            op::RECV => Op::Recv,
            op::NONE => Op::None,
            _ => Op::None,
        }
    }

    /// The label value: "read", "write", "fsync", "send", "recv" ("" for None).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::None => "",
            Op::Read => "read",
            Op::Write => "write",
            Op::Fsync => "fsync",
            Op::Send => "send",
            Op::Recv => "recv",
        }
    }
}

/// Identity of one series.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Series {
    /// cgroup v2 id (the inode of the cgroup directory), or with the process filter the key
    /// the target was tracked under.
    pub cgroup_id: u64,
    /// The probe that measured it.
    pub probe: Probe,
    /// Sub-type (direction, operation, fs type).
    pub op: Op,
    /// The task's comm, or [`OTHER_PROCESS`].
    pub process_name: String,
}

impl Series {
    /// The reference's `type` label of the series (see [`type_label`]).
    pub fn type_label(&self) -> &'static str {
        type_label(self.probe, self.op)
    }
}

/// The reference's `type` label: NET (RTT, connect, network bytes), DNS, CPU, FS for
/// file-system bytes, and read/write/fsync for file-system latency.
pub fn type_label(probe: Probe, op: Op) -> &'static str {
    match probe {
        Probe::TcpRtt | Probe::TcpConnect | Probe::NetworkBytes => "NET",
        Probe::Dns => "DNS",
        Probe::CpuBlock => "CPU",
        Probe::FsBytes => "FS",
        Probe::FsLatency => op.as_str(),
    }
}

pub(crate) fn process_name(comm: &[u8; COMM_LEN]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    if end == 0 {
        OTHER_PROCESS.to_string()
    } else {
        String::from_utf8_lossy(&comm[..end]).into_owned()
    }
}

/// A latency histogram series (RTT, connect, DNS, file system, off-CPU).
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSample {
    /// Which series.
    pub series: Series,
    /// Buckets, count, sum and latest value.
    pub histogram: Histogram,
}

/// A byte counter series (network bytes by direction, file-system bytes by operation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterSample {
    /// Which series.
    pub series: Series,
    /// Bytes so far.
    pub bytes: u64,
    /// Operations (packets, syscalls) that added bytes.
    pub events: u64,
}

/// Samples the kernel could not record, summed over CPUs and families, since load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drops {
    /// New histogram series dropped because the map was full.
    pub histograms_full: u64,
    /// New counter series dropped because the map was full.
    pub counters_full: u64,
    /// Process names folded into "other" because the name map was full.
    pub process_names_full: u64,
    /// Operations not timed because the start-time map was full.
    pub inflight_full: u64,
    /// Off-CPU blocks dropped because their end is not known: between the block and the
    /// thread's next switch-out, a run of the thread was not seen by the switch program (its
    /// `sched_info.pcount` moved by more than one). None in 10,000 sleeps on the test VM.
    pub unclosed_blocks: u64,
    /// Process filter: children of tracked processes that the fork program could not add to
    /// the full `tracked_tgids` (they are measured from the agent's next listing, if they are
    /// still running then).
    pub processes_full: u64,
}

impl Drops {
    /// All drops.
    pub fn total(&self) -> u64 {
        self.histograms_full
            + self.counters_full
            + self.process_names_full
            + self.inflight_full
            + self.unclosed_blocks
            + self.processes_full
    }
}

/// Run count and time of one kernel program (for podtrace_agent_bpf_program_runs_total and
/// _seconds_total). Zero unless bpf_stats is on (ProbeConfig::bpf_stats or the sysctl).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStats {
    /// Probe family (object).
    pub family: &'static str,
    /// Program name.
    pub program: &'static str,
    /// Kernel program id (as `bpftool prog show id N` shows it).
    pub id: u32,
    /// How it is attached.
    pub method: AttachMethod,
    /// Runs since load.
    pub run_count: u64,
    /// Time spent running since load.
    pub run_time: Duration,
    /// Runs the kernel skipped because the program was already running on that CPU (an
    /// interrupt hit the same tracepoint while it ran, e.g. a timer wakeup inside a wakeup):
    /// samples lost, counted instead of silent. Always counted (no bpf_stats needed).
    pub recursion_misses: u64,
}

/// One read of all maps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Histogram series of tracked cgroups.
    pub histograms: Vec<HistogramSample>,
    /// Counter series of tracked cgroups.
    pub counters: Vec<CounterSample>,
    /// What the kernel had to drop.
    pub drops: Drops,
    /// Per-program overhead.
    pub programs: Vec<ProgramStats>,
}

impl Snapshot {
    /// The histogram series of one cgroup and probe (all process names and types).
    pub fn histograms_of(
        &self,
        cgroup_id: u64,
        probe: Probe,
    ) -> impl Iterator<Item = &HistogramSample> {
        self.histograms
            .iter()
            .filter(move |s| s.series.cgroup_id == cgroup_id && s.series.probe == probe)
    }

    /// The counter series of one cgroup and probe.
    pub fn counters_of(
        &self,
        cgroup_id: u64,
        probe: Probe,
    ) -> impl Iterator<Item = &CounterSample> {
        self.counters
            .iter()
            .filter(move |s| s.series.cgroup_id == cgroup_id && s.series.probe == probe)
    }

    /// Bytes of one cgroup, probe and op, over all process names.
    pub fn bytes(&self, cgroup_id: u64, probe: Probe, op: Op) -> u64 {
        self.counters_of(cgroup_id, probe).filter(|s| s.series.op == op).map(|s| s.bytes).sum()
    }

    /// One histogram merging all process names of one cgroup, probe and op.
    pub fn merged_histogram(&self, cgroup_id: u64, probe: Probe, op: Op) -> Histogram {
        let mut out = Histogram::default();
        for s in self.histograms_of(cgroup_id, probe).filter(|s| s.series.op == op) {
            out.merge(&s.histogram);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_comm_is_other_and_names_stop_at_the_nul() {
        assert_eq!(process_name(&[0; COMM_LEN]), OTHER_PROCESS);
        let mut c = [0u8; COMM_LEN];
        c[..7].copy_from_slice(b"python3");
        assert_eq!(process_name(&c), "python3");
        assert_eq!(process_name(&[b'a'; COMM_LEN]), "a".repeat(16));
    }

    #[test]
    fn type_labels_follow_the_reference() {
        let s = |probe, op| Series { cgroup_id: 1, probe, op, process_name: "x".into() };
        assert_eq!(s(Probe::TcpRtt, Op::None).type_label(), "NET");
        assert_eq!(s(Probe::Dns, Op::None).type_label(), "DNS");
        assert_eq!(s(Probe::CpuBlock, Op::None).type_label(), "CPU");
        assert_eq!(s(Probe::FsLatency, Op::Fsync).type_label(), "fsync");
        assert_eq!(s(Probe::NetworkBytes, Op::Send).op.as_str(), "send");
    }
}
