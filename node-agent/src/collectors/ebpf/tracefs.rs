//! tracefs for the fs probes' per-syscall tracepoints (`syscalls/sys_enter_write`, …), which run
//! a program for the eight file syscalls only, where `sys_enter`/`sys_exit` run one for every
//! syscall of the node (see `podtrace_ebpf::tracefs`). When the node has not mounted it, the agent
//! mounts it in a mount namespace of its own, before its runtime's threads start.

use std::path::PathBuf;

/// How tracefs was found or made available at start.
#[derive(Debug)]
pub enum Tracefs {
    /// Already mounted (by the node, or the chart's host mount).
    Found(PathBuf),
    /// Mounted by the agent in its own mount namespace.
    Mounted(PathBuf),
    /// Not mounted, and mounting failed (why).
    Missing(String),
    /// Not looked for (`--mount-tracefs=false`, or no eBPF).
    Off,
}

/// Finds tracefs, or mounts it in a mount namespace of the agent's own when `mount` is set.
/// Call it from the main thread before the runtime starts its threads: they inherit the
/// namespace then (see `podtrace_ebpf::tracefs::private_mount_namespace`).
pub fn prepare(mount: bool) -> Tracefs {
    if let Some(path) = podtrace_ebpf::tracefs::tracefs_path() {
        return Tracefs::Found(path);
    }
    if !mount {
        return Tracefs::Off;
    }
    let mounted = podtrace_ebpf::tracefs::private_mount_namespace()
        .and_then(|()| podtrace_ebpf::tracefs::mount_tracefs());
    match mounted {
        Ok(path) => Tracefs::Mounted(path),
        Err(e) => Tracefs::Missing(e.to_string()),
    }
}

impl Tracefs {
    /// Says what was done (once logging is set up).
    pub fn log(&self) {
        match self {
            Tracefs::Found(path) => tracing::debug!(path = %path.display(), "tracefs"),
            Tracefs::Mounted(path) => tracing::info!(
                path = %path.display(),
                "tracefs was not mounted: mounted it in the agent's own mount namespace (the node's mounts are untouched), for the fs probes' per-syscall tracepoints"
            ),
            Tracefs::Missing(reason) => tracing::warn!(%reason, "tracefs is not mounted"),
            Tracefs::Off => {}
        }
    }
}
