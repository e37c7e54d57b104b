//! podtrace's eBPF probes: kernel programs in C with CO-RE (`src/bpf/`, compiled by clang in
//! `build.rs` and embedded), loaded with aya, filtered and aggregated in the kernel.
//!
//! # How the node agent uses it
//!
//! ```no_run
//! use podtrace_ebpf::{Probe, ProbeConfig, Probes, cgroup_id};
//! use std::path::Path;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // At start: load every probe the node's profiles ask for. Each probe walks its ladder
//! // (cgroup_skb or classic tracepoint > tp_btf > raw_tracepoint > tracepoint) and reports
//! // what it got; a probe that cannot attach is Unavailable with the kernel's reason and the
//! // others keep running.
//! let (mut probes, statuses) = Probes::load(&ProbeConfig::default())?;
//! // statuses -> NodeTrace.status.probes and podtrace_agent_probe_info{probe,method}
//!
//! // For each container cgroup of a traced pod: its series are keyed by its cgroup v2 id (the
//! // inode of its directory), and the packet programs are attached there.
//! let id = probes.track(Path::new("/sys/fs/cgroup/unified/kubepods/pod1234/abcd"), Probe::ALL)?;
//! assert_eq!(id, cgroup_id("/sys/fs/cgroup/unified/kubepods/pod1234/abcd")?);
//!
//! // Every interval: one read of the kernel maps; no per-event work in user space.
//! let snap = probes.snapshot()?;
//! for h in &snap.histograms { /* podtrace_*_seconds{type=h.series.type_label(), ...} */ }
//! for c in &snap.counters { /* podtrace_*_bytes_total{direction|operation=c.series.op.as_str()} */ }
//! // snap.drops -> drop counters; snap.programs -> podtrace_agent_bpf_program_{runs,seconds}_total
//!
//! // Profile changes: detach or attach a probe node-wide, or change a cgroup's probes.
//! probes.set_enabled(Probe::Dns, false);
//! // Pod gone: its series are deleted from the kernel maps.
//! probes.untrack(id)?;
//! // Dropping `probes` detaches every link and frees every map.
//! # Ok(()) }
//! ```
//!
//! # Design
//! - **Filter first**: every program looks the current (or socket's) cgroup v2 id up in
//!   `tracked`; an untracked cgroup costs that one hash lookup. The packet programs are
//!   attached at each tracked cgroup, so untracked packets run none.
//! - **Aggregate in the kernel**: log2 histograms with the reference's buckets
//!   (0.0001 s × 2^k, 20 finite buckets to 52.4288 s, plus +Inf), byte counters and the latest
//!   value, keyed by (cgroup, process name, probe, op).
//! - **process_name bounded in the kernel**: the first `max_process_names` names of a cgroup
//!   (per family) keep their series, later ones go to "other". Chosen over folding in user
//!   space because it bounds the kernel maps too: one pod that forks a thousand short-lived
//!   commands cannot fill the map for the other pods.
//! - **Never silent**: a full map increments a per-CPU counter reported as [`Drops`]; a probe
//!   that does not attach is `Unavailable` with "method: reason" for every rung tried.

mod abi;
mod cgroup;
mod config;
mod error;
mod family;
pub mod histogram;
mod ladder;
mod maps;
mod packet_links;
mod probe;
mod probes;
mod process_filter;
mod read;
mod snapshot;
pub mod tracefs;

pub use cgroup::cgroup_id;
pub use config::{Filter, MapSizes, ProbeConfig, default_cgroup2_root};
pub use error::{Error, Result};
pub use histogram::{Histogram, UPPER_BOUNDS_SECONDS, bucket_index};
pub use probe::{AttachMethod, Probe, ProbeState, ProbeStatus};
pub use probes::Probes;
pub use read::bpf_stats_sysctl;
pub use snapshot::{
    CounterSample, Drops, HistogramSample, OTHER_PROCESS, Op, ProgramStats, Series, Snapshot,
    type_label,
};
