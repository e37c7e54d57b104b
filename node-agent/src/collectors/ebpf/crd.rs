//! The edge between the eBPF crate's vocabulary and the CRD's: `podtrace-ebpf` knows nothing of
//! Kubernetes, and the NodeTrace status, the profiles and the metrics speak the CRD's names.
//!
//! ```text
//!  profile.probes (api::Probe) ──to_kernel──► podtrace_ebpf::Probe ──► Probes::track / set_enabled
//!  NodeTrace.status.probes     ◄─from_kernel── podtrace_ebpf::ProbeStatus
//! ```

use podtrace_api::profile::Probe;
use podtrace_api::status::{AttachMethod, ProbeState, ProbeStatus};

/// The kernel's probe for a profile's.
pub fn to_kernel(probe: Probe) -> podtrace_ebpf::Probe {
    use podtrace_ebpf::Probe as K;
    match probe {
        Probe::TcpRtt => K::TcpRtt,
        Probe::TcpConnect => K::TcpConnect,
        Probe::Dns => K::Dns,
        Probe::FsLatency => K::FsLatency,
        Probe::FsBytes => K::FsBytes,
        Probe::CpuBlock => K::CpuBlock,
        Probe::NetworkBytes => K::NetworkBytes,
    }
}

/// The profile's probe for the kernel's.
pub fn probe(probe: podtrace_ebpf::Probe) -> Probe {
    use podtrace_ebpf::Probe as K;
    match probe {
        K::TcpRtt => Probe::TcpRtt,
        K::TcpConnect => Probe::TcpConnect,
        K::Dns => Probe::Dns,
        K::FsLatency => Probe::FsLatency,
        K::FsBytes => Probe::FsBytes,
        K::CpuBlock => Probe::CpuBlock,
        K::NetworkBytes => Probe::NetworkBytes,
    }
}

/// The status's attach method for the kernel's.
pub fn method(method: podtrace_ebpf::AttachMethod) -> AttachMethod {
    use podtrace_ebpf::AttachMethod as K;
    match method {
        K::Fentry => AttachMethod::Fentry,
        K::TpBtf => AttachMethod::TpBtf,
        K::RawTracepoint => AttachMethod::RawTracepoint,
        K::Tracepoint => AttachMethod::Tracepoint,
        K::CgroupSkb => AttachMethod::CgroupSkb,
    }
}

/// A probe's status as NodeTrace status carries it.
pub fn status(s: podtrace_ebpf::ProbeStatus) -> ProbeStatus {
    use podtrace_ebpf::ProbeState as K;
    ProbeStatus {
        probe: probe(s.probe),
        state: match s.state {
            K::Attached => ProbeState::Attached,
            K::Unavailable => ProbeState::Unavailable,
            K::Disabled => ProbeState::Disabled,
        },
        method: s.method.map(method),
        reason: s.reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_probe_maps_both_ways_under_one_name() {
        assert_eq!(Probe::ALL.len(), podtrace_ebpf::Probe::ALL.len());
        for p in Probe::ALL {
            assert_eq!(probe(to_kernel(p)), p);
            assert_eq!(to_kernel(p).name(), p.name());
        }
    }

    #[test]
    fn attach_methods_keep_their_status_names() {
        use podtrace_ebpf::AttachMethod as K;
        for m in [K::Fentry, K::TpBtf, K::RawTracepoint, K::Tracepoint, K::CgroupSkb] {
            let json = serde_json::to_value(method(m)).unwrap();
            assert_eq!(json, m.name());
        }
    }
}
