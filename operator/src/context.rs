//! What the watchers, the NodeTrace writer and the PodTrace controller share.

use futures::channel::mpsc::UnboundedSender;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use parking_lot::{Mutex, RwLock};
use podtrace_api::nodetrace::PodTraceRef;
use podtrace_api::{MonitoringProfile, MonitoringProfileSpec, PodTrace};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use tokio::sync::Notify;

use crate::desired::{TraceSet, World};
use crate::fingerprint;
use crate::index::Index;
use crate::metrics::Metrics;
use crate::reach::ClusterTracing;

/// Which objects this operator handles. The defaults (all namespaces, all nodes) are what a
/// cluster runs; narrower scopes shard the work, and let tests share one API server.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Watch PodTraces and Pods of this namespace only.
    pub namespace: Option<String>,
    /// Only nodes with all these labels get a NodeTrace. The labels are copied onto the
    /// NodeTraces, so that the operator also watches (and deletes) only its own.
    pub node_labels: BTreeMap<String, String>,
    /// The namespaces whose PodTraces may trace across namespaces.
    pub cluster_tracing: ClusterTracing,
}

/// Label on every NodeTrace the operator writes; the operator never deletes one without it.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", crate::FIELD_MANAGER);

impl Scope {
    /// Whether a PodTrace this operator handles may trace across namespaces: then it watches
    /// Namespaces, and Pods of every namespace.
    pub fn traces_across_namespaces(&self) -> bool {
        match &self.namespace {
            Some(ns) => self.cluster_tracing.allows(ns),
            None => !self.cluster_tracing.is_empty(),
        }
    }

    /// The namespace whose Pods are watched (`None`: all). An operator limited to one namespace
    /// watches every namespace's Pods when that namespace may trace across namespaces.
    pub fn pod_namespace(&self) -> Option<&str> {
        self.namespace.as_deref().filter(|_| !self.traces_across_namespaces())
    }

    /// The label selector of the Node watch (`k=v,…`, empty for all).
    pub fn node_selector(&self) -> String {
        self.node_labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
    }

    /// The labels put on every NodeTrace written.
    pub fn nodetrace_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.node_labels.clone();
        labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
        labels
    }

    /// The label selector of the NodeTrace watch.
    pub fn nodetrace_selector(&self) -> String {
        self.nodetrace_labels()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Objects whose desired state must be recomputed (nodes, PodTraces), and a wake-up for the
/// writer, which [`Writes`] shares between its two queues.
#[derive(Debug)]
pub struct Dirty<T> {
    items: Mutex<BTreeSet<T>>,
    notify: Arc<Notify>,
}

impl<T: Ord> Dirty<T> {
    fn new(notify: Arc<Notify>) -> Self {
        Self { items: Mutex::default(), notify }
    }

    /// Marks `items` for recomputation.
    pub fn mark(&self, items: impl IntoIterator<Item = T>) {
        let mut set = self.items.lock();
        let before = set.len();
        set.extend(items);
        if set.len() != before {
            self.notify.notify_one();
        }
    }

    /// Takes every marked item without waiting.
    pub fn take_now(&self) -> BTreeSet<T> {
        std::mem::take(&mut *self.items.lock())
    }

    /// Whether nothing is marked.
    pub fn is_empty(&self) -> bool {
        self.items.lock().is_empty()
    }
}

/// The writer's two queues: the PodTraceProfiles and the NodeTraces to recompute. One wake-up
/// serves both, so the one writer task can put PodTraceProfiles before the NodeTraces that name
/// them.
#[derive(Debug)]
pub struct Writes {
    /// PodTraces whose PodTraceProfile must be recomputed.
    pub profiles: Dirty<PodTraceRef>,
    /// Nodes whose NodeTrace must be recomputed.
    pub nodes: Dirty<Arc<str>>,
    notify: Arc<Notify>,
}

impl Default for Writes {
    fn default() -> Self {
        let notify = Arc::new(Notify::new());
        Self { profiles: Dirty::new(notify.clone()), nodes: Dirty::new(notify.clone()), notify }
    }
}

impl Writes {
    /// Waits until something is marked in either queue.
    pub async fn wait(&self) {
        while self.profiles.is_empty() && self.nodes.is_empty() {
            self.notify.notified().await;
        }
    }
}

/// Caches that must have listed once before the operator is ready.
#[derive(Clone, Copy, Debug)]
#[repr(u8)]
pub enum Cache {
    /// Pods (projected into the index).
    Pods = 1,
    /// Nodes (metadata).
    Nodes = 2,
    /// MonitoringProfiles.
    Profiles = 4,
    /// NodeTraces.
    NodeTraces = 8,
    /// PodTraces.
    PodTraces = 16,
    /// PodTraceProfiles (metadata).
    PodTraceProfiles = 32,
    /// Namespaces (metadata; marked at once when not watched).
    Namespaces = 64,
}

/// Which caches have completed their first list.
#[derive(Default, Debug)]
pub struct Synced {
    bits: AtomicU8,
    notify: Notify,
}

impl Synced {
    /// Records that `cache` completed a list.
    pub fn done(&self, cache: Cache) {
        self.bits.fetch_or(cache as u8, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Whether every cache has listed once.
    pub fn all(&self) -> bool {
        self.bits.load(Ordering::SeqCst) == 127
    }

    /// Waits until every cache has listed once.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.all() {
                return;
            }
            notified.await;
        }
    }
}

/// The shared state of the operator.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// What this operator handles.
    pub scope: Scope,
    /// Pods, nodes, NodeTraces, the PodTraces' bookkeeping and this process's writes: the one
    /// pure index, behind one lock.
    pub index: RwLock<Index>,
    /// PodTraces (reflector store, the controller's), with `status.nodes` stripped: the index
    /// keeps a fingerprint of it.
    pub podtraces: Store<PodTrace>,
    /// MonitoringProfiles (reflector store).
    pub profiles: Store<MonitoringProfile>,
    /// PodTraceProfiles and NodeTraces to recompute: the writer's queues.
    pub dirty: Writes,
    /// Serializes NodeTrace and PodTraceProfile syncs (the writer loop and finalizer cleanups).
    pub write_lock: tokio::sync::Mutex<()>,
    /// PodTraces to reconcile (status), consumed by the controller while leading.
    pub triggers: UnboundedSender<ObjectRef<PodTrace>>,
    /// Whether this process leads (and the controller consumes `triggers`).
    pub leading: AtomicBool,
    /// Caches listed.
    pub synced: Synced,
    /// Metrics.
    pub metrics: Metrics,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
}

impl Context {
    /// A context that does not lead yet, with an empty index; `identity` signs its Events.
    pub fn new(
        client: Client,
        scope: Scope,
        (podtraces, profiles): (Store<PodTrace>, Store<MonitoringProfile>),
        triggers: UnboundedSender<ObjectRef<PodTrace>>,
        metrics: Metrics,
        identity: &str,
    ) -> Self {
        let reporter = Reporter {
            controller: crate::FIELD_MANAGER.into(),
            instance: Some(identity.to_owned()).filter(|i| !i.is_empty()),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            scope,
            index: Default::default(),
            podtraces,
            profiles,
            dirty: Default::default(),
            write_lock: Default::default(),
            triggers,
            leading: Default::default(),
            synced: Default::default(),
            metrics,
        }
    }

    /// The MonitoringProfile spec of `name` in the cache.
    pub fn profile(&self, name: &str) -> Option<MonitoringProfileSpec> {
        self.profiles.get(&ObjectRef::new(name)).map(|p| p.spec.clone())
    }

    /// Runs `f` with the active PodTraces and the index, read-locked.
    pub fn with_traces<T>(
        &self,
        f: impl FnOnce(&TraceSet<'_, &dyn Fn(&str) -> Option<MonitoringProfileSpec>>, &Index) -> T,
    ) -> T {
        let podtraces = self.podtraces.state();
        let lookup = |name: &str| self.profile(name);
        let lookup: &dyn Fn(&str) -> Option<MonitoringProfileSpec> = &lookup;
        self.with_world(|world, index| {
            let set = TraceSet::within(*world, podtraces.iter().map(|p| &**p), lookup);
            f(&set, index)
        })
    }

    /// Runs `f` with the world now (time, cross-namespace rules, namespace labels) and the
    /// index, read-locked.
    pub fn with_world<T>(&self, f: impl FnOnce(&World<'_>, &Index) -> T) -> T {
        let index = self.index.read();
        let world = World {
            now: k8s_openapi::jiff::Timestamp::now(),
            cluster_tracing: &self.scope.cluster_tracing,
            namespaces: &index.namespaces,
        };
        f(&world, &index)
    }

    /// Asks the controller to reconcile `pt`'s status (dropped while not leading: the
    /// controller reconciles every PodTrace when it starts).
    pub fn trigger(&self, pt: &PodTrace) {
        if self.leading.load(Ordering::SeqCst) {
            let _ = self.triggers.unbounded_send(ObjectRef::from_obj(pt));
        }
    }

    /// Triggers every PodTrace of `namespace` (or all with `None`).
    pub fn trigger_namespace(&self, namespace: Option<&str>) {
        for pt in self.podtraces.state() {
            if namespace.is_none() || pt.namespace().as_deref() == namespace {
                self.trigger(&pt);
            }
        }
    }

    /// Triggers the PodTraces with a namespaceSelector (after a namespace's labels changed).
    pub fn trigger_across_namespaces(&self) {
        for pt in self.podtraces.state() {
            if pt.spec.namespace_selector.is_some() {
                self.trigger(&pt);
            }
        }
    }

    /// Triggers the PodTraces whose reference has one of the fingerprints `requesters`.
    pub fn trigger_requesters(&self, requesters: &[u64]) {
        if requesters.is_empty() {
            return;
        }
        for pt in self.podtraces.state() {
            if requesters.contains(&fingerprint::of(&crate::desired::reference(&pt))) {
                self.trigger(&pt);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_of_every_namespace_are_watched_only_where_a_podtrace_may_trace_across_namespaces() {
        let scope = |namespace: Option<&str>, allowed: &[&str]| Scope {
            namespace: namespace.map(str::to_owned),
            cluster_tracing: ClusterTracing::new(None, allowed.iter().map(|n| n.to_string())),
            ..Default::default()
        };
        let cases = [
            (scope(None, &[]), false, None),
            (scope(None, &["ops"]), true, None),
            (scope(Some("shop"), &["ops"]), false, Some("shop")),
            (scope(Some("ops"), &["ops"]), true, None),
        ];
        for (scope, across, pods) in cases {
            assert_eq!(scope.traces_across_namespaces(), across, "{scope:?}");
            assert_eq!(scope.pod_namespace(), pods, "{scope:?}");
        }
    }
}
