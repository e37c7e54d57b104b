//! Data the agent cannot read, and why: reported instead of exported as zeros or left as
//! silently missing series. Each gap is a `podtrace_agent_data_unavailable{source, data,
//! reason}` series of value 1, makes the health service `podtrace.collectors` NOT_SERVING
//! (`health live`: Healthy, with the advice as the reason) and the NodeTrace `Degraded`
//! (reason `DataUnavailable`).
//!
//! | gap | cause | without it |
//! |---|---|---|
//! | `process/pids/pid_namespace` | the agent is not in the PID namespace of the `/proc` it reads (no `hostPID`) | `cgroup.procs` lists every host process as 0 (v2) or not at all (v1): no process series, nothing for the process filter |
//! | `process/io/permission_denied` | no `CAP_SYS_PTRACE` for another user's `/proc/<pid>/io` | disk bytes would read 0 |
//! | `process/fds/permission_denied` | no `CAP_SYS_PTRACE`/`CAP_DAC_READ_SEARCH` for `/proc/<pid>/fd` | open descriptors would read 0 |
//! | `process/network/permission_denied` | no `CAP_SYS_PTRACE` for `/proc/<pid>/ns/net` | network bytes would read 0 |

use std::path::Path;

/// One kind of data the agent cannot read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gap {
    /// The metric source whose data is missing (`process`).
    pub source: &'static str,
    /// What cannot be read (`pids`, `io`, `fds`, `network`).
    pub data: &'static str,
    /// Why (`pid_namespace`, `permission_denied`).
    pub reason: &'static str,
}

/// The agent reads `/proc` of another PID namespace than its own.
pub const PID_NAMESPACE: Gap = Gap { source: "process", data: "pids", reason: "pid_namespace" };
/// `/proc/<pid>/io` refused.
pub const IO_DENIED: Gap = Gap { source: "process", data: "io", reason: "permission_denied" };
/// `/proc/<pid>/fd` refused.
pub const FDS_DENIED: Gap = Gap { source: "process", data: "fds", reason: "permission_denied" };
/// `/proc/<pid>/ns/net` refused.
pub const NETWORK_DENIED: Gap =
    Gap { source: "process", data: "network", reason: "permission_denied" };

impl Gap {
    /// What is missing and what to do about it, for logs, health and the NodeTrace condition.
    pub fn advice(&self) -> &'static str {
        match (self.data, self.reason) {
            ("pids", _) => {
                "the agent is not in the host's PID namespace, so cgroup.procs gives it no usable \
                 pids: no per-process series, and nothing for the eBPF process filter. Run it \
                 with hostPID: true (the chart does)"
            }
            ("io", _) => {
                "/proc/<pid>/io of the pods' processes is refused: no disk byte series. Give the \
                 agent CAP_SYS_PTRACE (the chart does)"
            }
            ("fds", _) => {
                "/proc/<pid>/fd of the pods' processes is refused: no open-descriptor series. \
                 Give the agent CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (the chart does)"
            }
            ("network", _) => {
                "/proc/<pid>/ns/net of the pods' processes is refused: no per-process network \
                 byte series. Give the agent CAP_SYS_PTRACE (the chart does)"
            }
            _ => "data the agent cannot read",
        }
    }

    /// One line: `process io (permission_denied): <advice>`.
    pub fn describe(&self) -> String {
        format!("{} {} ({}): {}", self.source, self.data, self.reason, self.advice())
    }
}

/// [`PID_NAMESPACE`] when the pid of this process differs between its own `/proc` and the
/// `/proc` it reads (`proc_root`): `<proc>/self` names the reader's pid in the namespace of that
/// procfs mount, so the two differ exactly when the agent runs in another PID namespace.
pub fn pid_namespace(proc_root: &Path) -> Option<Gap> {
    let own = std::fs::read_link("/proc/self").ok()?;
    let theirs = std::fs::read_link(proc_root.join("self")).ok()?;
    pid_namespace_of(&own, &theirs)
}

/// The comparison of [`pid_namespace`] (pure).
pub fn pid_namespace_of(own: &Path, theirs: &Path) -> Option<Gap> {
    (own != theirs).then_some(PID_NAMESPACE)
}

/// Whether an I/O error is a refusal (no capability or permission), not a vanished process.
pub fn is_denied(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::PermissionDenied
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_pid_namespace_is_a_gap_the_same_one_is_not() {
        assert_eq!(pid_namespace_of(Path::new("4242"), Path::new("4242")), None);
        assert_eq!(pid_namespace_of(Path::new("7"), Path::new("4242")), Some(PID_NAMESPACE));
        // The agent reading its own /proc is always in its namespace.
        assert_eq!(pid_namespace(Path::new("/proc")), None);
    }

    #[test]
    fn every_gap_has_advice_that_names_the_fix() {
        for gap in [PID_NAMESPACE, IO_DENIED, FDS_DENIED, NETWORK_DENIED] {
            assert!(gap.advice().contains("hostPID") || gap.advice().contains("CAP_"), "{gap:?}");
            assert!(gap.describe().starts_with("process "), "{}", gap.describe());
        }
    }

    #[test]
    fn a_permission_error_is_a_refusal_a_missing_file_is_not() {
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(is_denied(&denied));
        assert!(!is_denied(&std::io::Error::from(std::io::ErrorKind::NotFound)));
    }
}
