//! Metric sources: the collectors whose series switch on and off together at run time (the
//! admin channel's `M` command), each with tags so related sources switch together
//! (`Mtag:pod:disable`).
//!
//! | source | tags | series |
//! |---|---|---|
//! | `agent` | self | `podtrace_agent_*` |
//! | `ebpf` | pod, ebpf, net, fs, cpu | the probes' histograms and byte counters |
//! | `kernel` | node, proc | `node_*` |
//! | `process` | pod, proc | `podtrace_process_*` |
//! | `resource` | pod, cgroup | `podtrace_resource_*` |
//!
//! A disabled source is neither collected nor encoded: its series disappear from `/metrics` at the
//! next scrape.

use parking_lot::RwLock;
use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use std::collections::{BTreeMap, BTreeSet};

/// A metric source. Declared in the order of their names, which is the order reports list them
/// in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// The agent's own `podtrace_agent_*` metrics.
    Agent,
    /// The eBPF probes' latency histograms and byte counters.
    Ebpf,
    /// The node's kernel counters from `/proc`.
    Kernel,
    /// Per-process statistics from `/proc/<pid>`.
    Process,
    /// cgroup limits and usage.
    Resource,
}

impl Source {
    /// Every source.
    pub const ALL: [Source; 5] =
        [Source::Agent, Source::Ebpf, Source::Kernel, Source::Process, Source::Resource];

    /// Its name on the admin channel and in the `source` label.
    pub fn name(self) -> &'static str {
        match self {
            Source::Agent => "agent",
            Source::Ebpf => "ebpf",
            Source::Kernel => "kernel",
            Source::Process => "process",
            Source::Resource => "resource",
        }
    }

    /// The tags it switches with.
    pub fn tags(self) -> &'static [&'static str] {
        match self {
            Source::Agent => &["self"],
            Source::Ebpf => &["pod", "ebpf", "net", "fs", "cpu"],
            Source::Kernel => &["node", "proc"],
            Source::Process => &["pod", "proc"],
            Source::Resource => &["pod", "cgroup"],
        }
    }
}

impl std::str::FromStr for Source {
    type Err = UnknownSource;

    fn from_str(name: &str) -> Result<Self, UnknownSource> {
        Source::ALL.into_iter().find(|s| s.name() == name).ok_or(UnknownSource(name.to_owned()))
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// As its name (`source="resource"`).
impl EncodeLabelValue for Source {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.name())
    }
}

/// A name that is no source.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown metrics source {0:?}")]
pub struct UnknownSource(pub String);

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
            for (_, v) in s.sources.iter_mut().filter(|(src, _)| src.tags().contains(&&**tag)) {
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
    fn names_parse_back_and_unknown_names_are_errors() {
        for s in Source::ALL {
            assert_eq!(s.name().parse::<Source>(), Ok(s));
        }
        assert_eq!("nope".parse::<Source>(), Err(UnknownSource("nope".into())));
        let mut names: Vec<&str> = Source::ALL.iter().map(|s| s.name()).collect();
        names.sort();
        assert_eq!(names, Source::ALL.map(Source::name), "declared in name order");
    }
}
