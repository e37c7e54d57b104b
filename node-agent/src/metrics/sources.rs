//! Metric sources: the collectors whose series switch on and off together at run time (the
//! admin channel's `M` command), each with tags so related sources switch together
//! (`Mtag:pod:disable`). Each eBPF probe family is a source of its own, so that one family can
//! be switched off while the others keep running.
//!
//! | source | tags | series |
//! |---|---|---|
//! | `agent` | self | `podtrace_agent_*` |
//! | `cpu` | pod, ebpf, cpu | off-CPU histograms (`cpuBlock`) |
//! | `fs` | pod, ebpf, fs | file-system latency and bytes (`fsLatency`, `fsBytes`) |
//! | `kernel` | node, proc | `node_*` |
//! | `net` | pod, ebpf, net | RTT, connect and DNS latency, network bytes |
//! | `process` | pod, proc | `podtrace_process_*` |
//! | `resource` | pod, cgroup | `podtrace_resource_*` |
//!
//! A disabled source is neither collected nor encoded: its series disappear from `/metrics` at the
//! next scrape. The eBPF families are read in one snapshot of the kernel maps; a disabled one is
//! left out of the store (and the snapshot is skipped when all three are off).

use parking_lot::RwLock;
use std::collections::{BTreeMap, BTreeSet};

pub use podtrace_api::catalog::{Source, UnknownSource};

/// The tags `source` switches with.
pub fn tags(source: Source) -> &'static [&'static str] {
    match source {
        Source::Agent => &["self"],
        // The family's own name as a tag too: `Mtag:net:disable` worked when the three were
        // one `ebpf` source.
        Source::Cpu => &["pod", "ebpf", "cpu"],
        Source::Fs => &["pod", "ebpf", "fs"],
        Source::Net => &["pod", "ebpf", "net"],
        Source::Kernel => &["node", "proc"],
        Source::Process => &["pod", "proc"],
        Source::Resource => &["pod", "cgroup"],
    }
}

/// The status of the sources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcesState {
    /// The status applied by `*`.
    pub default: bool,
    /// Tags last enabled by `tag:NAME:enable`.
    pub enabled_tags: BTreeSet<String>,
    /// Whether each source is enabled.
    pub sources: BTreeMap<Source, bool>,
}

/// A change to the sources, applied in the protocol's order: all, then tags, then sources.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourcesUpdate {
    /// `*:enable` / `*:disable`.
    pub all: Option<bool>,
    /// `tag:NAME:enable|disable`.
    pub tags: Vec<(String, bool)>,
    /// `NAME:enable|disable`.
    pub sources: Vec<(Source, bool)>,
}

/// The metric sources of the agent, every one enabled at start.
#[derive(Debug)]
pub struct Sources(RwLock<SourcesState>);

impl Default for Sources {
    fn default() -> Self {
        Self(RwLock::new(SourcesState {
            default: true,
            enabled_tags: BTreeSet::new(),
            sources: Source::ALL.into_iter().map(|s| (s, true)).collect(),
        }))
    }
}

impl Sources {
    /// Whether `source` is enabled.
    pub fn enabled(&self, source: Source) -> bool {
        self.0.read().sources.get(&source).copied().unwrap_or(false)
    }

    /// Whether any of the eBPF probe families' sources is enabled.
    pub fn any_ebpf(&self) -> bool {
        Source::EBPF.into_iter().any(|s| self.enabled(s))
    }

    /// A copy of the current state.
    pub fn state(&self) -> SourcesState {
        self.0.read().clone()
    }

    /// Applies an update.
    pub fn apply(&self, update: &SourcesUpdate) {
        let mut s = self.0.write();
        if let Some(on) = update.all {
            s.default = on;
            s.enabled_tags.clear();
            s.sources.values_mut().for_each(|v| *v = on);
        }
        for (tag, on) in &update.tags {
            if *on {
                s.enabled_tags.insert(tag.clone());
            } else {
                s.enabled_tags.remove(tag);
            }
            for (_, v) in s.sources.iter_mut().filter(|(src, _)| tags(**src).contains(&&**tag)) {
                *v = *on;
            }
        }
        for (source, on) in &update.sources {
            s.sources.insert(*source, *on);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_then_tags_then_sources_as_the_protocol_orders_them() {
        let s = Sources::default();
        let update = SourcesUpdate {
            all: Some(false),
            tags: vec![("pod".into(), true)],
            sources: vec![(Source::Process, false)],
        };
        s.apply(&update);
        assert!(s.enabled(Source::Resource));
        assert!(!s.enabled(Source::Process));
        assert!(!s.enabled(Source::Kernel));
        assert!(!s.state().default);
        assert!(s.state().enabled_tags.contains("pod"));
    }

    #[test]
    fn each_probe_family_switches_alone_and_the_ebpf_tag_switches_all_three() {
        let s = Sources::default();
        s.apply(&SourcesUpdate { sources: vec![(Source::Net, false)], ..Default::default() });
        assert!(!s.enabled(Source::Net));
        assert!(s.enabled(Source::Fs) && s.enabled(Source::Cpu));
        assert!(s.any_ebpf());
        let off = SourcesUpdate { tags: vec![("ebpf".into(), false)], ..Default::default() };
        s.apply(&off);
        assert!(Source::EBPF.iter().all(|e| !s.enabled(*e)));
        assert!(!s.any_ebpf());
        assert!(s.enabled(Source::Resource) && s.enabled(Source::Process));
    }
}
