//! `RLIMIT_MEMLOCK` for the eBPF maps. Kernels before 5.11 charge map memory to the memlock
//! rlimit (often 64 KiB in containers), so loading the probes fails there unless the agent
//! raises it, which needs `CAP_SYS_RESOURCE` (chart value `agent.sysResource`). Since 5.11 maps
//! are charged to the memory cgroup (commit 97306be45fbe, "bpf: switch to memcg-based memory
//! accounting") and the limit does not matter: the agent then leaves it alone, and a runtime
//! that cannot grant the capability does not matter either.

/// What [`raise_for_bpf`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Memlock {
    /// The kernel (this release) charges maps to the memory cgroup: nothing to do.
    NotNeeded(String),
    /// The limit is now unlimited.
    Raised,
    /// Raising it failed: the eBPF maps may not load.
    Failed(String),
}

/// Whether a kernel release (`uname -r`, e.g. `5.10.0-28-amd64`) charges eBPF maps to the
/// memlock rlimit, i.e. is older than 5.11. An unparsable release is treated as old.
pub fn needs_memlock(release: &str) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) < (5, 11)
}

/// Raises `RLIMIT_MEMLOCK` to unlimited when this kernel needs it.
pub fn raise_for_bpf() -> Memlock {
    let release = rustix::system::uname().release().to_string_lossy().into_owned();
    if !needs_memlock(&release) {
        return Memlock::NotNeeded(release);
    }
    let unlimited = rustix::process::Rlimit { current: None, maximum: None };
    match rustix::process::setrlimit(rustix::process::Resource::Memlock, unlimited) {
        Ok(()) => Memlock::Raised,
        Err(e) => Memlock::Failed(format!(
            "kernel {release} charges eBPF maps to RLIMIT_MEMLOCK and raising it failed ({e}): \
             the probes may not load; give the agent CAP_SYS_RESOURCE (chart value \
             agent.sysResource=true)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_before_5_11_need_the_memlock_rlimit() {
        for old in ["4.18.0-513.el8.x86_64", "5.4.0-150-generic", "5.10.0-28-amd64", "junk"] {
            assert!(needs_memlock(old), "{old}");
        }
        for new in ["5.11.0", "5.15.0-91-generic", "6.18.44-fc-v1300", "10.0"] {
            assert!(!needs_memlock(new), "{new}");
        }
    }

    #[test]
    fn this_kernel_is_classified_from_its_own_release() {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        match raise_for_bpf() {
            Memlock::NotNeeded(r) => assert_eq!(r, release.trim()),
            other => assert!(needs_memlock(release.trim()), "{other:?}"),
        }
    }
}
