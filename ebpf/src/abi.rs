//! Rust mirrors of the map keys and values of `src/bpf/podtrace_abi.h`.
//!
//! The kernel writes these bytes and user space reads them, so the layouts must match exactly.
//! `build.rs` compiles the C header for the host and prints every size and offset; the test at
//! the bottom compares them with these structs, so a change on one side fails the build's tests.

/// Histogram slots: 20 finite buckets (0.0001 s × 2^k) plus +Inf.
pub const BUCKETS: usize = 21;
/// Finite buckets.
pub const FINITE_BUCKETS: usize = 20;
/// Upper bound of bucket 0, in nanoseconds (0.0001 s).
pub const BUCKET_BASE_NS: u64 = 100_000;
/// Length of a task's comm.
pub const COMM_LEN: usize = 16;
/// Slots of the per-CPU `errors` array.
pub const ERR_COUNT: usize = 6;

/// `PT_OP_*`: the `type`/`direction`/`operation` sub-key of a series.
pub mod op {
    /// No sub-type.
    pub const NONE: u8 = 0;
    /// File read.
    pub const READ: u8 = 1;
    /// File write.
    pub const WRITE: u8 = 2;
    /// fsync or fdatasync.
    pub const FSYNC: u8 = 3;
    /// Network send.
    pub const SEND: u8 = 4;
    /// Network receive.
    pub const RECV: u8 = 5;
}

/// `PT_ERR_*`: indexes of the per-CPU `errors` array.
pub mod err {
    /// `hists` was full.
    pub const HIST_FULL: u32 = 0;
    /// `counters` was full.
    pub const COUNTER_FULL: u32 = 1;
    /// `comms` was full.
    pub const COMM_FULL: u32 = 2;
    /// A start-time map was full.
    pub const INFLIGHT_FULL: u32 = 3;
    /// A block whose end is not known (see `Drops::unclosed_blocks`).
    pub const UNCLOSED: u32 = 4;
    /// The fork program could not add a child to `tracked_tgids` (see `Drops::processes_full`).
    pub const PROCS_FULL: u32 = 5;
}

/// Value of `tracked` (`struct pt_target`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PtTarget {
    /// Bit mask of enabled probes (bit = [`crate::Probe::bit`]).
    pub probes: u32,
    /// Process names handed out so far (incremented by the kernel).
    pub comms: u32,
}

/// Key of `hists` and `counters` (`struct pt_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PtKey {
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Task comm, all zero for "other".
    pub comm: [u8; COMM_LEN],
    /// [`crate::Probe::bit`] of the probe that measured it.
    pub probe: u8,
    /// `op::*`.
    pub op: u8,
    /// Padding.
    pub _pad1: u16,
    /// Padding.
    pub _pad2: u32,
}

/// Value of `hists` (`struct pt_hist`), in nanoseconds; one per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PtHist {
    /// Non-cumulative bucket counts.
    pub buckets: [u64; BUCKETS],
    /// Samples.
    pub count: u64,
    /// Sum of the samples.
    pub sum_ns: u64,
    /// The last sample of this CPU.
    pub latest_ns: u64,
    /// When it was taken (orders the CPUs' latest values within a series).
    pub latest_at: u64,
}

/// Value of `counters` (`struct pt_counter`); one per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PtCounter {
    /// Bytes.
    pub bytes: u64,
    /// Events that added bytes.
    pub events: u64,
}

/// Index of the send counters in [`PtPktTarget::dir`].
pub const NET_SEND: usize = 0;
/// Index of the receive counters in [`PtPktTarget::dir`].
pub const NET_RECV: usize = 1;

/// Value of the packet family's `pkt_targets` (`struct pt_pkt_target`, key: cgroup id); one
/// per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PtPktTarget {
    /// Bit mask of the enabled probes (bit = [`crate::Probe::bit`]), the same on every CPU.
    pub probes: u32,
    /// Padding.
    pub _pad: u32,
    /// Network bytes sent ([`NET_SEND`]) and received ([`NET_RECV`]).
    pub dir: [PtCounter; 2],
}

/// Value of the cpu_block family's `block_start` (`struct pt_block_start`: start, cgroup id,
/// comm, run delay, pcount), read as words: only the cgroup id is used (at untrack).
pub type PtBlockStart = [u64; 6];
/// Index of the cgroup id in [`PtBlockStart`].
pub const BLOCK_START_CGROUP: usize = 1;

/// Key of `comms` (`struct pt_comm_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PtCommKey {
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Task comm.
    pub comm: [u8; COMM_LEN],
}

#[allow(
    unsafe_code,
    reason = "aya::Pod is an unsafe marker trait: these are repr(C) structs of integers with explicit padding fields, valid for any bit pattern"
)]
mod pod {
    unsafe impl aya::Pod for super::PtTarget {}
    unsafe impl aya::Pod for super::PtKey {}
    unsafe impl aya::Pod for super::PtHist {}
    unsafe impl aya::Pod for super::PtCounter {}
    unsafe impl aya::Pod for super::PtPktTarget {}
    unsafe impl aya::Pod for super::PtCommKey {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[allow(
        dead_code,
        non_upper_case_globals,
        reason = "generated by build.rs from the C names; not every constant is compared"
    )]
    mod c {
        include!(concat!(env!("OUT_DIR"), "/layout.rs"));
    }

    #[test]
    fn rust_mirrors_have_the_c_layout() {
        assert_eq!(size_of::<PtTarget>(), c::SIZEOF_pt_target);
        assert_eq!(offset_of!(PtTarget, probes), c::OFFSETOF_pt_target_probes);
        assert_eq!(offset_of!(PtTarget, comms), c::OFFSETOF_pt_target_comms);

        assert_eq!(size_of::<PtKey>(), c::SIZEOF_pt_key);
        assert_eq!(offset_of!(PtKey, cgroup_id), c::OFFSETOF_pt_key_cgroup_id);
        assert_eq!(offset_of!(PtKey, comm), c::OFFSETOF_pt_key_comm);
        assert_eq!(offset_of!(PtKey, probe), c::OFFSETOF_pt_key_probe);
        assert_eq!(offset_of!(PtKey, op), c::OFFSETOF_pt_key_op);

        assert_eq!(size_of::<PtHist>(), c::SIZEOF_pt_hist);
        assert_eq!(offset_of!(PtHist, buckets), c::OFFSETOF_pt_hist_buckets);
        assert_eq!(offset_of!(PtHist, count), c::OFFSETOF_pt_hist_count);
        assert_eq!(offset_of!(PtHist, sum_ns), c::OFFSETOF_pt_hist_sum_ns);
        assert_eq!(offset_of!(PtHist, latest_ns), c::OFFSETOF_pt_hist_latest_ns);
        assert_eq!(offset_of!(PtHist, latest_at), c::OFFSETOF_pt_hist_latest_at);

        assert_eq!(size_of::<PtCounter>(), c::SIZEOF_pt_counter);
        assert_eq!(offset_of!(PtCounter, bytes), c::OFFSETOF_pt_counter_bytes);
        assert_eq!(offset_of!(PtCounter, events), c::OFFSETOF_pt_counter_events);

        assert_eq!(size_of::<PtPktTarget>(), c::SIZEOF_pt_pkt_target);
        assert_eq!(offset_of!(PtPktTarget, probes), c::OFFSETOF_pt_pkt_target_probes);
        assert_eq!(offset_of!(PtPktTarget, dir), c::OFFSETOF_pt_pkt_target_dir);
        assert_eq!(NET_SEND as u64, c::PT_NET_SEND);
        assert_eq!(NET_RECV as u64, c::PT_NET_RECV);

        assert_eq!(size_of::<PtBlockStart>(), c::SIZEOF_pt_block_start);
        assert_eq!(BLOCK_START_CGROUP * 8, c::OFFSETOF_pt_block_start_cgroup_id);

        assert_eq!(size_of::<PtCommKey>(), c::SIZEOF_pt_comm_key);
        assert_eq!(offset_of!(PtCommKey, comm), c::OFFSETOF_pt_comm_key_comm);
    }

    #[test]
    fn the_kernels_bucket_function_agrees_with_bucket_index() {
        assert!(c::PT_BUCKET_CASES.len() > 60);
        for &(ns, k) in c::PT_BUCKET_CASES {
            assert_eq!(k as usize, crate::bucket_index(ns), "pt_bucket({ns})");
        }
    }

    #[test]
    fn rust_constants_match_the_c_header() {
        assert_eq!(BUCKETS as u64, c::PT_BUCKETS);
        assert_eq!(FINITE_BUCKETS as u64, c::PT_FINITE_BUCKETS);
        assert_eq!(BUCKET_BASE_NS, c::PT_BUCKET_BASE_NS);
        assert_eq!(COMM_LEN as u64, c::PT_COMM_LEN);
        assert_eq!(ERR_COUNT as u64, c::PT_ERR_COUNT);
        let ops = [
            (op::NONE, c::PT_OP_NONE),
            (op::READ, c::PT_OP_READ),
            (op::WRITE, c::PT_OP_WRITE),
            (op::FSYNC, c::PT_OP_FSYNC),
            (op::SEND, c::PT_OP_SEND),
            (op::RECV, c::PT_OP_RECV),
        ];
        for (rust, c) in ops {
            assert_eq!(u64::from(rust), c);
        }
        assert_eq!(u64::from(err::HIST_FULL), c::PT_ERR_HIST_FULL);
        assert_eq!(u64::from(err::COUNTER_FULL), c::PT_ERR_COUNTER_FULL);
        assert_eq!(u64::from(err::COMM_FULL), c::PT_ERR_COMM_FULL);
        assert_eq!(u64::from(err::INFLIGHT_FULL), c::PT_ERR_INFLIGHT_FULL);
        assert_eq!(u64::from(err::UNCLOSED), c::PT_ERR_UNCLOSED);
        assert_eq!(u64::from(err::PROCS_FULL), c::PT_ERR_PROCS_FULL);
        // The kernel's probe bits are the discriminants of Probe.
        use crate::Probe;
        let bits = [
            (Probe::TcpRtt, c::PT_PROBE_TCP_RTT),
            (Probe::TcpConnect, c::PT_PROBE_TCP_CONNECT),
            (Probe::Dns, c::PT_PROBE_DNS),
            (Probe::FsLatency, c::PT_PROBE_FS_LATENCY),
            (Probe::FsBytes, c::PT_PROBE_FS_BYTES),
            (Probe::CpuBlock, c::PT_PROBE_CPU_BLOCK),
            (Probe::NetworkBytes, c::PT_PROBE_NETWORK_BYTES),
        ];
        for (probe, bit) in bits {
            assert_eq!(u64::from(probe.bit()), bit, "{probe:?}");
        }
    }
}
