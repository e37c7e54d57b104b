//! The watches that feed the index and the stores, and what each change marks for work:
//!
//! | watch | kept | a change marks |
//! |---|---|---|
//! | Pods (decoded as `WatchedPod`) | projection in the pod index | old and new node; PodTraces of the namespace that select it |
//! | Nodes (metadata only) | names in the index | that node |
//! | MonitoringProfiles (managed fields stripped) | store | every node; every PodTrace |
//! | NodeTraces (pods, settings and managed fields stripped) | store | that node; the PodTraces it lists |
//! | PodTraces (managed fields stripped) | store | nodes hosting its namespace's pods or listing it; itself |
//!
//! All replicas run the watches (a standby is ready to take over with warm caches); only the
//! leader consumes the marks.

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use parking_lot::Mutex;
use podtrace_api::{MonitoringProfile, NodeTrace, NodeTraceStatus, PodTrace};
use std::collections::HashMap;
use std::sync::Arc;

use crate::context::{Cache, Context};
use crate::desired::{SPEC_HASH_ANNOTATION, selects};
use crate::fingerprint;
use crate::index::{ProjectedPod, Touched};
use crate::watched_pod::WatchedPod;

/// Pages of the initial lists: large pages list 10,000 pods in few round trips.
const PAGE_SIZE: u32 = 500;

fn api<K>(ctx: &Context, namespaced: bool) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match (&ctx.scope.namespace, namespaced) {
        (Some(ns), true) => Api::namespaced(ctx.client.clone(), ns),
        _ => Api::all(ctx.client.clone()),
    }
}

/// Pods → the projected index. Each Pod is decoded as a [`WatchedPod`] (only the projected
/// fields), projected and dropped as it arrives.
pub async fn pods(ctx: Arc<Context>) {
    let config = watcher::Config::default().page_size(PAGE_SIZE);
    let stream = watcher(api::<WatchedPod>(&ctx, true), config).default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        let touched = {
            let mut index = ctx.index.write();
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
        ctx.dirty.mark(touched.nodes);
        if !touched.pods.is_empty() && ctx.leading.load(std::sync::atomic::Ordering::SeqCst) {
            for pt in ctx.podtraces.state() {
                if touched.pods.iter().any(|p| selects(&pt, p)) {
                    ctx.trigger(&pt);
                }
            }
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
        ctx.dirty.mark(changed);
    }
}

/// MonitoringProfiles → their store. An edit may change any NodeTrace and any status.
pub async fn profiles(ctx: Arc<Context>, writer: Writer<MonitoringProfile>) {
    let stream =
        watcher(Api::<MonitoringProfile>::all(ctx.client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(|p| p.managed_fields_mut().clear())
            .reflect(writer);
    for_each_change(stream, Cache::Profiles, &ctx, |ctx, _| {
        let nodes: Vec<Arc<str>> = ctx.index.read().nodes().cloned().collect();
        ctx.dirty.mark(nodes);
        ctx.trigger_namespace(None);
    })
    .await;
}

/// NodeTraces (ours, by label) → their store, without the pod lists (the agent's status is kept
/// for the roll-up; the spec's content is summarized by the hash annotation).
pub async fn nodetraces(ctx: Arc<Context>, writer: Writer<NodeTrace>) {
    let config = watcher::Config::default().labels(&ctx.scope.nodetrace_selector());
    let stream = watcher(Api::<NodeTrace>::all(ctx.client.clone()), config)
        .default_backoff()
        .modify({
            let ctx = ctx.clone();
            move |nt| {
                // requested_by() is already a set: one fingerprint per PodTrace.
                let refs = nt.spec.requested_by().into_iter().map(fingerprint::of).collect();
                ctx.requested_by.lock().insert(nt.name_any().into(), refs);
                nt.spec = Default::default();
                nt.managed_fields_mut().clear();
            }
        })
        .reflect(writer);
    // A fingerprint of what the agent last reported per node, without its heartbeat: the roll-up
    // only needs a PodTrace reconcile when that changes (a copy would hold every pod's result
    // twice, since the store keeps the status too).
    let reported: Mutex<HashMap<String, u64>> = Mutex::default();
    let report_of = |status: &Option<NodeTraceStatus>| {
        fingerprint::of(&status.as_ref().map(|s| NodeTraceStatus { heartbeat: None, ..s.clone() }))
    };
    // Whether the agent's report changed (then the PodTraces of the node need a roll-up).
    let changed_status = |nt: &NodeTrace, deleted: bool| {
        let mut reported = reported.lock();
        if deleted {
            reported.remove(&nt.name_any()).is_some()
        } else {
            let status = report_of(&nt.status);
            reported.insert(nt.name_any(), status) != Some(status)
        }
    };
    for_each_change(stream, Cache::NodeTraces, &ctx, |ctx, event| {
        let (nt, deleted) = match event {
            watcher::Event::Apply(nt) => (nt, false),
            watcher::Event::Delete(nt) => (nt, true),
            watcher::Event::InitApply(nt) => {
                reported.lock().insert(nt.name_any(), report_of(&nt.status));
                return;
            }
            _ => return,
        };
        let name: Arc<str> = nt.name_any().into();
        let hash = nt.annotations().get(SPEC_HASH_ANNOTATION);
        let triggered = if changed_status(nt, deleted) { ctx.podtraces_on(&name) } else { vec![] };
        if deleted {
            ctx.requested_by.lock().remove(&name);
        }
        {
            let mut written = ctx.written.lock();
            if deleted {
                written.remove(&name);
            }
            // Our own write coming back needs no recomputation; anything else (a deletion, an
            // edit by someone else, a NodeTrace we have no record of) does.
            if deleted || written.get(&name) != Some(&hash.cloned()) {
                drop(written);
                ctx.dirty.mark([name.clone()]);
            }
        }
        for pt in triggered {
            ctx.trigger(&pt);
        }
    })
    .await;
}

/// PodTraces → their store (the controller reads it). A change may add or remove pods on the
/// nodes hosting the namespace's pods and on the nodes that list the PodTrace.
pub async fn podtraces(ctx: Arc<Context>, writer: Writer<PodTrace>) {
    let stream = watcher(api::<PodTrace>(&ctx, true), watcher::Config::default())
        .default_backoff()
        // Managed fields are never read, and the status entry's grows with every node listed in
        // status.nodes (about 150 bytes per node, per PodTrace), as does the list itself.
        .modify({
            let ctx = ctx.clone();
            move |pt| {
                pt.managed_fields_mut().clear();
                // The node list is kept as a fingerprint only (Context::status_changed).
                if let Some(status) = pt.status.as_mut() {
                    let nodes = std::mem::take(&mut status.nodes);
                    ctx.status_nodes
                        .lock()
                        .insert(pt.uid().unwrap_or_default(), fingerprint::of(&nodes));
                }
            }
        })
        .reflect(writer);
    // The generation seen per PodTrace: status writes and finalizer updates do not change what
    // it selects, so they do not cost a NodeTrace recomputation (a deletion bumps generation).
    let seen: Mutex<HashMap<String, Option<i64>>> = Mutex::default();
    for_each_change(stream, Cache::PodTraces, &ctx, |ctx, event| {
        let (pt, deleted) = match event {
            watcher::Event::Apply(pt) => (pt, false),
            watcher::Event::Delete(pt) => (pt, true),
            watcher::Event::InitApply(pt) => {
                let key = pt.uid().unwrap_or_default();
                seen.lock().insert(key, pt.metadata.generation);
                return;
            }
            _ => return,
        };
        let key = pt.uid().unwrap_or_default();
        let changed = {
            let mut seen = seen.lock();
            if deleted {
                seen.remove(&key);
                ctx.status_nodes.lock().remove(&key);
                true
            } else {
                seen.insert(key, pt.metadata.generation) != Some(pt.metadata.generation)
            }
        };
        if changed {
            let mut nodes = ctx.nodes_requested_by(pt);
            let ns = pt.namespace().unwrap_or_default();
            nodes.extend(ctx.index.read().nodes_of_namespace(&ns));
            ctx.dirty.mark(nodes);
        }
        ctx.trigger(pt);
    })
    .await;
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
            Ok(watcher::Event::InitDone) => {
                ctx.synced.done(cache);
                if relisted {
                    // Objects may have changed or gone while the watch was down: recheck all.
                    let nodes: Vec<Arc<str>> = ctx.index.read().nodes().cloned().collect();
                    ctx.dirty.mark(nodes);
                    ctx.trigger_namespace(None);
                }
                relisted = true;
            }
            Ok(event) => on_change(ctx, &event),
            Err(e) => tracing::warn!(error = %e, cache = ?cache, "watch failed; retrying"),
        }
    }
}
