//! The projected pod index: what the operator keeps of every Pod, and the Nodes that exist.
//!
//! ```text
//!  Pod watch ──project()──► ProjectedPod ──► PodIndex ──► pods by uid
//!  (WatchedPod, dropped)    uid, ns, name,              ├─► uids by node
//!                           labels, node, owner kind,   └─► uids by namespace, then label set
//!                           QoS, containers + IDs
//!  Node watch (metadata) ──────────────────► PodIndex.nodes
//! ```
//!
//! Pods are decoded as [`WatchedPod`]s (only the fields projected) one at a time and dropped; the
//! index keeps a few hundred bytes per pod. Namespaces, node names, owner kinds, QoS classes and
//! label keys/values repeat across thousands of pods, so they are interned (`Arc<str>`), and the
//! strings no pod uses any more are dropped from the table every 1024 deletions. Nothing here does
//! I/O: the watchers in `watch.rs` feed it and every change reports the nodes whose NodeTrace may
//! have changed.

use crate::watched_pod::WatchedPod;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// A label set: sorted (key, value) pairs of interned strings.
type LabelPairs = Arc<[(Arc<str>, Arc<str>)]>;

/// Interns repeated strings so that 10,000 pods share one copy of each namespace, node name and
/// label key or value, and whole label sets: the replicas of a ReplicaSet carry the same labels,
/// so they share one set (16 bytes per pod instead of a list of their own).
#[derive(Default, Debug)]
pub struct Interner {
    strings: HashSet<Arc<str>>,
    label_sets: HashSet<LabelPairs>,
}

impl Interner {
    /// The shared copy of `s`.
    pub fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(found) = self.strings.get(s) {
            return found.clone();
        }
        let shared: Arc<str> = Arc::from(s);
        self.strings.insert(shared.clone());
        shared
    }

    /// The shared copy of a sorted label set.
    fn intern_labels(&mut self, pairs: Vec<(Arc<str>, Arc<str>)>) -> LabelPairs {
        if let Some(found) = self.label_sets.get(pairs.as_slice()) {
            return found.clone();
        }
        let shared: LabelPairs = pairs.into();
        self.label_sets.insert(shared.clone());
        shared
    }

    /// Forgets the strings and label sets no pod or node uses any more (labels of rolled-out
    /// ReplicaSets, deleted namespaces), so the table follows the cluster instead of its history.
    /// Label sets go first: they hold references to their strings.
    pub fn prune(&mut self) {
        self.label_sets.retain(|s| Arc::strong_count(s) > 1);
        self.strings.retain(|s| Arc::strong_count(s) > 1);
    }

    /// Number of strings kept.
    pub fn len(&self) -> usize {
        self.strings.len()
    }

    /// Whether no string is kept.
    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }
}

/// Deletions between two [`Interner::prune`]s.
const PRUNE_EVERY: usize = 1024;

/// A pod's labels: a shared, sorted set of interned pairs (cheaper than a map for the handful of
/// labels a pod has).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Labels(LabelPairs);

impl Labels {
    /// Labels from owned pairs, without interning (for tests and one-off values).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut v: Vec<_> = pairs.into_iter().map(|(k, v)| (Arc::from(k), Arc::from(v))).collect();
        v.sort();
        Self(v.into())
    }

    /// The value of label `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok().map(|i| &*self.0[i].1)
    }
}

/// A container of a pod and its runtime ID (absent until the kubelet reports it started).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRef {
    /// Container name.
    pub name: Arc<str>,
    /// `status.containerStatuses[].containerID`, e.g. `containerd://4f2a…`.
    pub runtime_id: Option<Box<str>>,
}

/// What the operator needs of a Pod, and nothing more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectedPod {
    /// metadata.uid.
    pub uid: Arc<str>,
    /// metadata.namespace.
    pub namespace: Arc<str>,
    /// metadata.name.
    pub name: Box<str>,
    /// metadata.labels.
    pub labels: Labels,
    /// spec.nodeName: the pod is traced only once it is bound.
    pub node: Option<Arc<str>>,
    /// Kind of the controlling owner (Deployments own ReplicaSets own pods, so `ReplicaSet`).
    pub owner_kind: Option<Arc<str>>,
    /// status.qosClass: the agent needs it to find the pod's cgroup.
    pub qos_class: Option<Arc<str>>,
    /// spec.containers with the runtime IDs of status.containerStatuses.
    pub containers: Box<[ContainerRef]>,
    /// status.phase is Succeeded or Failed: the pod will never run again.
    pub finished: bool,
}

impl ProjectedPod {
    /// Projects a Pod, interning the strings that repeat across pods (not the uid, which is
    /// unique: interning it would only add a table entry per pod that outlives the pod).
    pub fn project(pod: &WatchedPod, interner: &mut Interner) -> Option<Self> {
        let meta = &pod.metadata;
        let uid: Arc<str> = Arc::from(meta.uid.as_deref()?);
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let statuses = status.and_then(|s| s.container_statuses.as_deref()).unwrap_or_default();
        let containers = spec
            .and_then(|s| s.containers.as_deref())
            .unwrap_or_default()
            .iter()
            .map(|c| ContainerRef {
                name: interner.intern(&c.name),
                runtime_id: statuses
                    .iter()
                    .find(|s| s.name == c.name)
                    .and_then(|s| s.container_id.as_deref())
                    .filter(|id| !id.is_empty())
                    .map(Box::from),
            })
            .collect();
        let mut labels: Vec<_> = meta
            .labels
            .iter()
            .flatten()
            .map(|(k, v)| (interner.intern(k), interner.intern(v)))
            .collect();
        labels.sort();
        let labels = interner.intern_labels(labels);
        let owner_kind = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .or_else(|| meta.owner_references.as_ref().and_then(|o| o.first()))
            .map(|o| interner.intern(&o.kind));
        Some(Self {
            uid,
            namespace: interner.intern(meta.namespace.as_deref().unwrap_or_default()),
            name: meta.name.as_deref().unwrap_or_default().into(),
            labels: Labels(labels),
            node: spec.and_then(|s| s.node_name.as_deref()).map(|n| interner.intern(n)),
            owner_kind,
            qos_class: status.and_then(|s| s.qos_class.as_deref()).map(|q| interner.intern(q)),
            containers,
            finished: matches!(
                status.and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            ),
        })
    }

    /// Whether the pod can be traced at all: bound to a node and not finished.
    pub fn is_running(&self) -> bool {
        self.node.is_some() && !self.finished
    }
}

/// Every projected pod, by uid, node and namespace, and the set of existing nodes.
#[derive(Default, Debug)]
pub struct PodIndex {
    pods: HashMap<Arc<str>, ProjectedPod>,
    by_node: HashMap<Arc<str>, BTreeSet<Arc<str>>>,
    /// Pods by namespace, then by label set, so that a selector is evaluated once per label
    /// set (the replicas of a workload share one) rather than once per pod: a PodTrace's status
    /// is computed on every change of its pods, and with 1,000 PodTraces over 100,000 pods in
    /// one namespace the per-pod scan was 70 % of the operator's CPU under pod churn. A
    /// set's uids are a vector, not a tree: pods with labels of their own (a StatefulSet's
    /// carry their name) make sets of one, which a tree would give a node of 11 slots.
    by_namespace: HashMap<Arc<str>, HashMap<Labels, Vec<Arc<str>>>>,
    nodes: BTreeSet<Arc<str>>,
    relisting: Option<HashSet<Arc<str>>>,
    deletions: usize,
    /// Interns the strings of projected pods.
    pub interner: Interner,
}

/// The nodes whose NodeTrace may differ after a change, and the namespaces whose PodTraces may
/// need a status update.
#[derive(Default, Debug, PartialEq, Eq)]
pub struct Touched {
    /// Nodes to recompute.
    pub nodes: BTreeSet<Arc<str>>,
    /// Pods whose projection changed, before and after (for PodTrace status triggers).
    pub pods: Vec<ProjectedPod>,
}

impl Touched {
    fn pod(&mut self, pod: &ProjectedPod) {
        self.nodes.extend(pod.node.clone());
        self.pods.push(pod.clone());
    }
}

impl PodIndex {
    /// Adds or replaces a pod. Nothing is touched when the projection did not change (most pod
    /// updates are status conditions the operator does not keep).
    pub fn apply(&mut self, pod: ProjectedPod) -> Touched {
        if let Some(seen) = self.relisting.as_mut() {
            seen.insert(pod.uid.clone());
        }
        let mut touched = Touched::default();
        if self.pods.get(&pod.uid) == Some(&pod) {
            return touched;
        }
        if let Some(old) = self.remove(&pod.uid) {
            touched.pod(&old);
        }
        touched.pod(&pod);
        if let Some(node) = &pod.node {
            self.by_node.entry(node.clone()).or_default().insert(pod.uid.clone());
        }
        self.by_namespace
            .entry(pod.namespace.clone())
            .or_default()
            .entry(pod.labels.clone())
            .or_insert_with(|| Vec::with_capacity(1))
            .push(pod.uid.clone());
        self.pods.insert(pod.uid.clone(), pod);
        touched
    }

    /// Removes the pod with `uid`.
    pub fn delete(&mut self, uid: &str) -> Touched {
        let mut touched = Touched::default();
        if let Some(old) = self.remove(uid) {
            touched.pod(&old);
            self.deletions += 1;
            if self.deletions.is_multiple_of(PRUNE_EVERY) {
                drop(old);
                self.interner.prune();
            }
        }
        touched
    }

    fn remove(&mut self, uid: &str) -> Option<ProjectedPod> {
        let old = self.pods.remove(uid)?;
        if let Some(node) = &old.node
            && let Some(set) = self.by_node.get_mut(node)
        {
            set.remove(uid);
            if set.is_empty() {
                self.by_node.remove(node);
            }
        }
        if let Some(groups) = self.by_namespace.get_mut(&old.namespace) {
            if let Some(uids) = groups.get_mut(&old.labels) {
                if let Some(i) = uids.iter().position(|u| **u == *uid) {
                    uids.swap_remove(i);
                }
                if uids.is_empty() {
                    groups.remove(&old.labels);
                }
            }
            if groups.is_empty() {
                self.by_namespace.remove(&old.namespace);
            }
        }
        Some(old)
    }

    /// A watch (re)list started: pods not listed again before [`relist_done`](Self::relist_done)
    /// were deleted while the watch was down.
    pub fn relist_start(&mut self) {
        self.relisting = Some(HashSet::new());
    }

    /// The (re)list finished: drops the pods it did not list.
    pub fn relist_done(&mut self) -> Touched {
        let Some(seen) = self.relisting.take() else { return Touched::default() };
        let gone: Vec<Arc<str>> =
            self.pods.keys().filter(|u| !seen.contains(*u)).cloned().collect();
        let mut touched = Touched::default();
        for uid in gone {
            let t = self.delete(&uid);
            touched.nodes.extend(t.nodes);
            touched.pods.extend(t.pods);
        }
        touched
    }

    /// Replaces the set of existing nodes (a relist of the Node watch).
    pub fn set_nodes(&mut self, nodes: impl IntoIterator<Item = String>) -> BTreeSet<Arc<str>> {
        let new: BTreeSet<Arc<str>> = nodes.into_iter().map(|n| self.interner.intern(&n)).collect();
        let changed = new.symmetric_difference(&self.nodes).cloned().collect();
        self.nodes = new;
        changed
    }

    /// Records that node `name` exists (`true`) or was deleted (`false`); whether that changed.
    pub fn set_node(&mut self, name: &str, exists: bool) -> bool {
        let name = self.interner.intern(name);
        if exists { self.nodes.insert(name) } else { self.nodes.remove(&name) }
    }

    /// Whether a Node object of that name exists.
    pub fn node_exists(&self, name: &str) -> bool {
        self.nodes.contains(name)
    }

    /// Every existing node.
    pub fn nodes(&self) -> impl Iterator<Item = &Arc<str>> {
        self.nodes.iter()
    }

    /// The pod with `uid`.
    pub fn get(&self, uid: &str) -> Option<&ProjectedPod> {
        self.pods.get(uid)
    }

    /// The pods bound to `node`, in uid order.
    pub fn on_node<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a ProjectedPod> + 'a {
        self.by_node.get(node).into_iter().flatten().filter_map(|uid| self.pods.get(uid))
    }

    /// The pods of `namespace`, by label set.
    pub fn in_namespace<'a>(
        &'a self,
        namespace: &str,
    ) -> impl Iterator<Item = &'a ProjectedPod> + 'a {
        self.label_sets(namespace).flat_map(|(_, pods)| pods)
    }

    /// The label sets of `namespace`'s pods, each with its pods.
    pub fn label_sets<'a>(
        &'a self,
        namespace: &str,
    ) -> impl Iterator<Item = (&'a Labels, impl Iterator<Item = &'a ProjectedPod> + 'a)> + 'a {
        self.by_namespace
            .get(namespace)
            .into_iter()
            .flatten()
            .map(|(labels, uids)| (labels, uids.iter().filter_map(|uid| self.pods.get(uid))))
    }

    /// The nodes that host a pod of `namespace`.
    pub fn nodes_of_namespace(&self, namespace: &str) -> BTreeSet<Arc<str>> {
        self.in_namespace(namespace).filter_map(|p| p.node.clone()).collect()
    }

    /// Number of pods indexed.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Whether no pod is indexed.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A pod for tests: `containers` as (name, runtime id).
    pub(crate) fn pod(
        ns: &str,
        name: &str,
        node: Option<&str>,
        labels: &[(&str, &str)],
        containers: &[(&str, Option<&str>)],
    ) -> ProjectedPod {
        ProjectedPod {
            uid: format!("uid-{ns}-{name}").into(),
            namespace: ns.into(),
            name: name.into(),
            labels: Labels::from_pairs(labels.iter().map(|(k, v)| (k.to_string(), v.to_string()))),
            node: node.map(Arc::from),
            owner_kind: None,
            qos_class: Some("BestEffort".into()),
            containers: containers
                .iter()
                .map(|(n, id)| ContainerRef { name: (*n).into(), runtime_id: id.map(Box::from) })
                .collect(),
            finished: false,
        }
    }

    #[test]
    fn projection_keeps_ids_owner_qos_and_phase_and_nothing_else() {
        let pod: WatchedPod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u1",
                "labels": {"app": "web"}, "annotations": {"big": "x".repeat(1000)},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                    "uid": "rs", "controller": true}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "i"}, {"name": "side", "image": "i"}]},
            "status": {"phase": "Running", "qosClass": "Burstable",
                "containerStatuses": [{"name": "app", "containerID": "containerd://abc", "image": "i",
                    "imageID": "", "ready": true, "restartCount": 0}]}
        }))
        .unwrap();
        let p = ProjectedPod::project(&pod, &mut Interner::default()).unwrap();
        assert_eq!(
            p,
            ProjectedPod {
                uid: "u1".into(),
                namespace: "shop".into(),
                name: "web-1".into(),
                labels: Labels::from_pairs([("app".into(), "web".into())]),
                node: Some("n1".into()),
                owner_kind: Some("ReplicaSet".into()),
                qos_class: Some("Burstable".into()),
                containers: vec![
                    ContainerRef {
                        name: "app".into(),
                        runtime_id: Some("containerd://abc".into())
                    },
                    ContainerRef { name: "side".into(), runtime_id: None },
                ]
                .into(),
                finished: false,
            }
        );
    }

    #[test]
    fn moving_a_pod_touches_both_nodes_and_an_unchanged_pod_touches_none() {
        let mut index = PodIndex::default();
        let a = pod("ns", "a", Some("n1"), &[], &[]);
        assert_eq!(index.apply(a.clone()).nodes, BTreeSet::from(["n1".into()]));
        assert_eq!(index.apply(a.clone()).nodes, BTreeSet::new());
        let moved = ProjectedPod { node: Some("n2".into()), ..a };
        assert_eq!(index.apply(moved).nodes, BTreeSet::from(["n1".into(), "n2".into()]));
        assert_eq!(index.on_node("n1").count(), 0);
        assert_eq!(index.on_node("n2").count(), 1);
        assert_eq!(index.delete("uid-ns-a").nodes, BTreeSet::from(["n2".into()]));
        assert!(index.is_empty());
    }

    #[test]
    fn a_relist_drops_the_pods_it_did_not_see() {
        let mut index = PodIndex::default();
        index.apply(pod("ns", "a", Some("n1"), &[], &[]));
        index.apply(pod("ns", "b", Some("n2"), &[], &[]));
        index.relist_start();
        index.apply(pod("ns", "a", Some("n1"), &[], &[]));
        assert_eq!(index.relist_done().nodes, BTreeSet::from(["n2".into()]));
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn the_interner_forgets_strings_no_pod_uses() {
        let mut interner = Interner::default();
        let kept = interner.intern("kept");
        interner.intern("gone");
        assert_eq!(interner.len(), 2);
        interner.prune();
        assert_eq!(interner.len(), 1);
        assert!(Arc::ptr_eq(&kept, &interner.intern("kept")));
    }

    #[test]
    fn replicas_share_one_label_set_which_is_forgotten_with_its_last_pod() {
        let replica = |name: &str, hash: &str| -> WatchedPod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "ns", "uid": name,
                    "labels": {"app": "web", "pod-template-hash": hash}}
            }))
            .unwrap()
        };
        let mut interner = Interner::default();
        let a = ProjectedPod::project(&replica("a", "1"), &mut interner).unwrap();
        let b = ProjectedPod::project(&replica("b", "1"), &mut interner).unwrap();
        let c = ProjectedPod::project(&replica("c", "2"), &mut interner).unwrap();
        assert!(Arc::ptr_eq(&a.labels.0, &b.labels.0), "same labels, one set");
        assert!(!Arc::ptr_eq(&a.labels.0, &c.labels.0));
        assert_eq!(c.labels.get("pod-template-hash"), Some("2"));
        assert_eq!(interner.label_sets.len(), 2);
        drop(c);
        interner.prune();
        assert_eq!(interner.label_sets.len(), 1);
        // ns, app, web, pod-template-hash and 1: the value 2 was forgotten with its set.
        assert_eq!(interner.len(), 5);
    }

    #[test]
    fn labels_are_found_by_key() {
        let l = Labels::from_pairs([("b".into(), "2".into()), ("a".into(), "1".into())]);
        assert_eq!((l.get("a"), l.get("b"), l.get("c")), (Some("1"), Some("2"), None));
    }
}
