//! The labels of every Namespace (from a metadata watch): what decides whether a namespace
//! consents to cross-namespace tracing and matches a PodTrace's `namespaceSelector`
//! (`reach.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::Labels;

/// Namespaces by name, with their labels.
#[derive(Debug, Default)]
pub struct NamespaceIndex {
    labels: BTreeMap<Arc<str>, Labels>,
    relisting: Option<BTreeMap<Arc<str>, Labels>>,
}

impl NamespaceIndex {
    /// The labels of `namespace`, if it exists.
    pub fn labels(&self, namespace: &str) -> Option<&Labels> {
        self.labels.get(namespace)
    }

    /// Every namespace, by name.
    pub fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.labels.keys()
    }

    /// A namespace was created or changed (during a relist: listed); whether its labels
    /// changed.
    pub fn applied(
        &mut self,
        name: &str,
        labels: impl IntoIterator<Item = (String, String)>,
    ) -> bool {
        let labels = Labels::from_pairs(labels);
        if let Some(relist) = self.relisting.as_mut() {
            relist.insert(name.into(), labels);
            return false;
        }
        self.labels.insert(name.into(), labels.clone()) != Some(labels)
    }

    /// A namespace was deleted; whether it was known.
    pub fn deleted(&mut self, name: &str) -> bool {
        self.labels.remove(name).is_some()
    }

    /// The watch (re)lists: namespaces arrive through [`applied`](Self::applied).
    pub fn relist_start(&mut self) {
        self.relisting = Some(BTreeMap::new());
    }

    /// The (re)list is done: the namespaces that appeared, went or changed labels.
    pub fn relist_done(&mut self) -> BTreeSet<Arc<str>> {
        let Some(new) = self.relisting.take() else { return BTreeSet::new() };
        let old = std::mem::replace(&mut self.labels, new);
        let mut changed: BTreeSet<Arc<str>> = old
            .iter()
            .filter(|(n, l)| self.labels.get(*n) != Some(l))
            .map(|(n, _)| n.clone())
            .collect();
        changed.extend(self.labels.keys().filter(|n| !old.contains_key(*n)).cloned());
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_label_change_is_reported_and_the_same_labels_are_not() {
        let mut index = NamespaceIndex::default();
        assert!(index.applied("shop", labels(&[("a", "1")])));
        assert!(!index.applied("shop", labels(&[("a", "1")])));
        assert!(index.applied("shop", labels(&[("a", "2")])));
        assert_eq!(index.labels("shop").unwrap().get("a"), Some("2"));
        assert!(index.deleted("shop") && !index.deleted("shop"));
    }

    #[test]
    fn a_relist_reports_what_appeared_went_or_changed() {
        let mut index = NamespaceIndex::default();
        index.applied("same", labels(&[("a", "1")]));
        index.applied("moved", labels(&[("a", "1")]));
        index.applied("gone", labels(&[]));
        index.relist_start();
        index.applied("same", labels(&[("a", "1")]));
        index.applied("moved", labels(&[("a", "2")]));
        index.applied("new", labels(&[]));
        let changed: Vec<String> = index.relist_done().iter().map(|n| n.to_string()).collect();
        assert_eq!(changed, ["gone", "moved", "new"]);
        assert_eq!(index.names().count(), 3);
    }
}
