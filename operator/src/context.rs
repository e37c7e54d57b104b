//! What the watchers, the NodeTrace writer and the PodTrace controller share.

use futures::channel::mpsc::UnboundedSender;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use parking_lot::{Mutex, RwLock};
use podtrace_api::{MonitoringProfile, MonitoringProfileSpec, PodTrace};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use tokio::sync::Notify;

use crate::desired::TraceSet;
use crate::fingerprint;
use crate::index::Index;
use crate::metrics::Metrics;

/// Which objects this operator handles. The defaults (all namespaces, all nodes) are what a
/// cluster runs; narrower scopes shard the work, and let tests share one API server.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Watch PodTraces and Pods of this namespace only.
    pub namespace: Option<String>,
    /// Only nodes with all these labels get a NodeTrace. The labels are copied onto the
    /// NodeTraces, so that the operator also watches (and deletes) only its own.
    pub node_labels: BTreeMap<String, String>,
}

/// Label on every NodeTrace the operator writes; the operator never deletes one without it.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", crate::FIELD_MANAGER);

impl Scope {
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

/// Nodes whose NodeTrace must be recomputed, and a wake-up for the writer.
#[derive(Default, Debug)]
pub struct Dirty {
    nodes: Mutex<BTreeSet<Arc<str>>>,
    notify: Notify,
}

impl Dirty {
    /// Marks `nodes` for recomputation.
    pub fn mark(&self, nodes: impl IntoIterator<Item = Arc<str>>) {
        let mut set = self.nodes.lock();
        let before = set.len();
        set.extend(nodes);
        if set.len() != before {
            self.notify.notify_one();
        }
    }

    /// Takes every marked node without waiting.
    pub fn take_now(&self) -> BTreeSet<Arc<str>> {
        std::mem::take(&mut *self.nodes.lock())
    }

    /// Waits until some node is marked, then takes every marked node.
    pub async fn take(&self) -> BTreeSet<Arc<str>> {
        loop {
            let taken = std::mem::take(&mut *self.nodes.lock());
            if !taken.is_empty() {
                return taken;
            }
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
        self.bits.load(Ordering::SeqCst) == 31
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
    /// Nodes whose NodeTrace must be recomputed: the writer's queue.
    pub dirty: Dirty,
    /// Serializes NodeTrace syncs (the writer loop and finalizer cleanups).
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
        let set = TraceSet::new(podtraces.iter().map(|p| &**p), lookup);
        let index = self.index.read();
        f(&set, &index)
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
