//! The packet programs' links, one pair (egress, ingress) per tracked cgroup instead of one at the
//! cgroup v2 root, so that the packets of untracked pods run no podtrace program at all
//! (`make bench-ebpf`: see docs/benchmarks.md).
//!
//! ```text
//!  track(dir) / untrack / set_enabled ─► PacketLinks::sync(wanted: key -> dir)
//!     cover(wanted)  = the wanted dirs without a wanted ancestor (that could be attached)
//!     detach the links not in the cover, then attach the cover's new dirs (egress + ingress)
//!     a dir that cannot be attached: its target's reason, and its wanted descendants get links
//! ```
//!
//! A cgroup's effective cgroup_skb programs include its ancestors' (kernel/bpf/cgroup.c,
//! `compute_effective_progs`), and the programs count a packet by the exact cgroup id of its
//! socket. So a tracked cgroup below another tracked cgroup needs no link of its own, and must
//! not have one: its packets would run the programs twice and be counted twice. Links are
//! detached before new ones are attached for the same reason (a packet in between is missed,
//! never counted twice).

use aya::Ebpf;
use aya::programs::cgroup_skb::CgroupSkbLinkId;
use aya::programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::ladder::errno_text;

/// The packet programs and the direction each attaches to.
pub(crate) const PROGRAMS: [(&str, CgroupSkbAttachType); 2] = [
    ("pt_pkt_egress", CgroupSkbAttachType::Egress),
    ("pt_pkt_ingress", CgroupSkbAttachType::Ingress),
];

/// The links of the packet programs, per cgroup directory, and the targets that have none.
#[derive(Default)]
pub(crate) struct PacketLinks {
    links: BTreeMap<PathBuf, Vec<(&'static str, CgroupSkbLinkId)>>,
    /// Directories that could not be attached, and why.
    failed: BTreeMap<PathBuf, String>,
}

impl PacketLinks {
    /// Forgets every link (the programs they belonged to were unloaded with their object).
    pub(crate) fn reset(&mut self) {
        self.links.clear();
        self.failed.clear();
    }

    /// Cgroup directories with a pair of links.
    pub(crate) fn attached(&self) -> usize {
        self.links.len()
    }

    /// Why the packet probes do not run for the target in `dir` (None: they do, at `dir` or at
    /// a tracked ancestor).
    pub(crate) fn error(&self, dir: &Path) -> Option<&str> {
        self.failed.get(dir).map(String::as_str)
    }

    /// Makes the links those of `wanted` (the directories of the targets that want a packet
    /// probe): links on [`cover`], none elsewhere.
    pub(crate) fn sync(&mut self, ebpf: &mut Ebpf, wanted: &BTreeSet<PathBuf>) {
        self.failed.retain(|dir, _| wanted.contains(dir));
        // Retried at every sync: a cgroup that was missing may exist now.
        let mut failed: BTreeSet<PathBuf> = BTreeSet::new();
        loop {
            let target = cover(wanted, &failed);
            let stale: Vec<PathBuf> =
                self.links.keys().filter(|d| !target.contains(*d)).cloned().collect();
            for dir in stale {
                if let Some(links) = self.links.remove(&dir) {
                    detach(ebpf, links);
                    tracing::debug!(cgroup = %dir.display(), "packet programs detached");
                }
            }
            let mut new_failure = false;
            let new: Vec<PathBuf> =
                target.into_iter().filter(|d| !self.links.contains_key(d)).collect();
            for dir in new {
                match attach(ebpf, &dir) {
                    Ok(links) => {
                        tracing::debug!(cgroup = %dir.display(), "packet programs attached");
                        self.failed.remove(&dir);
                        self.links.insert(dir, links);
                    }
                    Err(reason) => {
                        tracing::warn!(cgroup = %dir.display(), %reason, "cannot attach the packet programs (networkBytes, dns, tcpRtt) to the cgroup");
                        self.failed.insert(dir.clone(), reason);
                        failed.insert(dir.clone());
                        new_failure = true;
                    }
                }
            }
            if !new_failure {
                return;
            }
            // A failed directory covers nothing: its tracked descendants need links of their own.
        }
    }
}

/// The directories of `wanted` that get links: those with no ancestor in `wanted` (apart from
/// the `failed` ones, which cover nothing and get no link).
pub(crate) fn cover(wanted: &BTreeSet<PathBuf>, failed: &BTreeSet<PathBuf>) -> BTreeSet<PathBuf> {
    let covers = |a: &PathBuf| !failed.contains(a);
    wanted
        .iter()
        .filter(|d| !failed.contains(*d))
        .filter(|d| !wanted.iter().any(|a| a != *d && d.starts_with(a) && covers(a)))
        .cloned()
        .collect()
}

/// Attaches both packet programs at `dir`; on failure nothing stays attached.
fn attach(ebpf: &mut Ebpf, dir: &Path) -> Result<Vec<(&'static str, CgroupSkbLinkId)>, String> {
    let cgroup = File::open(dir).map_err(|e| format!("{}: {}", dir.display(), errno_text(&e)))?;
    let mut links = Vec::with_capacity(PROGRAMS.len());
    for (name, direction) in PROGRAMS {
        let result = program(ebpf, name).and_then(|p| {
            // A cgroup link coexists with the other programs of the cgroup (links always
            // behave as BPF_F_ALLOW_MULTI: kernel/bpf/cgroup.c, cgroup_bpf_link_attach).
            p.attach(&cgroup, direction, CgroupAttachMode::Single)
                .map_err(|e| format!("{name}: {}", crate::ladder::describe(e)))
        });
        match result {
            Ok(id) => links.push((name, id)),
            Err(reason) => {
                detach(ebpf, links);
                return Err(reason);
            }
        }
    }
    Ok(links)
}

fn detach(ebpf: &mut Ebpf, links: Vec<(&'static str, CgroupSkbLinkId)>) {
    for (name, id) in links {
        if let Err(e) = program(ebpf, name).and_then(|p| p.detach(id).map_err(|e| e.to_string())) {
            tracing::warn!(program = name, error = %e, "detaching a packet program");
        }
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut CgroupSkb, String> {
    let p = ebpf.program_mut(name).ok_or_else(|| format!("program {name} missing"))?;
    p.try_into().map_err(|e: aya::programs::ProgramError| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(paths: &[&str]) -> BTreeSet<PathBuf> {
        paths.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn nested_tracked_cgroups_get_one_link_at_the_outermost() {
        let wanted = set(&["/cg/a", "/cg/a/x", "/cg/a/x/y", "/cg/b/y", "/cg/ab"]);
        // /cg/ab is not below /cg/a: paths are compared by component.
        assert_eq!(cover(&wanted, &set(&[])), set(&["/cg/a", "/cg/b/y", "/cg/ab"]));
    }

    #[test]
    fn a_failed_ancestor_covers_nothing_and_gets_no_link() {
        let wanted = set(&["/cg/a", "/cg/a/x", "/cg/a/x/y", "/cg/b"]);
        assert_eq!(cover(&wanted, &set(&["/cg/a"])), set(&["/cg/a/x", "/cg/b"]));
        assert_eq!(cover(&wanted, &set(&["/cg/a", "/cg/a/x"])), set(&["/cg/a/x/y", "/cg/b"]));
    }
}
