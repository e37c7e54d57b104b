//! What the operator knows of the objects it writes whole (NodeTraces, PodTraceProfiles): the
//! content hash each stored object carries in its `podtrace.dev/spec-hash` annotation, and the
//! hash this process wrote last, which is ahead of the watch. From both it decides whether a
//! desired content needs a write ([`Write`]) and whether a watch event is its own write coming
//! back.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

/// What the writer does for an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// The stored (or last written) object has this hash already.
    Nothing,
    /// Apply the content.
    Apply,
    /// Delete the object: nothing is wanted.
    Delete,
}

/// Stored and written content hashes by object.
#[derive(Debug)]
pub struct Ledger<K> {
    /// The annotation of each stored object (`None`: stored without one).
    stored: HashMap<K, Option<String>>,
    /// The hash this process applied last, `None` once it deleted the object.
    written: HashMap<K, Option<String>>,
    /// Objects listed again during a relist of their watch.
    relisted: Option<HashSet<K>>,
}

impl<K> Default for Ledger<K> {
    fn default() -> Self {
        Self { stored: HashMap::new(), written: HashMap::new(), relisted: None }
    }
}

impl<K: Hash + Eq + Clone> Ledger<K> {
    /// An object of the watch's (re)list.
    pub fn listed(&mut self, key: K, hash: Option<String>) {
        if let Some(seen) = self.relisted.as_mut() {
            seen.insert(key.clone());
        }
        self.stored.insert(key, hash);
    }

    /// The watch starts a (re)list.
    pub fn relist_start(&mut self) {
        self.relisted = Some(HashSet::new());
    }

    /// The (re)list is done: objects it did not list were deleted meanwhile.
    pub fn relist_done(&mut self) {
        if let Some(seen) = self.relisted.take() {
            self.stored.retain(|key, _| seen.contains(key));
        }
    }

    /// An object was created or changed; whether it differs from what this process wrote last
    /// (an edit by someone else, or an object it has no record of), which calls for a
    /// recomputation.
    pub fn applied(&mut self, key: K, hash: Option<String>) -> bool {
        let foreign = self.written.get(&key) != Some(&hash);
        self.stored.insert(key, hash);
        foreign
    }

    /// An object was deleted (by someone else, or by this process).
    pub fn deleted<Q>(&mut self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.stored.remove(key);
        self.written.remove(key);
    }

    /// Whether an object of `key` is stored.
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.stored.contains_key(key)
    }

    /// The stored objects.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.stored.keys()
    }

    /// What the writer must do to bring `key` to content of hash `wanted` (`None`: no object).
    pub fn write_for<Q>(&self, key: &Q, wanted: Option<&str>) -> Write
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let stored = self.stored.get(key);
        let written = self.written.get(key);
        let current = match written {
            Some(w) => w.as_deref(),
            None => stored.and_then(|h| h.as_deref()),
        };
        match wanted {
            Some(hash) if current == Some(hash) => Write::Nothing,
            Some(_) => Write::Apply,
            None if current.is_some() || (stored.is_some() && written.is_none()) => Write::Delete,
            None => Write::Nothing,
        }
    }

    /// Records a write of this process: the hash applied, or `None` for a deletion.
    pub fn wrote(&mut self, key: K, hash: Option<String>) {
        self.written.insert(key, hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_applies_changed_content_deletes_unwanted_objects_and_trusts_its_own_writes() {
        let mut ledger: Ledger<String> = Ledger::default();
        assert_eq!(ledger.write_for("n1", Some("h1")), Write::Apply, "nothing stored");
        assert_eq!(ledger.write_for("n1", None), Write::Nothing, "nothing stored, none wanted");
        ledger.listed("n1".into(), Some("h1".into()));
        assert_eq!(ledger.write_for("n1", Some("h1")), Write::Nothing, "stored hash matches");
        assert_eq!(ledger.write_for("n1", Some("h2")), Write::Apply);
        assert_eq!(ledger.write_for("n1", None), Write::Delete);
        ledger.wrote("n1".into(), Some("h2".into()));
        assert_eq!(ledger.write_for("n1", Some("h2")), Write::Nothing, "ahead of the watch");
        ledger.wrote("n1".into(), None);
        assert_eq!(ledger.write_for("n1", None), Write::Nothing, "deleted by us already");
        assert_eq!(ledger.write_for("n1", Some("h2")), Write::Apply);
        ledger.listed("n3".into(), None);
        assert_eq!(ledger.write_for("n3", None), Write::Delete, "stored without a hash");
    }

    #[test]
    fn our_own_write_coming_back_is_not_foreign_and_anything_else_is() {
        let mut ledger: Ledger<String> = Ledger::default();
        ledger.wrote("n1".into(), Some("h1".into()));
        assert!(!ledger.applied("n1".into(), Some("h1".into())));
        assert!(ledger.applied("n1".into(), Some("edited".into())));
        assert!(ledger.applied("n2".into(), Some("h".into())), "no record of it");
        ledger.deleted("n1");
        assert!(!ledger.contains("n1"));
        assert_eq!(ledger.write_for("n1", Some("h1")), Write::Apply, "forgotten with it");
    }

    #[test]
    fn a_relist_forgets_the_objects_it_did_not_see() {
        let mut ledger: Ledger<String> = Ledger::default();
        ledger.listed("a".into(), Some("1".into()));
        ledger.listed("b".into(), Some("1".into()));
        ledger.relist_start();
        ledger.listed("b".into(), Some("2".into()));
        ledger.relist_done();
        assert_eq!(ledger.keys().collect::<Vec<_>>(), ["b"]);
    }
}
