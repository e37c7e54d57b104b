//! The operator's state in one pure index, behind one lock: what the watches saw and what this
//! process wrote. The watches apply events and get back what follows from them (nodes to
//! recompute, PodTraces to reconcile); the NodeTrace writer and the PodTrace controller read it.
//!
//! ```text
//!  Index
//!   ├─ pods         PodIndex (pods.rs): projected pods by uid, node and namespace; the nodes
//!   ├─ nodetraces   per node: requesters (fingerprints of the pods' by=), the spec-hash
//!   │               annotation, the agent's status and a fingerprint of it
//!   ├─ written      per node: the spec hash this process applied last (None: it deleted it)
//!   └─ podtraces    per uid: the generation seen, a fingerprint of status.nodes
//! ```
//!
//! Nothing here does I/O; `watch.rs`, `nodetrace.rs` and `podtrace.rs` do, and the tests below
//! drive it with plain values.

mod pods;

use kube::ResourceExt;
use podtrace_api::{NodeTrace, NodeTraceStatus, PodTrace, PodTraceStatus, nodetrace::PodTraceRef};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::SPEC_HASH_ANNOTATION;
use crate::fingerprint;
pub use pods::{ContainerRef, Interner, Labels, PodIndex, ProjectedPod, Touched};

/// What the operator keeps of a NodeTrace (ours, by label): never its spec.
#[derive(Clone, Debug, PartialEq)]
struct NodeTraceEntry {
    /// Fingerprints of the PodTraces that select a pod on the node (its pods' `by=`): 8 bytes
    /// per PodTrace and node instead of two strings.
    requested_by: Vec<u64>,
    /// The `podtrace.dev/spec-hash` annotation of the stored object.
    spec_hash: Option<String>,
    /// What the node's agent reported.
    status: Option<NodeTraceStatus>,
    /// A fingerprint of `status` without its heartbeat: a PodTrace roll-up is due only when it
    /// changes.
    report: u64,
}

impl NodeTraceEntry {
    fn of(nt: &NodeTrace) -> Self {
        let report = nt.status.as_ref().map(|s| NodeTraceStatus { heartbeat: None, ..s.clone() });
        Self {
            // requested_by() is already a set: one fingerprint per PodTrace.
            requested_by: nt.spec.requested_by().into_iter().map(fingerprint::of).collect(),
            spec_hash: nt.annotations().get(SPEC_HASH_ANNOTATION).cloned(),
            status: nt.status.clone(),
            report: fingerprint::of(&report),
        }
    }
}

/// What the operator keeps of a PodTrace besides the controller's store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct PodTraceEntry {
    /// The metadata.generation last seen: status writes and finalizer updates do not change
    /// what a PodTrace selects, so they cost no NodeTrace recomputation.
    generation: Option<i64>,
    /// A fingerprint of `status.nodes`, which the store does not keep (one entry per node a
    /// PodTrace spans): whether a new roll-up differs is all the controller needs to know.
    status_nodes: Option<u64>,
}

/// What follows from a NodeTrace event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeTraceChange {
    /// The node whose NodeTrace must be recomputed: a deletion, an edit by someone else or a
    /// NodeTrace this process has no record of; not its own write coming back.
    pub recompute: Option<Arc<str>>,
    /// The PodTraces (fingerprints of their references) whose status must be rolled up again:
    /// the agent's report changed.
    pub roll_up: Vec<u64>,
}

/// What the NodeTrace writer does for a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// The stored (or last written) spec has this hash already.
    Nothing,
    /// Apply the spec.
    Apply,
    /// Delete the NodeTrace: no traced pod left, or the node is gone.
    Delete,
}

/// The operator's state.
#[derive(Debug, Default)]
pub struct Index {
    /// Projected pods and existing nodes.
    pub pods: PodIndex,
    nodetraces: HashMap<Arc<str>, NodeTraceEntry>,
    /// NodeTraces listed again during a relist of their watch.
    nodetraces_relisted: Option<HashSet<Arc<str>>>,
    /// The spec hash this process applied last per node, `None` once deleted by it (the watch
    /// catches up later).
    written: HashMap<Arc<str>, Option<String>>,
    podtraces: HashMap<String, PodTraceEntry>,
}

impl Index {
    /// A NodeTrace of the watch's (re)list: recorded, nothing follows (a relist rechecks every
    /// node and PodTrace when it is done).
    pub fn nodetrace_listed(&mut self, nt: &NodeTrace) {
        let name: Arc<str> = nt.name_any().into();
        if let Some(seen) = self.nodetraces_relisted.as_mut() {
            seen.insert(name.clone());
        }
        self.nodetraces.insert(name, NodeTraceEntry::of(nt));
    }

    /// The NodeTrace watch starts a (re)list.
    pub fn nodetraces_relist_start(&mut self) {
        self.nodetraces_relisted = Some(HashSet::new());
    }

    /// The (re)list is done: NodeTraces it did not list were deleted meanwhile.
    pub fn nodetraces_relist_done(&mut self) {
        if let Some(seen) = self.nodetraces_relisted.take() {
            self.nodetraces.retain(|name, _| seen.contains(name));
        }
    }

    /// A NodeTrace was created or changed.
    pub fn nodetrace_applied(&mut self, nt: &NodeTrace) -> NodeTraceChange {
        let name: Arc<str> = nt.name_any().into();
        let entry = NodeTraceEntry::of(nt);
        // Our own write coming back needs no recomputation.
        let recompute = (self.written.get(&name) != Some(&entry.spec_hash)).then(|| name.clone());
        let old = self.nodetraces.insert(name, entry);
        let entry = &self.nodetraces[&*nt.name_any()];
        let roll_up = match old {
            Some(old) if old.report == entry.report => Vec::new(),
            _ => entry.requested_by.clone(),
        };
        NodeTraceChange { recompute, roll_up }
    }

    /// A NodeTrace was deleted (by someone else, or by this process: then it is recomputed and
    /// stays deleted if it should).
    pub fn nodetrace_deleted(&mut self, name: &str) -> NodeTraceChange {
        let old = self.nodetraces.remove(name);
        self.written.remove(name);
        NodeTraceChange {
            recompute: Some(name.into()),
            roll_up: old.map(|o| o.requested_by).unwrap_or_default(),
        }
    }

    /// The nodes whose NodeTrace exists.
    pub fn nodetraces(&self) -> impl Iterator<Item = &Arc<str>> {
        self.nodetraces.keys()
    }

    /// What the agent of `node` reported.
    pub fn node_status(&self, node: &str) -> Option<&NodeTraceStatus> {
        self.nodetraces.get(node)?.status.as_ref()
    }

    /// The nodes whose NodeTrace lists `pt` among its requesters.
    pub fn nodes_requested_by(&self, pt: &PodTraceRef) -> BTreeSet<Arc<str>> {
        let me = fingerprint::of(pt);
        let lists_me = |(_, e): &(&Arc<str>, &NodeTraceEntry)| e.requested_by.contains(&me);
        self.nodetraces.iter().filter(lists_me).map(|(n, _)| n.clone()).collect()
    }

    /// What the writer must do for `node` to bring its NodeTrace to a spec of hash `wanted`
    /// (`None`: no NodeTrace). What this process wrote last is ahead of the watch.
    pub fn write_for(&self, node: &str, wanted: Option<&str>) -> Write {
        let stored = self.nodetraces.get(node);
        let written = self.written.get(node);
        let current = match written {
            Some(w) => w.as_deref(),
            None => stored.and_then(|e| e.spec_hash.as_deref()),
        };
        match wanted {
            Some(hash) if current == Some(hash) => Write::Nothing,
            Some(_) => Write::Apply,
            None if current.is_some() || (stored.is_some() && written.is_none()) => Write::Delete,
            None => Write::Nothing,
        }
    }

    /// Records a write of this process: the spec hash applied, or `None` for a deletion.
    pub fn wrote(&mut self, node: Arc<str>, hash: Option<String>) {
        self.written.insert(node, hash);
    }

    /// Records the fingerprint of a PodTrace's `status.nodes` (the store keeps it without).
    pub fn podtrace_status_nodes(
        &mut self,
        uid: &str,
        nodes: &[podtrace_api::podtrace::NodeSummary],
    ) {
        self.podtraces.entry(uid.to_owned()).or_default().status_nodes =
            Some(fingerprint::of(&nodes));
    }

    /// A PodTrace was seen with `generation`; whether what it selects may have changed (a new
    /// generation or a PodTrace not seen before).
    pub fn podtrace_applied(&mut self, uid: &str, generation: Option<i64>) -> bool {
        let entry = self.podtraces.entry(uid.to_owned()).or_default();
        // Not seen before (the entry may hold only the status fingerprint so far), or moved.
        let changed = entry.generation.is_none() || entry.generation != generation;
        entry.generation = generation;
        changed
    }

    /// A PodTrace of the watch's (re)list: recorded.
    pub fn podtrace_listed(&mut self, uid: &str, generation: Option<i64>) {
        self.podtraces.entry(uid.to_owned()).or_default().generation = generation;
    }

    /// A PodTrace was deleted.
    pub fn podtrace_deleted(&mut self, uid: &str) {
        self.podtraces.remove(uid);
    }

    /// Keeps only the PodTraces in `uids` (after a relist of their watch).
    pub fn podtraces_retain(&mut self, uids: &HashSet<String>) {
        self.podtraces.retain(|uid, _| uids.contains(uid));
    }

    /// Whether `status` differs from what `pt` (from the store, `status.nodes` stripped) shows.
    pub fn status_changed(&self, pt: &PodTrace, status: &PodTraceStatus) -> bool {
        let Some(seen) = &pt.status else { return true };
        let seen_nodes =
            pt.uid().and_then(|uid| self.podtraces.get(&uid)).and_then(|e| e.status_nodes);
        seen_nodes != Some(fingerprint::of(&status.nodes))
            || *seen != PodTraceStatus { nodes: Vec::new(), ..status.clone() }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use podtrace_api::NodeTraceSpec;
    use podtrace_api::nodetrace::TracedPod;
    use podtrace_api::podtrace::NodeSummary;

    pub(crate) use super::pods::tests::pod;

    fn ptref(name: &str) -> PodTraceRef {
        PodTraceRef { namespace: "ns".into(), name: name.into() }
    }

    /// A NodeTrace of `node` whose pods are selected by `by`, with a spec hash and an agent
    /// report of `attached` pods.
    fn nodetrace(node: &str, hash: Option<&str>, by: &[&str], attached: i32) -> NodeTrace {
        let pod = TracedPod {
            uid: "u".into(),
            namespace: "ns".into(),
            name: "p".into(),
            settings_key: "k".into(),
            requested_by: by.iter().map(|n| ptref(n)).collect(),
            ..Default::default()
        };
        let mut nt = NodeTrace::new(node, NodeTraceSpec { pods: vec![pod], ..Default::default() });
        if let Some(h) = hash {
            nt.annotations_mut().insert(SPEC_HASH_ANNOTATION.into(), h.into());
        }
        nt.status = Some(NodeTraceStatus { attached_pods: attached, ..Default::default() });
        nt
    }

    #[test]
    fn our_own_write_coming_back_is_not_recomputed_and_anything_else_is() {
        let mut index = Index::default();
        index.wrote("n1".into(), Some("h1".into()));
        let ours = index.nodetrace_applied(&nodetrace("n1", Some("h1"), &["a"], 0));
        assert_eq!(ours.recompute, None);
        let edited = index.nodetrace_applied(&nodetrace("n1", Some("edited"), &["a"], 0));
        assert_eq!(edited.recompute, Some("n1".into()));
        let unknown = index.nodetrace_applied(&nodetrace("n2", Some("h"), &["a"], 0));
        assert_eq!(unknown.recompute, Some("n2".into()), "no record of it: recompute");
    }

    #[test]
    fn a_changed_agent_report_rolls_up_the_podtraces_on_the_node_and_a_heartbeat_does_not() {
        let mut index = Index::default();
        let first = index.nodetrace_applied(&nodetrace("n1", None, &["a", "b"], 0));
        assert_eq!(first.roll_up.len(), 2, "a new report");
        let mut beat = nodetrace("n1", None, &["a", "b"], 0);
        beat.status.as_mut().unwrap().heartbeat =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-11-22T00:00:00Z".parse().unwrap(),
            ));
        assert!(index.nodetrace_applied(&beat).roll_up.is_empty(), "only the heartbeat moved");
        let attached = index.nodetrace_applied(&nodetrace("n1", None, &["a"], 1));
        assert_eq!(attached.roll_up, vec![fingerprint::of(&ptref("a"))]);
        let deleted = index.nodetrace_deleted("n1");
        assert_eq!((deleted.recompute, deleted.roll_up.len()), (Some("n1".into()), 1));
        assert_eq!(index.node_status("n1"), None);
    }

    #[test]
    fn requesters_find_their_nodes_and_a_relist_forgets_deleted_nodetraces() {
        let mut index = Index::default();
        index.nodetrace_listed(&nodetrace("n1", None, &["a"], 0));
        index.nodetrace_listed(&nodetrace("n2", None, &["a", "b"], 0));
        assert_eq!(index.nodes_requested_by(&ptref("a")), ["n1".into(), "n2".into()].into());
        assert_eq!(index.nodes_requested_by(&ptref("b")), ["n2".into()].into());
        index.nodetraces_relist_start();
        index.nodetrace_listed(&nodetrace("n2", None, &["b"], 0));
        index.nodetraces_relist_done();
        assert_eq!(index.nodetraces().count(), 1);
        assert!(index.nodes_requested_by(&ptref("a")).is_empty());
    }

    #[test]
    fn the_writer_applies_changed_specs_deletes_unwanted_nodetraces_and_trusts_its_own_writes() {
        let mut index = Index::default();
        assert_eq!(index.write_for("n1", Some("h1")), Write::Apply, "nothing stored");
        assert_eq!(index.write_for("n1", None), Write::Nothing, "nothing stored, none wanted");
        index.nodetrace_listed(&nodetrace("n1", Some("h1"), &[], 0));
        assert_eq!(index.write_for("n1", Some("h1")), Write::Nothing, "stored hash matches");
        assert_eq!(index.write_for("n1", Some("h2")), Write::Apply);
        assert_eq!(index.write_for("n1", None), Write::Delete);
        index.wrote("n1".into(), Some("h2".into()));
        assert_eq!(index.write_for("n1", Some("h2")), Write::Nothing, "ahead of the watch");
        index.wrote("n1".into(), None);
        assert_eq!(index.write_for("n1", None), Write::Nothing, "deleted by us already");
        assert_eq!(index.write_for("n1", Some("h2")), Write::Apply);
        index.nodetrace_listed(&nodetrace("n3", None, &[], 0));
        assert_eq!(index.write_for("n3", None), Write::Delete, "stored without a hash");
    }

    #[test]
    fn only_a_new_generation_changes_what_a_podtrace_selects() {
        let mut index = Index::default();
        index.podtrace_listed("u1", Some(1));
        assert!(!index.podtrace_applied("u1", Some(1)), "a status write");
        assert!(index.podtrace_applied("u1", Some(2)));
        assert!(index.podtrace_applied("u2", Some(1)), "not seen before");
        index.podtrace_deleted("u2");
        index.podtraces_retain(&HashSet::new());
        assert!(index.podtraces.is_empty());
    }

    #[test]
    fn a_status_differs_by_its_fields_or_by_its_node_list() {
        let mut index = Index::default();
        let spec = podtrace_api::PodTraceSpec {
            selector: Default::default(),
            containers: vec![],
            profile_ref: None,
            profile: None,
            paused: false,
        };
        let mut pt = PodTrace::new("t", spec);
        pt.metadata.uid = Some("u1".into());
        let nodes = vec![NodeSummary { node: "n1".into(), pods: 1, ..Default::default() }];
        let status = PodTraceStatus { matched_pods: 1, nodes: nodes.clone(), ..Default::default() };
        assert!(index.status_changed(&pt, &status), "no status yet");
        pt.status = Some(PodTraceStatus { nodes: Vec::new(), ..status.clone() });
        index.podtrace_status_nodes("u1", &nodes);
        assert!(!index.status_changed(&pt, &status));
        let moved =
            vec![NodeSummary { node: "n1".into(), pods: 1, attached: 1, ..Default::default() }];
        assert!(index.status_changed(&pt, &PodTraceStatus { nodes: moved, ..status.clone() }));
        assert!(index.status_changed(&pt, &PodTraceStatus { matched_pods: 2, ..status }));
    }
}
