//! The crate's own vocabulary: which probes exist (with the bit each has in the kernel's
//! `pt_target.probes` mask and the `probe` byte of a series key), how a probe family can attach,
//! and how it did.
//!
//! These are not the CRD types of `podtrace-api`: the eBPF crate knows nothing of Kubernetes
//! (as in aya-template's `-common` split), and the agent maps these to the CRD's `Probe`,
//! `AttachMethod` and `ProbeStatus` at its edge.
//!
//! ```text
//!  Probe        bit  (PT_PROBE_* in podtrace_abi.h)     family
//!  TcpRtt        0                                     tcp_rtt
//!  TcpConnect    1                                     tcp_connect
//!  Dns           2                                     dns
//!  FsLatency     3                                     fs
//!  FsBytes       4                                     fs
//!  CpuBlock      5                                     cpu_block
//!  NetworkBytes  6                                     network
//! ```

/// One eBPF probe. The discriminant is the probe's bit in the kernel's mask and its `probe`
/// byte in a series key (`PT_PROBE_*` of `podtrace_abi.h`; a test compares the two).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Probe {
    /// TCP round-trip time.
    TcpRtt = 0,
    /// TCP connect latency, SYN_SENT to ESTABLISHED.
    TcpConnect = 1,
    /// DNS query latency.
    Dns = 2,
    /// File-system operation latency.
    FsLatency = 3,
    /// File-system bytes read and written.
    FsBytes = 4,
    /// Off-CPU (blocked) time.
    CpuBlock = 5,
    /// Network bytes sent and received.
    NetworkBytes = 6,
}

impl Probe {
    /// Every probe, in bit order.
    pub const ALL: [Probe; 7] = [
        Probe::TcpRtt,
        Probe::TcpConnect,
        Probe::Dns,
        Probe::FsLatency,
        Probe::FsBytes,
        Probe::CpuBlock,
        Probe::NetworkBytes,
    ];

    /// The probe's bit number in the kernel's mask (and its byte in a series key).
    pub const fn bit(self) -> u8 {
        self as u8
    }

    /// The probe whose bit is `bit`; `None` for a bit no probe has.
    pub fn from_bit(bit: u8) -> Option<Probe> {
        Probe::ALL.into_iter().find(|p| p.bit() == bit)
    }

    /// The name in logs: the CRD's spelling (`tcpRtt`, `dns`, …).
    pub fn name(self) -> &'static str {
        match self {
            Probe::TcpRtt => "tcpRtt",
            Probe::TcpConnect => "tcpConnect",
            Probe::Dns => "dns",
            Probe::FsLatency => "fsLatency",
            Probe::FsBytes => "fsBytes",
            Probe::CpuBlock => "cpuBlock",
            Probe::NetworkBytes => "networkBytes",
        }
    }
}

/// The kernel mask of `probes`: bit [`Probe::bit`] set for each.
pub(crate) fn mask(probes: impl IntoIterator<Item = Probe>) -> u32 {
    probes.into_iter().fold(0, |m, p| m | (1 << p.bit()))
}

/// How a probe family's programs attach to the kernel, best first. (No kprobes: every family
/// has a tracepoint.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttachMethod {
    /// BPF trampoline on a kernel function entry/exit.
    Fentry,
    /// BTF-typed tracepoint.
    TpBtf,
    /// Raw tracepoint.
    RawTracepoint,
    /// Classic tracepoint (needs tracefs).
    Tracepoint,
    /// cgroup socket-buffer hook, at the cgroup v2 root.
    CgroupSkb,
}

impl AttachMethod {
    /// The name in logs, metrics and status (`tp_btf`, `cgroup_skb`, …).
    pub fn name(self) -> &'static str {
        match self {
            AttachMethod::Fentry => "fentry",
            AttachMethod::TpBtf => "tp_btf",
            AttachMethod::RawTracepoint => "raw_tracepoint",
            AttachMethod::Tracepoint => "tracepoint",
            AttachMethod::CgroupSkb => "cgroup_skb",
        }
    }
}

/// Whether a probe runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeState {
    /// Loaded and attached.
    Attached,
    /// No rung of its ladder loaded on this kernel; see the reason.
    Unavailable,
    /// Not enabled.
    Disabled,
}

/// One probe's attach result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeStatus {
    /// The probe.
    pub probe: Probe,
    /// Attached, Unavailable or Disabled.
    pub state: ProbeState,
    /// The method of the rung taken (Attached).
    pub method: Option<AttachMethod>,
    /// The kernel's reason per rung tried ("fentry: EPERM (…); …"): why it is Unavailable, or
    /// why the better rungs were not taken when it is Attached lower down.
    pub reason: Option<String>,
}

impl ProbeStatus {
    /// A status.
    pub(crate) fn new(
        probe: Probe,
        state: ProbeState,
        method: Option<AttachMethod>,
        reason: Option<String>,
    ) -> Self {
        Self { probe, state, method, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_bits_are_distinct_round_trip_and_fit_the_kernel_mask() {
        let all = mask(Probe::ALL);
        assert_eq!(all.count_ones() as usize, Probe::ALL.len());
        assert!(all < 1 << 8, "the series key's probe field is one byte");
        for p in Probe::ALL {
            assert_eq!(Probe::from_bit(p.bit()), Some(p));
        }
        assert_eq!(Probe::from_bit(7), None);
    }
}
