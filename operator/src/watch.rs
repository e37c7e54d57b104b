//! The watches that feed the index and the stores, and what each change marks for work:
//!
//! | watch | kept | a change marks |
//! |---|---|---|
//! | Pods (decoded as `WatchedPod`) | projection in the pod index | old and new node; PodTraces that select it |
//! | Namespaces (metadata only, while cross-namespace tracing is possible) | labels in the index | nodes hosting its pods, when its labels changed; PodTraces with a namespaceSelector |
//! | Nodes (metadata only) | names in the index | that node |
//! | MonitoringProfiles (managed fields stripped) | store | every PodTraceProfile (rewritten only if a referenced profile appeared or went); format-1 nodes; the nodes of PodTraces whose pod-label allow-list moved; every PodTrace's status |
//! | NodeTraces (ours, by label) | index: requesters, spec hash, spec format, agent status | that node (not our own write, unless the agent's format moved); the PodTraces it lists when the agent's report changed |
//! | PodTraces (managed fields stripped) | store | its PodTraceProfile; nodes hosting the pods of the namespaces it reaches or listing it (only format-1 nodes when only its profile changed); itself |
//! | PodTraceProfiles (ours, metadata only) | index: spec hash | itself, when not our own write |
//!
//! Each watch applies its events to the one index (`index/`), which says what follows. All
//! replicas run the watches (a standby is ready to take over with warm caches); only the leader
//! consumes the marks.

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use podtrace_api::nodetrace::PodTraceRef;
use podtrace_api::{MonitoringProfile, NodeTrace, PodTrace, PodTraceProfile};
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use crate::context::{Cache, Context, MANAGED_BY};
use crate::desired::reference;
use crate::index::{NodeTraceChange, PodTraceChange, ProjectedPod, Touched, spec_hash_of};
use crate::watched_pod::WatchedPod;

/// Pages of the initial lists: large pages list 10,000 pods in few round trips.
const PAGE_SIZE: u32 = 500;

/// The API of `K` in `namespace`, or of all namespaces.
fn api<K>(ctx: &Context, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    }
}

/// Pods → the projected index. Each Pod is decoded as a [`WatchedPod`] (only the projected
/// fields), projected and dropped as it arrives.
pub async fn pods(ctx: Arc<Context>) {
    let config = watcher::Config::default().page_size(PAGE_SIZE);
    let stream =
        watcher(api::<WatchedPod>(&ctx, ctx.scope.pod_namespace()), config).default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        let touched = {
            let mut index = ctx.index.write();
            let index = &mut index.pods;
            let touched = match event {
                Ok(watcher::Event::Init) => {
                    index.relist_start();
                    Touched::default()
                }
                Ok(watcher::Event::InitApply(pod) | watcher::Event::Apply(pod)) => {
                    match ProjectedPod::project(&pod, &mut index.interner) {
                        Some(p) => index.apply(p),
                        None => Touched::default(),
                    }
                }
                Ok(watcher::Event::Delete(pod)) => index.delete(&pod.uid().unwrap_or_default()),
                Ok(watcher::Event::InitDone) => {
                    ctx.synced.done(Cache::Pods);
                    index.relist_done()
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pod watch failed; retrying");
                    Touched::default()
                }
            };
            ctx.metrics.pods_indexed.set(index.len() as i64);
            touched
        };
        ctx.dirty.nodes.mark(touched.nodes);
        if !touched.pods.is_empty() && ctx.leading.load(std::sync::atomic::Ordering::SeqCst) {
            let selecting: Vec<Arc<PodTrace>> = ctx.with_world(|world, _| {
                let state = ctx.podtraces.state().into_iter();
                state.filter(|pt| touched.pods.iter().any(|p| world.selects(pt, p))).collect()
            });
            selecting.iter().for_each(|pt| ctx.trigger(pt));
        }
    }
}

/// Nodes (metadata only) → the node set of the index.
pub async fn nodes(ctx: Arc<Context>) {
    let config = watcher::Config::default().labels(&ctx.scope.node_selector());
    // Metadata only: Node statuses (images, conditions) are large and change every few seconds.
    let stream =
        watcher(Api::<PartialObjectMeta<Node>>::all(ctx.client.clone()), config).default_backoff();
    futures::pin_mut!(stream);
    let mut listed = Vec::new();
    while let Some(event) = stream.next().await {
        let changed: Vec<Arc<str>> = {
            let mut index = ctx.index.write();
            let index = &mut index.pods;
            match event {
                Ok(watcher::Event::Init) => {
                    listed.clear();
                    vec![]
                }
                Ok(watcher::Event::InitApply(node)) => {
                    listed.push(node.name_any());
                    vec![]
                }
                Ok(watcher::Event::InitDone) => {
                    ctx.synced.done(Cache::Nodes);
                    index.set_nodes(std::mem::take(&mut listed)).into_iter().collect()
                }
                Ok(watcher::Event::Apply(node)) => {
                    let name = node.name_any();
                    if index.set_node(&name, true) { vec![name.into()] } else { vec![] }
                }
                Ok(watcher::Event::Delete(node)) => {
                    let name = node.name_any();
                    if index.set_node(&name, false) { vec![name.into()] } else { vec![] }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "node watch failed; retrying");
                    vec![]
                }
            }
        };
        ctx.dirty.nodes.mark(changed);
    }
}

/// MonitoringProfiles → their store. An edit changes the settings of the PodTraces that use
/// the profile: their statuses, the format-1 NodeTraces, and the format-2 NodeTraces only where
/// a pod-label allow-list moved. PodTraceProfiles name the profile rather than copy it, so they
/// change only when a profile they refer to appears or goes (the writer compares hashes).
pub async fn profiles(ctx: Arc<Context>, writer: Writer<MonitoringProfile>) {
    let stream =
        watcher(Api::<MonitoringProfile>::all(ctx.client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(|p| p.managed_fields_mut().clear())
            .reflect(writer);
    for_each_change(stream, Cache::Profiles, &ctx, |ctx, _| {
        let keys: Vec<(Arc<PodTrace>, u64)> = ctx.with_traces(|set, _| {
            ctx.podtraces
                .state()
                .into_iter()
                .map(|pt| {
                    let k = set.nodetrace_key(&pt);
                    (pt, k)
                })
                .collect()
        });
        let (moved, format_1): (Vec<&Arc<PodTrace>>, Vec<Arc<str>>) = {
            let mut index = ctx.index.write();
            let moved = keys
                .iter()
                .filter(|(pt, key)| index.podtrace_key(&pt.uid().unwrap_or_default(), *key))
                .map(|(pt, _)| pt)
                .collect();
            (moved, index.format_1_nodes().cloned().collect())
        };
        ctx.dirty.nodes.mark(format_1);
        for pt in moved {
            ctx.dirty.nodes.mark(nodes_of(ctx, pt));
        }
        ctx.dirty.profiles.mark(keys.iter().map(|(pt, _)| reference(pt)));
        ctx.trigger_namespace(None);
    })
    .await;
}

/// The nodes whose NodeTrace `pt` may be on: those listing it and those hosting pods of the
/// namespaces it reaches (its own, or those of its namespaceSelector).
pub fn nodes_of(ctx: &Context, pt: &PodTrace) -> BTreeSet<Arc<str>> {
    ctx.with_world(|world, index| {
        let mut nodes = index.nodes_requested_by(&reference(pt));
        for namespace in world.namespaces_of(pt) {
            nodes.extend(index.pods.nodes_of_namespace(namespace));
        }
        nodes
    })
}

/// Namespaces (metadata only) → their labels in the index, while a PodTrace this operator
/// handles may trace across namespaces (otherwise marked synced at once). A change of labels
/// may add or remove the namespace's pods from the PodTraces with a namespaceSelector: it marks
/// the nodes hosting them and triggers those PodTraces.
pub async fn namespaces(ctx: Arc<Context>) {
    if !ctx.scope.traces_across_namespaces() {
        ctx.synced.done(Cache::Namespaces);
        return;
    }
    let stream = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        let changed: BTreeSet<Arc<str>> = {
            let mut index = ctx.index.write();
            let namespaces = &mut index.namespaces;
            match event {
                Ok(watcher::Event::Init) => {
                    namespaces.relist_start();
                    continue;
                }
                Ok(watcher::Event::InitApply(ns) | watcher::Event::Apply(ns)) => {
                    let name = ns.name_any();
                    let labels = ns.metadata.labels.unwrap_or_default();
                    if namespaces.applied(&name, labels) { [name.into()].into() } else { continue }
                }
                Ok(watcher::Event::Delete(ns)) => {
                    let name = ns.name_any();
                    if namespaces.deleted(&name) { [name.into()].into() } else { continue }
                }
                Ok(watcher::Event::InitDone) => {
                    ctx.synced.done(Cache::Namespaces);
                    namespaces.relist_done()
                }
                Err(e) => {
                    tracing::warn!(error = %e, cache = ?Cache::Namespaces, "watch failed; retrying");
                    continue;
                }
            }
        };
        // Only PodTraces with a namespaceSelector read namespace labels; one created later
        // reads them when its own event marks its nodes.
        if !ctx.podtraces.state().iter().any(|pt| pt.spec.namespace_selector.is_some()) {
            continue;
        }
        let nodes: BTreeSet<Arc<str>> = {
            let index = ctx.index.read();
            changed.iter().flat_map(|ns| index.pods.nodes_of_namespace(ns)).collect()
        };
        ctx.dirty.nodes.mark(nodes);
        ctx.trigger_across_namespaces();
    }
}

/// NodeTraces (ours, by label) → the index, which keeps their requesters, spec hash and agent
/// status but never their spec.
pub async fn nodetraces(ctx: Arc<Context>) {
    let config = watcher::Config::default().labels(&ctx.scope.nodetrace_selector());
    let stream = watcher(Api::<NodeTrace>::all(ctx.client.clone()), config).default_backoff();
    futures::pin_mut!(stream);
    let mut relisted = false;
    while let Some(event) = stream.next().await {
        let change = {
            let mut index = ctx.index.write();
            match event {
                Ok(watcher::Event::Init) => {
                    index.nodetraces_relist_start();
                    continue;
                }
                Ok(watcher::Event::InitApply(nt)) => {
                    index.nodetrace_listed(&nt);
                    continue;
                }
                Ok(watcher::Event::InitDone) => {
                    index.nodetraces_relist_done();
                    None
                }
                Ok(watcher::Event::Apply(nt)) => Some(index.nodetrace_applied(&nt)),
                Ok(watcher::Event::Delete(nt)) => Some(index.nodetrace_deleted(&nt.name_any())),
                Err(e) => {
                    tracing::warn!(error = %e, cache = ?Cache::NodeTraces, "watch failed; retrying");
                    continue;
                }
            }
        };
        match change {
            Some(NodeTraceChange { recompute, roll_up }) => {
                ctx.dirty.nodes.mark(recompute);
                ctx.trigger_requesters(&roll_up);
            }
            None => listed(&ctx, Cache::NodeTraces, &mut relisted),
        }
    }
}

/// PodTraces → their store (the controller reads it) and their bookkeeping in the index. A
/// change of its profile rewrites its PodTraceProfile and the format-1 NodeTraces of its pods;
/// a change of what it selects may add or remove pods on the nodes hosting the namespace's pods
/// and on the nodes that list the PodTrace, in either format.
pub async fn podtraces(ctx: Arc<Context>, writer: Writer<PodTrace>) {
    let stream =
        watcher(api::<PodTrace>(&ctx, ctx.scope.namespace.as_deref()), watcher::Config::default())
            .default_backoff()
            // Managed fields are never read, and the status entry's grows with every node listed in
            // status.nodes (about 150 bytes per node, per PodTrace), as does the list itself: the
            // index keeps a fingerprint of the list.
            .modify({
                let ctx = ctx.clone();
                move |pt| {
                    pt.managed_fields_mut().clear();
                    if let Some(status) = pt.status.as_mut() {
                        let nodes = std::mem::take(&mut status.nodes);
                        let uid = pt.metadata.uid.as_deref().unwrap_or_default();
                        ctx.index.write().podtrace_status_nodes(uid, &nodes);
                    }
                }
            })
            .reflect(writer);
    for_each_change(stream, Cache::PodTraces, &ctx, |ctx, event| {
        let (pt, deleted) = match event {
            watcher::Event::Apply(pt) => (pt, false),
            watcher::Event::Delete(pt) => (pt, true),
            watcher::Event::InitApply(pt) => {
                let uid = pt.uid().unwrap_or_default();
                let key = ctx.with_traces(|set, _| set.nodetrace_key(pt));
                ctx.index.write().podtrace_listed(&uid, pt.metadata.generation, key);
                return;
            }
            _ => return,
        };
        let uid = pt.uid().unwrap_or_default();
        let key = ctx.with_traces(|set, _| set.nodetrace_key(pt));
        let change = {
            let mut index = ctx.index.write();
            if deleted {
                index.podtrace_deleted(&uid);
                PodTraceChange::Selection
            } else {
                index.podtrace_applied(&uid, pt.metadata.generation, key)
            }
        };
        let nodes: BTreeSet<Arc<str>> = match change {
            PodTraceChange::Nothing => BTreeSet::new(),
            PodTraceChange::Selection => nodes_of(ctx, pt),
            PodTraceChange::Settings => {
                let format_1: HashSet<Arc<str>> =
                    ctx.index.read().format_1_nodes().cloned().collect();
                nodes_of(ctx, pt).into_iter().filter(|n| format_1.contains(n)).collect()
            }
        };
        if change != PodTraceChange::Nothing {
            ctx.dirty.profiles.mark([reference(pt)]);
        }
        ctx.dirty.nodes.mark(nodes);
        ctx.trigger(pt);
    })
    .await;
}

/// PodTraceProfiles (ours, metadata only) → their spec hashes in the index, so that a
/// restarted operator writes none that is up to date, and an edit or deletion by someone else
/// is repaired.
pub async fn podtraceprofiles(ctx: Arc<Context>) {
    let config = watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
    // Metadata only: the hash annotation is all the writer compares.
    let api = api::<PartialObjectMeta<PodTraceProfile>>(&ctx, ctx.scope.namespace.as_deref());
    let stream = watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    let mut relisted = false;
    let of = |m: &PartialObjectMeta<PodTraceProfile>| PodTraceRef {
        namespace: m.namespace().unwrap_or_default(),
        name: m.name_any(),
    };
    while let Some(event) = stream.next().await {
        let mut index = ctx.index.write();
        let ledger = &mut index.profile_hashes;
        match event {
            Ok(watcher::Event::Init) => ledger.relist_start(),
            Ok(watcher::Event::InitApply(m)) => ledger.listed(of(&m), spec_hash_of(&m)),
            Ok(watcher::Event::InitDone) => {
                ledger.relist_done();
                drop(index);
                listed(&ctx, Cache::PodTraceProfiles, &mut relisted);
            }
            Ok(watcher::Event::Apply(m)) => {
                if ledger.applied(of(&m), spec_hash_of(&m)) {
                    ctx.dirty.profiles.mark([of(&m)]);
                }
            }
            Ok(watcher::Event::Delete(m)) => {
                ledger.deleted(&of(&m));
                ctx.dirty.profiles.mark([of(&m)]);
            }
            Err(e) => {
                tracing::warn!(error = %e, cache = ?Cache::PodTraceProfiles, "watch failed; retrying")
            }
        }
    }
}

/// After a watch listed (again): marks `cache` synced; after a relist, rechecks every node and
/// PodTrace, since objects may have changed or gone while the watch was down.
fn listed(ctx: &Context, cache: Cache, relisted: &mut bool) {
    ctx.synced.done(cache);
    if *relisted {
        let (nodes, profiles): (Vec<Arc<str>>, Vec<PodTraceRef>) = {
            let index = ctx.index.read();
            (index.pods.nodes().cloned().collect(), index.profile_hashes.keys().cloned().collect())
        };
        ctx.dirty.nodes.mark(nodes);
        ctx.dirty.profiles.mark(profiles);
        ctx.dirty.profiles.mark(ctx.podtraces.state().iter().map(|pt| reference(pt)));
        ctx.trigger_namespace(None);
        if let Cache::PodTraces = cache {
            let uids: HashSet<String> =
                ctx.podtraces.state().iter().filter_map(|p| p.uid()).collect();
            ctx.index.write().podtraces_retain(&uids);
        }
    }
    *relisted = true;
}

/// Drives a reflected watch, marks `cache` synced at each completed list, and calls `on_change`
/// for each event (also after a relist, with the whole state marked).
async fn for_each_change<K, S>(
    stream: S,
    cache: Cache,
    ctx: &Arc<Context>,
    on_change: impl Fn(&Context, &watcher::Event<K>),
) where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    futures::pin_mut!(stream);
    let mut relisted = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::InitDone) => listed(ctx, cache, &mut relisted),
            Ok(event) => on_change(ctx, &event),
            Err(e) => tracing::warn!(error = %e, cache = ?cache, "watch failed; retrying"),
        }
    }
}
