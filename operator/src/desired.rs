//! What every PodTraceProfile and NodeTrace spec should be: selection of pods by PodTraces,
//! profile resolution and the per-pod and per-node merge of the api crate. Pure functions over
//! the pod index.
//!
//! ```text
//!  PodTrace ──effective::choices──► PodTraceProfileSpec   (one per PodTrace: the settings)
//!
//!  PodTraces of ns ──selects(pod)──► (PodTrace, EffectiveProfile) per pod  (effective::resolve)
//!                                      │ merge::merge_profiles
//!                                      ▼
//!                        (TracedPod, settings) ──merge::node_trace_spec──► NodeTraceSpec
//!                          format 2: pods name their PodTraces (by=), no settings
//!                          format 1: pods refer to podSettings[] by settingsKey
//! ```
//!
//! A PodTrace is in effect unless paused, being deleted, past its `spec.duration`
//! (`expiry.rs`) or refused its `spec.namespaceSelector` (`reach.rs`): [`World`] holds what
//! decides the last two, the time and the namespaces.
//!
//! [`TraceSet::nodetrace_key`] fingerprints what a format-2 NodeTrace takes from a PodTrace
//! (selection, container filter, whether it is in effect, the pod-label allow-lists): when only
//! the rest of a PodTrace or a MonitoringProfile changes, no format-2 NodeTrace is recomputed.

use podtrace_api::effective::{self, EffectiveProfile, ProfileError};
use podtrace_api::merge;
use podtrace_api::nodetrace::{NodeTraceSpec, PodTraceRef, SpecFormat, TracedContainer, TracedPod};
use podtrace_api::{MonitoringProfileSpec, PodTrace, PodTraceProfileSpec};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::index::{Labels, NamespaceIndex, PodIndex, ProjectedPod};
use crate::reach::ClusterTracing;
use crate::{expiry, fingerprint, selector};
use k8s_openapi::jiff::Timestamp;

/// What decides, besides the PodTraces and profiles, which pods are traced: the time (for
/// `spec.duration`), the namespaces that may trace across namespaces and the namespaces'
/// labels (for `spec.namespaceSelector`).
#[derive(Clone, Copy, Debug)]
pub struct World<'a> {
    /// Now.
    pub now: Timestamp,
    /// The namespaces whose PodTraces may use a namespaceSelector.
    pub cluster_tracing: &'a ClusterTracing,
    /// Every namespace's labels.
    pub namespaces: &'a NamespaceIndex,
}

static NO_CLUSTER_TRACING: ClusterTracing = ClusterTracing::none();
static NO_NAMESPACES: std::sync::LazyLock<NamespaceIndex> =
    std::sync::LazyLock::new(NamespaceIndex::default);

impl World<'static> {
    /// Now, where no namespace may trace across namespaces.
    pub fn local() -> Self {
        Self {
            now: Timestamp::now(),
            cluster_tracing: &NO_CLUSTER_TRACING,
            namespaces: &NO_NAMESPACES,
        }
    }
}

impl World<'_> {
    /// Whether `pt` is in effect: not paused, not being deleted, its duration not over, and its
    /// namespaceSelector (if any) allowed. Out of effect, it traces nothing.
    pub fn in_effect(&self, pt: &PodTrace) -> bool {
        !pt.spec.paused
            && pt.metadata.deletion_timestamp.is_none()
            && !expiry::expired(pt, self.now)
            && self.cluster_tracing.refusal(pt).is_none()
    }

    /// Whether `pt`'s selector (and container filter) selects `pod`, in effect or not. The pod
    /// must be in a namespace the PodTrace reaches (`reach.rs`), bound to a node and not
    /// finished.
    pub fn selects(&self, pt: &PodTrace, pod: &ProjectedPod) -> bool {
        self.selects_labels(pt, &pod.namespace, &pod.labels) && takes(pt, pod)
    }

    /// The part of [`selects`](Self::selects) that every pod of a label set in a namespace
    /// shares: the namespace is reached and the selector matches.
    fn selects_labels(&self, pt: &PodTrace, namespace: &str, labels: &Labels) -> bool {
        self.cluster_tracing.reaches(pt, namespace, self.namespaces)
            && selector::matches(&pt.spec.selector, labels)
    }

    /// The namespaces whose pods `pt` may select: its own, or those its namespaceSelector
    /// reaches.
    pub fn namespaces_of<'n>(&'n self, pt: &'n PodTrace) -> Vec<&'n str> {
        match &pt.spec.namespace_selector {
            None => vec![pt.metadata.namespace.as_deref().unwrap_or_default()],
            Some(_) => self
                .namespaces
                .names()
                .filter(|n| self.cluster_tracing.reaches(pt, n, self.namespaces))
                .map(|n| &**n)
                .collect(),
        }
    }

    /// The pods `pt` selects (in effect or not): the selector is evaluated once per label set.
    pub fn matched<'i>(&self, pt: &PodTrace, index: &'i PodIndex) -> Vec<&'i ProjectedPod> {
        self.namespaces_of(pt)
            .into_iter()
            .flat_map(|ns| index.label_sets(ns).map(move |(labels, pods)| (ns, labels, pods)))
            .filter(|(ns, labels, _)| self.selects_labels(pt, ns, labels))
            .flat_map(|(_, _, pods)| pods.filter(|p| takes(pt, p)))
            .collect()
    }
}

/// The part of [`World::selects`] that is the pod's own: it runs (bound to a node, not
/// finished) and has a container the PodTrace's container filter names (if it has one).
fn takes(pt: &PodTrace, pod: &ProjectedPod) -> bool {
    pod.is_running()
        && (pt.spec.containers.is_empty()
            || pod.containers.iter().any(|c| pt.spec.containers.iter().any(|n| **n == *c.name)))
}

/// The reference to a PodTrace used in NodeTrace specs.
pub fn reference(pt: &PodTrace) -> PodTraceRef {
    PodTraceRef {
        namespace: pt.metadata.namespace.clone().unwrap_or_default(),
        name: pt.metadata.name.clone().unwrap_or_default(),
    }
}

/// A PodTrace (by address, stable while the batch holds it) and a pod owner kind.
type ResolveKey = (usize, Option<Arc<str>>);
/// The outcome of resolving a PodTrace's profile.
type Resolved = Result<Arc<EffectiveProfile>, ProfileError>;
/// A namespace and a label set of its pods.
type LabelSetKey = (Arc<str>, Labels);

/// The PodTraces in effect, by namespace (those with a namespaceSelector apart), with a
/// per-batch cache of resolved profiles (resolution hashes the settings, and the same
/// (PodTrace, owner kind) pair repeats for every replica).
pub struct TraceSet<'a, L> {
    by_namespace: HashMap<&'a str, Vec<&'a PodTrace>>,
    across_namespaces: Vec<&'a PodTrace>,
    world: World<'a>,
    lookup: L,
    resolved: RefCell<HashMap<ResolveKey, Resolved>>,
    selecting: RefCell<HashMap<LabelSetKey, Arc<[&'a PodTrace]>>>,
}

impl<'a, L: Fn(&str) -> Option<MonitoringProfileSpec>> TraceSet<'a, L> {
    /// The PodTraces of `podtraces` in effect now, where no namespace may trace across
    /// namespaces; `lookup` finds a MonitoringProfile by name.
    pub fn new(podtraces: impl IntoIterator<Item = &'a PodTrace>, lookup: L) -> Self {
        Self::within(World::local(), podtraces, lookup)
    }

    /// The PodTraces of `podtraces` in effect in `world`.
    pub fn within(
        world: World<'a>,
        podtraces: impl IntoIterator<Item = &'a PodTrace>,
        lookup: L,
    ) -> Self {
        let mut by_namespace: HashMap<&str, Vec<&PodTrace>> = HashMap::new();
        let mut across_namespaces = Vec::new();
        for pt in podtraces.into_iter().filter(|pt| world.in_effect(pt)) {
            if pt.spec.namespace_selector.is_some() {
                across_namespaces.push(pt);
                continue;
            }
            by_namespace
                .entry(pt.metadata.namespace.as_deref().unwrap_or_default())
                .or_default()
                .push(pt);
        }
        Self {
            by_namespace,
            across_namespaces,
            world,
            lookup,
            resolved: RefCell::default(),
            selecting: RefCell::default(),
        }
    }

    /// The world the set was made in.
    pub fn world(&self) -> &World<'a> {
        &self.world
    }

    /// The profile `pt` applies to a pod owned by `owner_kind`.
    pub fn resolve(
        &self,
        pt: &PodTrace,
        owner_kind: Option<&Arc<str>>,
    ) -> Result<Arc<EffectiveProfile>, ProfileError> {
        let key = (std::ptr::from_ref(pt) as usize, owner_kind.cloned());
        if let Some(hit) = self.resolved.borrow().get(&key) {
            return hit.clone();
        }
        let result =
            effective::resolve(&pt.spec, owner_kind.map(|k| &**k), &self.lookup).map(Arc::new);
        self.resolved.borrow_mut().insert(key, result.clone());
        result
    }

    /// The PodTraces in effect that reach `pod`'s namespace and whose selector matches its
    /// labels, found once per namespace and label set in a batch: a node's pods are mostly
    /// replicas sharing a few label sets, and each would otherwise be matched against every
    /// PodTrace of its namespace.
    fn selecting_labels(&self, pod: &ProjectedPod) -> Arc<[&'a PodTrace]> {
        let key = (pod.namespace.clone(), pod.labels.clone());
        if let Some(hit) = self.selecting.borrow().get(&key) {
            return hit.clone();
        }
        let local = self.by_namespace.get(&*pod.namespace).into_iter().flatten();
        let found: Arc<[&'a PodTrace]> = local
            .chain(&self.across_namespaces)
            .copied()
            .filter(|pt| self.world.selects_labels(pt, &pod.namespace, &pod.labels))
            .collect();
        self.selecting.borrow_mut().insert(key, found.clone());
        found
    }

    /// The PodTraceProfile `pt` should have: `None` while it is not in effect (paused, being
    /// deleted) or its profileRef names no MonitoringProfile, since no NodeTrace then names it.
    pub fn podtrace_profile(&self, pt: &PodTrace) -> Option<PodTraceProfileSpec> {
        if !self.world.in_effect(pt) {
            return None;
        }
        effective::choices(&pt.spec, |name| (self.lookup)(name).is_some()).ok()
    }

    /// A fingerprint of what a format-2 NodeTrace takes from `pt`: its selector and container
    /// filter, whether it is in effect with a resolvable profile, and the pod-label allow-list
    /// of each of its profiles (the one setting that is per-pod data: the label values are
    /// copied into the pod lines). Everything else of a profile reaches the agents through the
    /// PodTraceProfile and the MonitoringProfile, so a change of only that rewrites no
    /// format-2 NodeTrace.
    pub fn nodetrace_key(&self, pt: &PodTrace) -> u64 {
        if !self.world.in_effect(pt) {
            return fingerprint::of(&"not in effect");
        }
        let allow_lists = self.podtrace_profile(pt).map(|ptp| {
            ptp.profiles
                .iter()
                .map(|c| match (&c.profile_ref, &c.profile) {
                    (Some(r), _) => (self.lookup)(&r.name).map(|p| p.labels.pod_labels),
                    (None, p) => p.as_ref().map(|p| p.labels.pod_labels.clone()),
                })
                .collect::<Vec<_>>()
        });
        let selection = (&pt.spec.selector, &pt.spec.namespace_selector, &pt.spec.containers);
        fingerprint::of(&(selection, allow_lists))
    }

    /// The traced pod for `pod` and its merged settings, or `None` when no active PodTrace with
    /// a resolvable profile selects it. `settingsKey` is filled in by `merge::node_trace_spec`.
    pub fn traced_pod(&self, pod: &ProjectedPod) -> Option<(TracedPod, MonitoringProfileSpec)> {
        let selecting: Vec<(&PodTrace, Arc<EffectiveProfile>)> = self
            .selecting_labels(pod)
            .iter()
            .filter(|pt| takes(pt, pod))
            .filter_map(|pt| Some((*pt, self.resolve(pt, pod.owner_kind.as_ref()).ok()?)))
            .collect();
        if selecting.is_empty() {
            return None;
        }
        let all_containers = selecting.iter().any(|(pt, _)| pt.spec.containers.is_empty());
        let containers = pod
            .containers
            .iter()
            .filter(|c| {
                all_containers
                    || selecting
                        .iter()
                        .any(|(pt, _)| pt.spec.containers.iter().any(|n| **n == *c.name))
            })
            .map(|c| TracedContainer {
                name: c.name.to_string(),
                runtime_id: c.runtime_id.as_deref().map(str::to_owned),
            })
            .collect();
        let settings = merge::merge_profiles(selecting.iter().map(|(_, p)| &p.spec))?;
        let labels: BTreeMap<String, String> = settings
            .labels
            .pod_labels
            .iter()
            .filter_map(|k| Some((k.clone(), pod.labels.get(k)?.to_owned())))
            .collect();
        let profiles: BTreeSet<String> = selecting.iter().map(|(_, p)| p.name.clone()).collect();
        let requested_by: BTreeSet<PodTraceRef> =
            selecting.iter().map(|(pt, _)| reference(pt)).collect();
        let traced = TracedPod {
            uid: pod.uid.to_string(),
            namespace: pod.namespace.to_string(),
            name: pod.name.to_string(),
            qos_class: pod.qos_class.as_deref().map(str::to_owned),
            owner_kind: pod.owner_kind.as_deref().map(str::to_owned),
            containers,
            labels,
            profiles: profiles.into_iter().collect(),
            settings_key: None,
            requested_by: requested_by.into_iter().collect(),
        };
        Some((traced, settings))
    }

    /// The spec of `node`'s NodeTrace in `format`, or `None` when the node does not exist or
    /// has no traced pods (its NodeTrace is then deleted).
    pub fn node_trace(
        &self,
        index: &PodIndex,
        node: &str,
        format: SpecFormat,
    ) -> Option<NodeTraceSpec> {
        if !index.node_exists(node) {
            return None;
        }
        let pods: Vec<_> = index.on_node(node).filter_map(|p| self.traced_pod(p)).collect();
        (!pods.is_empty()).then(|| merge::node_trace_spec(pods, format))
    }
}

/// The content hash of a NodeTrace spec, stored in the annotation
/// [`crate::SPEC_HASH_ANNOTATION`] so
/// that an operator (also a restarted or newly elected one) writes only when the content changed.
pub fn spec_hash(spec: &NodeTraceSpec) -> String {
    podtrace_api::hash::content_hash(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::tests::pod;
    use podtrace_api::podtrace::ProfileRef;
    use podtrace_api::podtraceprofile::ProfileChoice;
    use podtrace_api::presets::Preset;
    use podtrace_api::{SharedSettings, hash::settings_key, nodetrace::PodSettings};

    fn podtrace(ns: &str, name: &str, app: &str, profile: Option<&str>) -> PodTrace {
        crate::fixtures::podtrace_of(ns, name, app, profile)
    }

    fn presets(name: &str) -> Option<MonitoringProfileSpec> {
        Preset::from_name(name).map(Preset::spec)
    }

    fn index(pods: Vec<ProjectedPod>) -> PodIndex {
        let mut index = PodIndex::default();
        index.set_nodes(["n1".to_string(), "n2".to_string()]);
        for p in pods {
            index.apply(p);
        }
        index
    }

    fn ptref(name: &str) -> PodTraceRef {
        PodTraceRef { namespace: "ns".into(), name: name.into() }
    }

    #[test]
    fn selection_needs_namespace_labels_a_node_and_a_running_pod() {
        let pt = podtrace("ns", "t", "web", None);
        let web = pod("ns", "a", Some("n1"), &[("app", "web")], &[("c", None)]);
        assert!(World::local().selects(&pt, &web));
        assert!(
            !World::local().selects(&pt, &pod("other", "a", Some("n1"), &[("app", "web")], &[]))
        );
        assert!(!World::local().selects(&pt, &pod("ns", "a", Some("n1"), &[("app", "db")], &[])));
        assert!(!World::local().selects(&pt, &pod("ns", "a", None, &[("app", "web")], &[])));
        assert!(!World::local().selects(&pt, &ProjectedPod { finished: true, ..web.clone() }));
        let mut filtered = pt.clone();
        filtered.spec.containers = vec!["sidecar".into()];
        assert!(!World::local().selects(&filtered, &web));
        filtered.spec.containers = vec!["c".into()];
        assert!(World::local().selects(&filtered, &web));
    }

    #[test]
    fn matching_by_label_set_selects_exactly_the_pods_a_per_pod_match_does() {
        // Several pods per label set, pods that do not run, another namespace, a container
        // filter, and a pod replaced with new labels (it must leave its old set).
        let mut pods = Vec::new();
        for (i, app) in ["web", "web", "web", "db", "db", "cache"].iter().enumerate() {
            let name = format!("p{i}");
            let node = if i == 2 { None } else { Some("n1") };
            let containers: &[(&str, Option<&str>)] =
                if i % 2 == 0 { &[("app", None)] } else { &[("side", None)] };
            pods.push(pod("ns", &name, node, &[("app", app), ("tier", "a")], containers));
            pods.push(pod("other", &name, Some("n2"), &[("app", app), ("tier", "a")], &[]));
        }
        pods.push(ProjectedPod {
            finished: true,
            ..pod("ns", "done", Some("n1"), &[("app", "web"), ("tier", "a")], &[])
        });
        let mut idx = index(pods);
        idx.apply(pod("ns", "p1", Some("n1"), &[("app", "db"), ("tier", "a")], &[("side", None)]));
        let world = World::local();
        let mut filtered = podtrace("ns", "f", "db", None);
        filtered.spec.containers = vec!["side".into()];
        for pt in [podtrace("ns", "w", "web", None), podtrace("ns", "d", "db", None), filtered] {
            let per_pod: BTreeSet<&str> = idx
                .in_namespace("ns")
                .filter(|p| world.selects(&pt, p))
                .map(|p| &*p.name)
                .collect();
            let by_set: BTreeSet<&str> =
                world.matched(&pt, &idx).into_iter().map(|p| &*p.name).collect();
            assert_eq!(by_set, per_pod, "{:?}", pt.metadata.name);
        }
        let names = |pt: &PodTrace| -> Vec<String> {
            world
                .matched(pt, &idx)
                .iter()
                .map(|p| p.name.to_string())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        // p2 is not bound, p1 moved to db, "done" finished.
        assert_eq!(names(&podtrace("ns", "w", "web", None)), ["p0"]);
        assert_eq!(names(&podtrace("ns", "d", "db", None)), ["p1", "p3", "p4"]);
        // The set of "web" keeps p0, p2 and "done"; removing them empties it.
        assert_eq!(idx.label_sets("ns").count(), 3);
        for uid in ["uid-ns-p0", "uid-ns-p2", "uid-ns-done"] {
            idx.delete(uid);
        }
        assert_eq!(idx.label_sets("ns").count(), 2);
        // The same answer through a TraceSet's cached lookup, for every pod of the node.
        let pts = [podtrace("ns", "d", "db", None)];
        let set = TraceSet::within(world, &pts, presets);
        let traced: BTreeSet<String> =
            idx.on_node("n1").filter_map(|p| set.traced_pod(p)).map(|(t, _)| t.name).collect();
        assert_eq!(traced, ["p1", "p3", "p4"].map(String::from).into());
    }

    #[test]
    fn two_podtraces_on_one_pod_merge_their_profiles_and_both_are_listed() {
        let idx = index(vec![pod(
            "ns",
            "a",
            Some("n1"),
            &[("app", "web")],
            &[("app", Some("containerd://1")), ("side", None)],
        )]);
        let (batch, api) = (
            podtrace("ns", "b", "web", Some("batch")),
            podtrace("ns", "r", "web", Some("realtime-api")),
        );
        let set = TraceSet::new([&batch, &api], presets);
        let spec = set.node_trace(&idx, "n1", SpecFormat::PodSettings).unwrap();
        let settings =
            merge::merge_profiles([&Preset::Batch.spec(), &Preset::RealtimeApi.spec()]).unwrap();
        let key = settings_key(&settings);
        let expected = NodeTraceSpec {
            settings: Some(settings.clone()),
            pod_settings: vec![PodSettings { key: key.clone(), settings }],
            pods: vec![TracedPod {
                uid: "uid-ns-a".into(),
                namespace: "ns".into(),
                name: "a".into(),
                qos_class: Some("BestEffort".into()),
                containers: vec![
                    TracedContainer {
                        name: "app".into(),
                        runtime_id: Some("containerd://1".into()),
                    },
                    TracedContainer { name: "side".into(), runtime_id: None },
                ],
                labels: BTreeMap::new(),
                owner_kind: None,
                profiles: vec!["batch".into(), "realtime-api".into()],
                settings_key: Some(key),
                requested_by: vec![ptref("b"), ptref("r")],
            }],
        };
        assert_eq!(spec, expected);
        assert_eq!(spec.settings.unwrap().interval, "5s");

        // Format 2: the same pod, with its PodTraces and no settings.
        let shared = set.node_trace(&idx, "n1", SpecFormat::Shared).unwrap();
        let pod = TracedPod { profiles: vec![], settings_key: None, ..expected.pods[0].clone() };
        assert_eq!(shared, NodeTraceSpec { pods: vec![pod], ..Default::default() });
    }

    #[test]
    fn a_podtrace_profile_names_the_profile_and_exists_only_while_the_podtrace_is_in_effect() {
        let (web, inline) = (podtrace("ns", "w", "web", Some("batch")), {
            let mut pt = podtrace("ns", "i", "web", None);
            pt.spec.profile = Some(Preset::Minimal.spec());
            pt
        });
        let set = TraceSet::new([&web, &inline], presets);
        let named = set.podtrace_profile(&web).unwrap();
        let by_ref = ProfileChoice {
            profile_ref: Some(ProfileRef { name: "batch".into() }),
            ..Default::default()
        };
        assert_eq!(named.profiles, [by_ref]);
        assert_eq!(
            set.podtrace_profile(&inline).unwrap().profiles[0].profile,
            Some(Preset::Minimal.spec())
        );
        let missing = podtrace("ns", "m", "web", Some("nope"));
        assert_eq!(set.podtrace_profile(&missing), None);
        let mut paused = web.clone();
        paused.spec.paused = true;
        assert_eq!(set.podtrace_profile(&paused), None);
    }

    /// What a format-2 NodeTrace takes from a PodTrace: a profile change without a label
    /// allow-list change leaves its key alone, a selector or allow-list change moves it.
    #[test]
    fn only_selection_and_label_allow_lists_move_the_nodetrace_key() {
        let pt = podtrace("ns", "t", "web", Some("minimal"));
        let key = |pt: &PodTrace, lookup: &dyn Fn(&str) -> Option<MonitoringProfileSpec>| {
            TraceSet::new([pt], lookup).nodetrace_key(pt)
        };
        let before = key(&pt, &presets);
        let other_profile = podtrace("ns", "t", "web", Some("intensive"));
        assert_eq!(key(&other_profile, &presets), before, "another profile, same selection");
        let edited = |name: &str| {
            let mut p = presets(name)?;
            p.interval = "7s".into();
            Some(p)
        };
        assert_eq!(key(&pt, &edited), before, "an edited MonitoringProfile");
        let labelled = |name: &str| {
            let mut p = presets(name)?;
            p.labels.pod_labels = vec!["team".into()];
            Some(p)
        };
        assert_ne!(key(&pt, &labelled), before, "pod labels are copied into the lines");
        assert_ne!(key(&podtrace("ns", "t", "db", Some("minimal")), &presets), before);
        assert_ne!(key(&podtrace("ns", "t", "web", Some("nope")), &presets), before);
        let mut paused = pt.clone();
        paused.spec.paused = true;
        assert_ne!(key(&paused, &presets), before);
    }

    /// The agent's side of format 2 gives each pod the settings format 1 writes for it.
    #[test]
    fn the_agents_reading_of_format_2_equals_the_settings_of_format_1() {
        let mut owned = pod("ns", "a", Some("n1"), &[("app", "web")], &[]);
        owned.owner_kind = Some("ReplicaSet".into());
        let bare = pod("ns", "b", Some("n1"), &[("app", "web")], &[]);
        let idx = index(vec![owned, bare]);
        let (auto, batch) =
            (podtrace("ns", "t", "web", None), podtrace("ns", "u", "web", Some("batch")));
        let set = TraceSet::new([&auto, &batch], presets);
        let v1 = set.node_trace(&idx, "n1", SpecFormat::PodSettings).unwrap();
        let v2 = set.node_trace(&idx, "n1", SpecFormat::Shared).unwrap();
        let shared = SharedSettings {
            podtrace_profiles: [&auto, &batch]
                .into_iter()
                .map(|pt| (reference(pt), set.podtrace_profile(pt).unwrap()))
                .collect(),
            monitoring_profiles: ["batch", "daemon", "standard"]
                .into_iter()
                .map(|n| (n.to_string(), presets(n).unwrap()))
                .collect(),
        };
        for (old, new) in v1.pods.iter().zip(&v2.pods) {
            assert_eq!(
                v1.settings_for(old, &shared),
                v2.settings_for(new, &shared),
                "{}",
                old.name
            );
        }
        assert_eq!(v2.pods[0].owner_kind.as_deref(), Some("ReplicaSet"));
    }

    #[test]
    fn container_filters_union_and_pod_labels_follow_the_allow_list() {
        let idx = index(vec![pod(
            "ns",
            "a",
            Some("n1"),
            &[("app", "web"), ("team", "x"), ("secret", "y")],
            &[("app", None), ("side", None), ("third", None)],
        )]);
        let mut one = podtrace("ns", "one", "web", None);
        one.spec.containers = vec!["app".into()];
        let mut profile = Preset::Minimal.spec();
        profile.labels.pod_labels = vec!["team".into(), "absent".into()];
        one.spec.profile = Some(profile);
        let mut two = podtrace("ns", "two", "web", None);
        two.spec.containers = vec!["side".into()];
        let set = TraceSet::new([&one, &two], presets);
        let (traced, _) = set.traced_pod(idx.get("uid-ns-a").unwrap()).unwrap();
        let names: Vec<&str> = traced.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["app", "side"]);
        assert_eq!(traced.labels, BTreeMap::from([("team".to_string(), "x".to_string())]));
        assert_eq!(traced.profiles, ["inline", "standard"]);
    }

    #[test]
    fn automatic_profile_follows_the_owner_kind() {
        let mut owned = pod("ns", "a", Some("n1"), &[("app", "web")], &[]);
        owned.owner_kind = Some("ReplicaSet".into());
        let bare = pod("ns", "b", Some("n1"), &[("app", "web")], &[]);
        let idx = index(vec![owned, bare]);
        let pt = podtrace("ns", "t", "web", None);
        let set = TraceSet::new([&pt], presets);
        let spec = set.node_trace(&idx, "n1", SpecFormat::PodSettings).unwrap();
        let profiles: Vec<_> = spec.pods.iter().map(|p| p.profiles.clone()).collect();
        assert_eq!(profiles, [vec!["daemon".to_string()], vec!["standard".to_string()]]);
        let shared = SharedSettings::default();
        assert_eq!(spec.settings_for(&spec.pods[0], &shared), Ok(Preset::Daemon.spec()));
        assert_eq!(spec.pod_settings.len(), 2, "daemon and standard, once each");
    }

    #[test]
    fn paused_deleting_and_unresolvable_podtraces_trace_nothing() {
        let idx = index(vec![pod("ns", "a", Some("n1"), &[("app", "web")], &[])]);
        let mut paused = podtrace("ns", "p", "web", None);
        paused.spec.paused = true;
        let mut deleting = podtrace("ns", "d", "web", None);
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let missing = podtrace("ns", "m", "web", Some("nope"));
        let set = TraceSet::new([&paused, &deleting, &missing], presets);
        assert_eq!(set.node_trace(&idx, "n1", SpecFormat::Shared), None);
    }

    /// A platform PodTrace traces the selected pods of the namespaces that consent, and names
    /// itself (its own namespace) in their lines; the other namespaces' pods stay untraced.
    #[test]
    fn a_namespace_selector_traces_consenting_namespaces_under_its_own_reference() {
        use crate::reach::{CONSENT_LABEL, ClusterTracing};
        let idx = index(vec![
            pod("shop", "a", Some("n1"), &[("app", "web")], &[]),
            pod("bank", "b", Some("n1"), &[("app", "web")], &[]),
        ]);
        let mut namespaces = NamespaceIndex::default();
        let consent = || (CONSENT_LABEL.0.to_string(), CONSENT_LABEL.1.to_string());
        namespaces.applied("shop", [consent()]);
        namespaces.applied("bank", []);
        let rules = ClusterTracing::new(Some("ops".into()), []);
        let world =
            World { now: Timestamp::now(), cluster_tracing: &rules, namespaces: &namespaces };
        let mut platform = podtrace("ops", "fe", "web", None);
        platform.spec.namespace_selector = Some(Default::default());
        let set = TraceSet::within(world, [&platform], presets);
        let spec = set.node_trace(&idx, "n1", SpecFormat::Shared).unwrap();
        let lines: Vec<(&str, &str, &[PodTraceRef])> =
            spec.pods.iter().map(|p| (&*p.namespace, &*p.name, &*p.requested_by)).collect();
        let by = [PodTraceRef { namespace: "ops".into(), name: "fe".into() }];
        assert_eq!(lines, [("shop", "a", &by[..])]);
        assert_eq!(world.namespaces_of(&platform), ["shop"]);

        // The same PodTrace in a namespace that may not trace across namespaces: nothing.
        let mut user = platform.clone();
        user.metadata.namespace = Some("shop".into());
        let set = TraceSet::within(world, [&user], presets);
        assert_eq!(set.node_trace(&idx, "n1", SpecFormat::Shared), None);
        assert!(world.namespaces_of(&user).is_empty());
    }

    #[test]
    fn an_expired_podtrace_traces_nothing_and_a_new_duration_traces_again() {
        use podtrace_api::PodTraceStatus;
        use podtrace_api::podtrace::Countdown;
        let idx = index(vec![pod("ns", "a", Some("n1"), &[("app", "web")], &[])]);
        let mut pt = podtrace("ns", "t", "web", None);
        pt.spec.duration = Some("10s".into());
        let start: Timestamp = "2026-12-06T11:00:00Z".parse().unwrap();
        pt.status = Some(PodTraceStatus {
            countdown: Some(Countdown {
                duration: "10s".into(),
                started_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(start),
            }),
            ..Default::default()
        });
        let at = |now: &str, pt: &PodTrace| {
            let world = World { now: now.parse().unwrap(), ..World::local() };
            TraceSet::within(world, [pt], presets).node_trace(&idx, "n1", SpecFormat::Shared)
        };
        assert!(at("2026-12-06T11:00:09Z", &pt).is_some(), "before the end");
        assert_eq!(at("2026-12-06T11:00:10Z", &pt), None, "at the end");
        pt.spec.duration = Some("1h".into());
        assert!(at("2026-12-06T11:00:10Z", &pt).is_some(), "a new value is traced at once");
    }

    #[test]
    fn a_node_that_does_not_exist_gets_no_node_trace() {
        let idx = index(vec![pod("ns", "a", Some("gone"), &[("app", "web")], &[])]);
        let pt = podtrace("ns", "t", "web", None);
        let set = TraceSet::new([&pt], presets);
        assert_eq!(set.node_trace(&idx, "gone", SpecFormat::Shared), None);
    }

    #[test]
    fn spec_hash_changes_with_a_runtime_id() {
        let idx = index(vec![pod("ns", "a", Some("n1"), &[("app", "web")], &[("c", Some("id1"))])]);
        let pt = podtrace("ns", "t", "web", None);
        let spec = |idx: &PodIndex| {
            TraceSet::new([&pt], presets).node_trace(idx, "n1", SpecFormat::Shared).unwrap()
        };
        let before = spec_hash(&spec(&idx));
        let idx = index(vec![pod("ns", "a", Some("n1"), &[("app", "web")], &[("c", Some("id2"))])]);
        let after = spec_hash(&spec(&idx));
        assert_ne!(before, after);
        assert_eq!(before.len(), 16);
    }
}
