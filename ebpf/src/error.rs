//! The one error type of the crate.

use std::path::PathBuf;

/// What went wrong while loading, tracking or reading the probes.
///
/// A probe that cannot attach is *not* an error: it is reported as `Unavailable` in the
/// `ProbeStatus` list, with the kernel's reason per rung of its ladder.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel rejected a map or an object of a probe family.
    #[error("loading the eBPF object of the {family} probes failed: {source}")]
    Load {
        /// Probe family (object file).
        family: &'static str,
        /// aya's error.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// A map operation failed.
    #[error("map {map} of the {family} probes: {source}")]
    Map {
        /// Probe family (object file).
        family: &'static str,
        /// Map name.
        map: &'static str,
        /// aya's error.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// The tracked-cgroup map has no room for another cgroup.
    #[error(
        "the tracked-cgroup map is full ({capacity} cgroups): raise ProbeConfig.map_sizes.tracked"
    )]
    TrackedMapFull {
        /// Configured capacity.
        capacity: u32,
    },
    /// The tracked-process map (process filter) has no room for another process.
    #[error(
        "the tracked-process map is full ({capacity} processes): raise ProbeConfig.map_sizes.processes"
    )]
    ProcessMapFull {
        /// Configured capacity.
        capacity: u32,
    },
    /// A cgroup directory could not be read.
    #[error("cgroup {path}: {source}; is cgroup v2 mounted there?")]
    Cgroup {
        /// The cgroup directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// tracefs could not be made available (see [`crate::tracefs`]).
    #[error(
        "tracefs: {step} failed: {source}; the fs probes use sys_enter/sys_exit instead (every syscall of the node runs them): mount tracefs on the node, or give the agent CAP_SYS_ADMIN"
    )]
    Tracefs {
        /// What was being done.
        step: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
