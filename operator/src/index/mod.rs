//! The operator's state in one pure index, behind one lock: what the watches saw and what this
//! process wrote. The watches apply events and get back what follows from them (nodes to
//! recompute, PodTraces to reconcile); the writer and the PodTrace controller read it.
//!
//! ```text
//!  Index
//!   ├─ pods         PodIndex (pods.rs): projected pods by uid, node and namespace; the nodes
//!   ├─ namespaces   NamespaceIndex (namespaces.rs): labels per namespace, for namespaceSelector
//!   ├─ nodetraces   per node: requesters (fingerprints of the pods' by=), the spec format its
//!   │               agent reads, the agent's status and a fingerprint of it
//!   ├─ nodetrace_hashes, profile_hashes
//!   │               Ledger (ledger.rs) per NodeTrace / PodTraceProfile: the stored spec-hash
//!   │               annotation and the hash this process wrote last
//!   └─ podtraces    per uid: the generation seen, a fingerprint of status.nodes, the
//!                   fingerprint of what format-2 NodeTraces take from it
//! ```
//!
//! Nothing here does I/O; `watch.rs`, `nodetrace.rs`, `podtraceprofile.rs` and `podtrace.rs`
//! do, and the tests below drive it with plain values.

mod ledger;
mod namespaces;
mod pods;

use kube::ResourceExt;
use podtrace_api::nodetrace::{PodTraceRef, SpecFormat};
use podtrace_api::{NodeTrace, NodeTraceStatus, PodTrace, PodTraceStatus};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::SPEC_HASH_ANNOTATION;
use crate::fingerprint;
pub use ledger::{Ledger, Write};
pub use namespaces::NamespaceIndex;
pub use pods::{ContainerRef, Interner, Labels, PodIndex, ProjectedPod, Touched};

/// What the operator keeps of a NodeTrace (ours, by label): never its spec.
#[derive(Clone, Debug, PartialEq)]
struct NodeTraceEntry {
    /// Fingerprints of the PodTraces that select a pod on the node (its pods' `by=`): 8 bytes
    /// per PodTrace and node instead of two strings.
    requested_by: Vec<u64>,
    /// The spec format the node's agent reads (`status.specFormat`).
    format: SpecFormat,
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
            format: SpecFormat::read_by(nt.status.as_ref().and_then(|s| s.spec_format)),
            status: nt.status.clone(),
            report: fingerprint::of(&report),
        }
    }
}

/// The content hash an object carries in its `podtrace.dev/spec-hash` annotation.
pub fn spec_hash_of(obj: &impl ResourceExt) -> Option<String> {
    obj.annotations().get(SPEC_HASH_ANNOTATION).cloned()
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
    /// [`crate::desired::TraceSet::nodetrace_key`]: what format-2 NodeTraces take from it.
    nodetrace_key: Option<u64>,
    /// When this process last wrote its status.
    status_written: Option<Instant>,
}

/// What follows from a NodeTrace event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeTraceChange {
    /// The node whose NodeTrace must be recomputed: a deletion, an edit by someone else, a
    /// NodeTrace this process has no record of, or an agent that now reads another spec
    /// format; not its own write coming back.
    pub recompute: Option<Arc<str>>,
    /// The PodTraces (fingerprints of their references) whose status must be rolled up again:
    /// the agent's report changed.
    pub roll_up: Vec<u64>,
}

/// What a PodTrace event changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodTraceChange {
    /// Nothing the writer cares about (a status write, a finalizer).
    Nothing,
    /// Its profile: its PodTraceProfile and the format-1 NodeTraces of its pods.
    Settings,
    /// What format-2 NodeTraces take from it too (selection, container filter, in effect,
    /// pod-label allow-lists), or it is new or gone: every NodeTrace of its pods.
    Selection,
}

/// The operator's state.
#[derive(Debug, Default)]
pub struct Index {
    /// Projected pods and existing nodes.
    pub pods: PodIndex,
    /// Namespaces and their labels (only while cross-namespace tracing is possible).
    pub namespaces: NamespaceIndex,
    nodetraces: HashMap<Arc<str>, NodeTraceEntry>,
    /// NodeTraces listed again during a relist of their watch.
    nodetraces_relisted: Option<HashSet<Arc<str>>>,
    /// Stored and written spec hashes of the NodeTraces.
    pub nodetrace_hashes: Ledger<Arc<str>>,
    /// Stored and written spec hashes of the PodTraceProfiles, by PodTrace.
    pub profile_hashes: Ledger<PodTraceRef>,
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
        self.nodetrace_hashes.listed(name.clone(), spec_hash_of(nt));
        self.nodetraces.insert(name, NodeTraceEntry::of(nt));
    }

    /// The NodeTrace watch starts a (re)list.
    pub fn nodetraces_relist_start(&mut self) {
        self.nodetraces_relisted = Some(HashSet::new());
        self.nodetrace_hashes.relist_start();
    }

    /// The (re)list is done: NodeTraces it did not list were deleted meanwhile.
    pub fn nodetraces_relist_done(&mut self) {
        if let Some(seen) = self.nodetraces_relisted.take() {
            self.nodetraces.retain(|name, _| seen.contains(name));
        }
        self.nodetrace_hashes.relist_done();
    }

    /// A NodeTrace was created or changed.
    pub fn nodetrace_applied(&mut self, nt: &NodeTrace) -> NodeTraceChange {
        let name: Arc<str> = nt.name_any().into();
        let entry = NodeTraceEntry::of(nt);
        // Our own write coming back needs no recomputation, unless the agent's format moved.
        let foreign = self.nodetrace_hashes.applied(name.clone(), spec_hash_of(nt));
        let old = self.nodetraces.insert(name.clone(), entry);
        let entry = &self.nodetraces[&name];
        let format_moved = old.as_ref().is_some_and(|o| o.format != entry.format);
        let roll_up = match old {
            Some(old) if old.report == entry.report => Vec::new(),
            _ => entry.requested_by.clone(),
        };
        NodeTraceChange { recompute: (foreign || format_moved).then_some(name), roll_up }
    }

    /// A NodeTrace was deleted (by someone else, or by this process: then it is recomputed and
    /// stays deleted if it should).
    pub fn nodetrace_deleted(&mut self, name: &str) -> NodeTraceChange {
        let old = self.nodetraces.remove(name);
        self.nodetrace_hashes.deleted(name);
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

    /// The spec format the agent of `node` reads: format 1 until it reports another (a node
    /// without a NodeTrace has no agent report yet).
    pub fn format_of(&self, node: &str) -> SpecFormat {
        self.nodetraces.get(node).map_or(SpecFormat::PodSettings, |e| e.format)
    }

    /// The nodes whose NodeTrace holds settings (format 1): a settings change rewrites them.
    pub fn format_1_nodes(&self) -> impl Iterator<Item = &Arc<str>> {
        self.nodetraces.iter().filter(|(_, e)| e.format == SpecFormat::PodSettings).map(|(n, _)| n)
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
        self.nodetrace_hashes.write_for(node, wanted)
    }

    /// Records a NodeTrace write of this process: the spec hash applied, or `None` for a
    /// deletion.
    pub fn wrote(&mut self, node: Arc<str>, hash: Option<String>) {
        self.nodetrace_hashes.wrote(node, hash);
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

    /// A PodTrace was seen with `generation` and [`nodetrace_key`](crate::desired::TraceSet::nodetrace_key)
    /// `key`: what it changes for the writer.
    pub fn podtrace_applied(
        &mut self,
        uid: &str,
        generation: Option<i64>,
        key: u64,
    ) -> PodTraceChange {
        let entry = self.podtraces.entry(uid.to_owned()).or_default();
        // Not seen before (the entry may hold only the status fingerprint so far), or moved.
        let change = if entry.nodetrace_key != Some(key) {
            PodTraceChange::Selection
        } else if entry.generation != generation {
            PodTraceChange::Settings
        } else {
            PodTraceChange::Nothing
        };
        entry.generation = generation;
        entry.nodetrace_key = Some(key);
        change
    }

    /// A PodTrace of the watch's (re)list: recorded.
    pub fn podtrace_listed(&mut self, uid: &str, generation: Option<i64>, key: u64) {
        let entry = self.podtraces.entry(uid.to_owned()).or_default();
        entry.generation = generation;
        entry.nodetrace_key = Some(key);
    }

    /// Records a PodTrace's [`nodetrace_key`](crate::desired::TraceSet::nodetrace_key) after a
    /// MonitoringProfile changed; whether it moved.
    pub fn podtrace_key(&mut self, uid: &str, key: u64) -> bool {
        let entry = self.podtraces.entry(uid.to_owned()).or_default();
        let moved = entry.nodetrace_key != Some(key);
        entry.nodetrace_key = Some(key);
        moved
    }

    /// A PodTrace was deleted.
    pub fn podtrace_deleted(&mut self, uid: &str) {
        self.podtraces.remove(uid);
    }

    /// Keeps only the PodTraces in `uids` (after a relist of their watch).
    pub fn podtraces_retain(&mut self, uids: &HashSet<String>) {
        self.podtraces.retain(|uid, _| uids.contains(uid));
    }

    /// How long to wait before writing `status` of `pt` at `now`: `None` (write now) when it
    /// tells something new (a first status, another generation, profile or condition) or the
    /// last write of this process is `gap` ago; otherwise the rest of the gap. Counts and
    /// per-node roll-ups move with every pod event, and a PodTrace spanning 100 nodes costs
    /// the API server tens of milliseconds per status write: under pod churn they are written
    /// at most once per gap, the latest at its end.
    pub fn status_wait(
        &self,
        pt: &PodTrace,
        status: &PodTraceStatus,
        now: Instant,
        gap: Duration,
    ) -> Option<Duration> {
        let Some(seen) = &pt.status else { return None };
        let conditions = |s: &PodTraceStatus| -> Vec<(String, String, String)> {
            s.conditions
                .iter()
                .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
                .collect()
        };
        let news = seen.observed_generation != status.observed_generation
            || seen.effective_profile != status.effective_profile
            || seen.profile_hash != status.profile_hash
            || seen.expires_at != status.expires_at
            || conditions(seen) != conditions(status);
        let last = pt.uid().and_then(|uid| self.podtraces.get(&uid)?.status_written);
        match last {
            Some(at) if !news => {
                gap.checked_sub(now.saturating_duration_since(at)).filter(|d| !d.is_zero())
            }
            _ => None,
        }
    }

    /// Records that this process wrote the status of the PodTrace `uid` at `at`.
    pub fn status_written(&mut self, uid: &str, at: Instant) {
        self.podtraces.entry(uid.to_owned()).or_default().status_written = Some(at);
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
            settings_key: None,
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
        index.nodetrace_listed(&nodetrace("n1", Some("h1"), &[], 0));
        assert_eq!(index.write_for("n1", Some("h1")), Write::Nothing, "stored hash matches");
        assert_eq!(index.write_for("n1", None), Write::Delete);
        index.wrote("n1".into(), Some("h2".into()));
        assert_eq!(index.write_for("n1", Some("h2")), Write::Nothing, "ahead of the watch");
    }

    #[test]
    fn a_new_generation_is_a_settings_change_unless_the_nodetrace_key_moves() {
        let mut index = Index::default();
        index.podtrace_listed("u1", Some(1), 7);
        assert_eq!(
            index.podtrace_applied("u1", Some(1), 7),
            PodTraceChange::Nothing,
            "a status write"
        );
        assert_eq!(index.podtrace_applied("u1", Some(2), 7), PodTraceChange::Settings);
        assert_eq!(index.podtrace_applied("u1", Some(3), 8), PodTraceChange::Selection);
        assert_eq!(
            index.podtrace_applied("u2", Some(1), 7),
            PodTraceChange::Selection,
            "not seen before"
        );
        assert!(!index.podtrace_key("u1", 8), "a profile edit that moves nothing");
        assert!(index.podtrace_key("u1", 9));
        assert_eq!(index.podtrace_applied("u1", Some(3), 9), PodTraceChange::Nothing);
        index.podtrace_deleted("u2");
        index.podtraces_retain(&HashSet::new());
        assert!(index.podtraces.is_empty());
    }

    #[test]
    fn a_node_is_format_1_until_its_agent_reports_format_2_and_the_report_recomputes_it() {
        let mut index = Index::default();
        assert_eq!(index.format_of("n1"), SpecFormat::PodSettings, "no NodeTrace yet");
        index.wrote("n1".into(), Some("h1".into()));
        let ours = index.nodetrace_applied(&nodetrace("n1", Some("h1"), &["a"], 0));
        assert_eq!(ours.recompute, None);
        assert_eq!(index.format_1_nodes().count(), 1);
        let mut reported = nodetrace("n1", Some("h1"), &["a"], 0);
        reported.status.as_mut().unwrap().spec_format = Some(2);
        let change = index.nodetrace_applied(&reported);
        assert_eq!(change.recompute, Some("n1".into()), "the agent reads format 2 now");
        assert_eq!(index.format_of("n1"), SpecFormat::Shared);
        assert_eq!(index.format_1_nodes().count(), 0);
        // A downgraded agent's status no longer carries the field: back to format 1.
        let change = index.nodetrace_applied(&nodetrace("n1", Some("h1"), &["a"], 0));
        assert_eq!(change.recompute, Some("n1".into()));
        assert_eq!(index.format_of("n1"), SpecFormat::PodSettings);
    }

    #[test]
    fn counts_wait_for_the_gap_and_news_do_not() {
        let mut index = Index::default();
        let mut pt = PodTrace::new(
            "t",
            podtrace_api::PodTraceSpec {
                selector: Default::default(),
                containers: vec![],
                profile_ref: None,
                profile: None,
                paused: false,
                namespace_selector: None,
                duration: None,
            },
        );
        pt.metadata.uid = Some("u1".into());
        let (t0, gap) = (Instant::now(), Duration::from_secs(2));
        let status = PodTraceStatus { matched_pods: 1, ..Default::default() };
        assert_eq!(index.status_wait(&pt, &status, t0, gap), None, "the first status");
        pt.status = Some(status.clone());
        assert_eq!(index.status_wait(&pt, &status, t0, gap), None, "never written by us");
        index.status_written("u1", t0);
        let more = PodTraceStatus { matched_pods: 2, ..status.clone() };
        let later = t0 + Duration::from_millis(500);
        assert_eq!(index.status_wait(&pt, &more, later, gap), Some(Duration::from_millis(1500)));
        assert_eq!(index.status_wait(&pt, &more, t0 + gap, gap), None, "the gap is over");
        let news = PodTraceStatus { profile_hash: Some("h2".into()), ..more };
        assert_eq!(index.status_wait(&pt, &news, later, gap), None, "a new profile is news");
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
            namespace_selector: None,
            duration: None,
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
