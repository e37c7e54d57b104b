//! `RLIMIT_NOFILE`. The agent keeps about 13 files open per traced container (cgroup and
//! `/proc/<pid>` files re-read in place with `pread`, which is most of why its collector is
//! cheap: see docs/benchmarks.md), so the soft limit of 1,024 that container runtimes commonly
//! give runs out at about 75 containers, and every read past it fails. Any process may raise its
//! soft limit up to its hard one without a capability, so the agent does that at start and logs
//! how many containers the result is enough for. Past that, files are opened for each read
//! ([`crate::procfs::set_kept_budget`]): every container is still read, at a higher CPU cost.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors the agent keeps open per traced container (measured: 13.0 at 1,000 containers).
pub const PER_CONTAINER: u64 = 13;
/// Descriptors the agent needs besides its containers (listeners, eBPF maps and programs,
/// clients).
pub const BASE: u64 = 200;

/// The soft limit before and after [`raise`] (`None`: unlimited).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFiles {
    /// Before.
    pub before: Option<u64>,
    /// Now.
    pub now: Option<u64>,
}

impl OpenFiles {
    /// Roughly how many containers the current soft limit lets the agent trace.
    pub fn containers(&self) -> Option<u64> {
        self.now.map(|n| n.saturating_sub(BASE) / PER_CONTAINER)
    }
}

/// Raises the soft open-file limit to the hard one (an unlimited hard limit is capped by the
/// kernel's `fs.nr_open`, which `setrlimit` would otherwise refuse).
pub fn raise() -> std::io::Result<OpenFiles> {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    let wanted = maximum.or_else(nr_open);
    let higher = match (current, wanted) {
        (Some(c), Some(w)) => w > c,
        _ => false,
    };
    if !higher {
        return Ok(OpenFiles { before: current, now: current });
    }
    setrlimit(Resource::Nofile, Rlimit { current: wanted, maximum })?;
    Ok(OpenFiles { before: current, now: wanted })
}

/// The current soft limit (`None`: unlimited).
pub fn soft_limit() -> Option<u64> {
    getrlimit(Resource::Nofile).current
}

/// How many files the collectors may keep open under a soft limit of `soft` (the rest are
/// opened per read: see [`crate::procfs::KeptFile`]).
pub fn kept_budget(soft: Option<u64>) -> usize {
    soft.map_or(usize::MAX, |n| usize::try_from(n.saturating_sub(BASE)).unwrap_or(usize::MAX))
}

fn nr_open() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open").ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_says_how_many_containers_fit() {
        let limit = |now| OpenFiles { before: Some(1024), now };
        assert_eq!(limit(Some(1024)).containers(), Some(63));
        assert_eq!(limit(Some(1_048_576)).containers(), Some(80_644));
        assert_eq!(limit(Some(100)).containers(), Some(0));
        assert_eq!(limit(None).containers(), None, "unlimited");
        assert_eq!(kept_budget(Some(1024)), 824);
        assert_eq!(kept_budget(Some(100)), 0);
        assert_eq!(kept_budget(None), usize::MAX);
    }
}
