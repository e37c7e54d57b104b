//! Metric sources that can be switched on and off at run time (the admin channel's `M` command),
//! each with tags so related sources switch together (`Mtag:pod:disable`).
//!
//! A disabled source is neither collected nor encoded: its series disappear from `/metrics` at the
//! next scrape.

use parking_lot::RwLock;
use std::collections::{BTreeMap, BTreeSet};

/// The status of the sources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcesState {
    /// The status applied by `*` (and the one new sources start with).
    pub default: bool,
    /// Tags last enabled by `tag:NAME:enable`.
    pub enabled_tags: BTreeSet<String>,
    /// Per source: its tags and whether it is enabled.
    pub sources: BTreeMap<String, (Vec<String>, bool)>,
}

/// A change to the sources, applied in the protocol's order: all, then tags, then sources.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourcesUpdate {
    /// `*:enable` / `*:disable`.
    pub all: Option<bool>,
    /// `tag:NAME:enable|disable`.
    pub tags: Vec<(String, bool)>,
    /// `NAME:enable|disable`.
    pub sources: Vec<(String, bool)>,
}

/// An update named a source that does not exist.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown metrics source {0:?}")]
pub struct UnknownSource(pub String);

/// The metric sources of the agent.
#[derive(Debug)]
pub struct Sources(RwLock<SourcesState>);

impl Default for Sources {
    fn default() -> Self {
        Self(RwLock::new(SourcesState {
            default: true,
            enabled_tags: BTreeSet::new(),
            sources: BTreeMap::new(),
        }))
    }
}

impl Sources {
    /// The agent's sources with their tags.
    pub fn agent() -> Self {
        use super::catalog::*;
        let s = Self::default();
        s.register(RESOURCE, &["pod", "cgroup"]);
        s.register(PROCESS, &["pod", "proc"]);
        s.register(KERNEL, &["node", "proc"]);
        s.register(EBPF, &["pod", "ebpf", "net", "fs", "cpu"]);
        s.register(AGENT, &["self"]);
        s
    }

    /// Adds a source, enabled as the default says.
    pub fn register(&self, name: &str, tags: &[&str]) {
        let mut s = self.0.write();
        let on = s.default;
        s.sources.insert(name.to_owned(), (tags.iter().map(|t| t.to_string()).collect(), on));
    }

    /// Whether `name` is enabled (unknown sources are not).
    pub fn enabled(&self, name: &str) -> bool {
        self.0.read().sources.get(name).is_some_and(|s| s.1)
    }

    /// A copy of the current state.
    pub fn state(&self) -> SourcesState {
        self.0.read().clone()
    }

    /// Applies an update; nothing changes when it names an unknown source.
    pub fn apply(&self, update: &SourcesUpdate) -> Result<(), UnknownSource> {
        let mut s = self.0.write();
        if let Some((name, _)) = update.sources.iter().find(|(n, _)| !s.sources.contains_key(n)) {
            return Err(UnknownSource(name.clone()));
        }
        if let Some(on) = update.all {
            s.default = on;
            s.enabled_tags.clear();
            s.sources.values_mut().for_each(|v| v.1 = on);
        }
        for (tag, on) in &update.tags {
            if *on {
                s.enabled_tags.insert(tag.clone());
            } else {
                s.enabled_tags.remove(tag);
            }
            for v in s.sources.values_mut().filter(|v| v.0.contains(tag)) {
                v.1 = *on;
            }
        }
        for (name, on) in &update.sources {
            if let Some(v) = s.sources.get_mut(name) {
                v.1 = *on;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_then_tags_then_sources_as_the_protocol_orders_them() {
        let s = Sources::agent();
        let update = SourcesUpdate {
            all: Some(false),
            tags: vec![("pod".into(), true)],
            sources: vec![("process".into(), false)],
        };
        s.apply(&update).unwrap();
        assert!(s.enabled("resource"));
        assert!(!s.enabled("process"));
        assert!(!s.enabled("kernel"));
        assert!(!s.state().default);
        assert!(s.state().enabled_tags.contains("pod"));
    }

    #[test]
    fn unknown_source_changes_nothing() {
        let s = Sources::agent();
        let update = SourcesUpdate {
            all: Some(false),
            sources: vec![("nope".into(), true)],
            ..Default::default()
        };
        assert_eq!(s.apply(&update), Err(UnknownSource("nope".into())));
        assert!(s.enabled("kernel"));
        assert!(!s.enabled("nope"));
    }
}
