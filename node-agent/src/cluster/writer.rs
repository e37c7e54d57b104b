//! The status writer: server-side-applies `NodeTrace/<node>/status` (field manager
//! `podtrace-agent`) when the computed status changes, and otherwise as a heartbeat.
//!
//! It wakes on a new spec, engine status or export drop, at the heartbeat, and to retry a
//! failed write; it
//! writes at most once every [`WRITE_GAP`]: the engine's status moves with every collection,
//! and the API server needs a node's status at the pace a person reads it.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use podtrace_api::{NodeTrace, NodeTraceStatus, nodetrace::KernelFeatures};
use tokio::{sync::watch, time::Instant};

use super::{Desired, FIELD_MANAGER, HEARTBEAT, status};
use crate::{cgroup::CgroupLayout, channel::changed, engine::EngineStatus};

/// The shortest time between two writes (and the wait before retrying a failed one).
pub const WRITE_GAP: std::time::Duration = std::time::Duration::from_secs(1);

/// What the kernel offers, read at start.
pub fn kernel_features(
    layout: &CgroupLayout,
    filter: Option<podtrace_ebpf::Filter>,
    bpf_stats: bool,
) -> KernelFeatures {
    let read =
        |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_owned()).unwrap_or_default();
    KernelFeatures {
        release: read("/proc/sys/kernel/osrelease"),
        btf: std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
        cgroup_mode: layout.mode.name().into(),
        bpf_stats,
        attach_types: Vec::new(),
        ebpf_filter: filter.map(|f| f.name().into()),
    }
}

/// What the status writer reads.
pub struct StatusWriter {
    /// The API client.
    pub client: Client,
    /// This node.
    pub node: String,
    /// The NodeTrace's spec.
    pub desired: watch::Receiver<Desired>,
    /// The engine's status.
    pub engine: watch::Receiver<EngineStatus>,
    /// Marked when an exporter drops items (`exportDropped`).
    pub exports: watch::Receiver<()>,
    /// What the kernel offers.
    pub kernel: KernelFeatures,
    /// Size of the eBPF tracked-cgroup map.
    pub max_tracked: usize,
}

/// Writes the status of `NodeTrace/<node>` whenever it changes and every [`HEARTBEAT`], until
/// the spec's or the engine's channel closes (the process is stopping).
pub async fn write_status(
    writer: StatusWriter,
    export_dropped: impl Fn() -> u64 + Send,
    on_result: impl Fn(Result<(), &kube::Error>) + Send,
) {
    let StatusWriter { client, node, mut desired, mut engine, mut exports, kernel, max_tracked } =
        writer;
    let api: Api<NodeTrace> = Api::all(client);
    let mut last: Option<(NodeTraceStatus, Instant)> = None;
    let mut last_attempt: Option<Instant> = None;
    let mut retry = false;
    let (mut desired_open, mut engine_open, mut exports_open) = (true, true, true);
    // What was sent before this task started counts as a change.
    desired.mark_changed();
    loop {
        let heartbeat = last.as_ref().map(|(_, at)| *at + HEARTBEAT);
        let wake = match (retry, last_attempt) {
            (true, Some(at)) => Some(at + WRITE_GAP),
            _ => heartbeat,
        };
        let timer = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = changed(&mut desired, &mut desired_open) => {}
            () = changed(&mut engine, &mut engine_open) => {}
            () = changed(&mut exports, &mut exports_open) => {}
            () = timer => {}
        }
        if !desired_open || !engine_open {
            return;
        }
        if let Some(at) = last_attempt {
            tokio::time::sleep_until(at + WRITE_GAP).await;
        }
        let Desired { spec, generation } = desired.borrow_and_update().clone();
        let engine = engine.borrow_and_update().clone();
        let Some(spec) = spec.filter(|_| engine.resolved) else { continue };
        let mut next =
            status::status(&spec, generation, &engine, &kernel, max_tracked, export_dropped());
        let unchanged = last.as_ref().is_some_and(|(l, _)| {
            NodeTraceStatus { heartbeat: None, conditions: Vec::new(), ..l.clone() } == next
        });
        if unchanged && !retry && heartbeat.is_some_and(|at| Instant::now() < at) {
            continue;
        }
        let now = Time(Timestamp::now());
        let previous = last.as_ref().map_or(&[][..], |(l, _)| &l.conditions);
        next.conditions = status::conditions(&next, &engine.gaps, previous, &now);
        next.heartbeat = Some(now);
        let patch = serde_json::json!({
            "apiVersion": "podtrace.dev/v1alpha1",
            "kind": "NodeTrace",
            "status": next,
        });
        last_attempt = Some(Instant::now());
        match api
            .patch_status(&node, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
        {
            Ok(_) => {
                on_result(Ok(()));
                last = Some((next, Instant::now()));
                retry = false;
            }
            Err(e) => {
                on_result(Err(&e));
                retry = true;
                tracing::warn!(error = %e, node, "writing NodeTrace status failed; retrying");
            }
        }
    }
}
