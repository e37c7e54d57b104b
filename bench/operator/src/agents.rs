//! Stand-ins for the node agents: per node the three watches a real agent holds
//! (`NodeTrace/<node>` by field selector, every PodTraceProfile, every MonitoringProfile), so
//! that the API server fans every settings edit out to as many watchers as in a cluster of
//! that size, and the status a real agent writes when every pod and probe attached
//! (`specFormat: 2`), once for the first spec (format 1: results as objects) and once for
//! format 2 (results as lines), so that the operator keeps realistic agent statuses.
//!
//! A settings edit is measured from the write to the moment the last agent's watch delivered
//! it ([`Agents::expect`] then [`Agents::wait`]). Heartbeats and status writes on pod changes
//! are not simulated: they are the agents' own writes, the same in either spec format.

use anyhow::{Result, bail};
use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use parking_lot::Mutex;
use podtrace_api::nodetrace::{PodAttachStatus, SpecFormat};
use podtrace_api::status::PodAttachState;
use podtrace_api::{MonitoringProfile, NodeTrace, NodeTraceStatus, PodTraceProfile};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// What the agents are waiting for.
#[derive(Clone, Debug, PartialEq)]
pub enum Wanted {
    /// PodTraceProfile `name` naming MonitoringProfile `profile`.
    PodTraceProfile {
        /// The PodTraceProfile (its PodTrace's name).
        name: String,
        /// The MonitoringProfile its first entry should name.
        profile: String,
    },
    /// MonitoringProfile `name` with `interval`.
    MonitoringProfile {
        /// The profile's name.
        name: String,
        /// Its new interval.
        interval: String,
    },
}

struct Target {
    wanted: Wanted,
    started: Instant,
    seen: Vec<bool>,
    count: usize,
    last: Duration,
}

#[derive(Default)]
struct Shared {
    target: Mutex<Option<Target>>,
    done: Notify,
    listed: Mutex<usize>,
    reported: Mutex<usize>,
}

impl Shared {
    fn arrived(&self, agent: usize, check: impl FnOnce(&Wanted) -> bool) {
        let mut target = self.target.lock();
        let Some(t) = target.as_mut() else { return };
        if t.seen[agent] || !check(&t.wanted) {
            return;
        }
        t.seen[agent] = true;
        t.count += 1;
        t.last = t.started.elapsed();
        if t.count == t.seen.len() {
            self.done.notify_waiters();
        }
    }
}

/// The simulated agents; their tasks stop when dropped.
pub struct Agents {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Agents {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

impl Agents {
    /// Starts one agent per node name, a few at a time (a DaemonSet rolls out gradually too).
    pub async fn start(client: &Client, nodes: Vec<String>) -> Result<Self> {
        let shared = Arc::new(Shared::default());
        let mut tasks = Vec::new();
        let total = nodes.len();
        for (i, node) in nodes.into_iter().enumerate() {
            tasks.push(tokio::spawn(agent(client.clone(), i, node, shared.clone())));
            if i % 50 == 49 {
                let want = i + 1;
                let start = Instant::now();
                while *shared.listed.lock() < want && start.elapsed() < Duration::from_secs(60) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        let agents = Self { shared, tasks };
        agents.wait_for(|s| *s.listed.lock() == total, "every agent listed").await?;
        Ok(agents)
    }

    async fn wait_for(&self, done: impl Fn(&Shared) -> bool, what: &str) -> Result<()> {
        let start = Instant::now();
        while !done(&self.shared) {
            if start.elapsed() > Duration::from_secs(600) {
                bail!("{what}: not after 600 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Waits until every agent has written its status.
    pub async fn reported(&self) -> Result<()> {
        let total = self.tasks.len();
        self.wait_for(|s| *s.reported.lock() == total, "every agent reported").await
    }

    /// From now on, records when each agent receives `wanted`.
    pub fn expect(&self, wanted: Wanted) {
        *self.shared.target.lock() = Some(Target {
            wanted,
            started: Instant::now(),
            seen: vec![false; self.tasks.len()],
            count: 0,
            last: Duration::ZERO,
        });
    }

    /// Waits until every agent received what [`expect`](Self::expect) named: the time from
    /// `expect` to the last agent.
    pub async fn wait(&self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let notified = self.shared.done.notified();
            {
                let target = self.shared.target.lock();
                let t = target.as_ref().expect("expect() first");
                if t.count == t.seen.len() {
                    return Ok(t.last);
                }
                if start.elapsed() > timeout {
                    bail!(
                        "{} of {} agents received {:?} after {timeout:?}",
                        t.count,
                        t.seen.len(),
                        t.wanted
                    );
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }
}

async fn agent(client: Client, i: usize, node: String, shared: Arc<Shared>) {
    let ptps = {
        let shared = shared.clone();
        watcher(Api::<PodTraceProfile>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .filter_map(move |e| {
                let shared = shared.clone();
                async move {
                    match e {
                        Ok(watcher::Event::Apply(p)) => {
                            let profile = p
                                .spec
                                .profiles
                                .first()
                                .and_then(|c| c.profile_ref.as_ref())
                                .map(|r| r.name.clone());
                            shared.arrived(i, |w| {
                                matches!(w, Wanted::PodTraceProfile { name, profile: want }
                                    if *name == p.name_any() && profile.as_ref() == Some(want))
                            });
                            None
                        }
                        Ok(watcher::Event::InitDone) => Some(()),
                        _ => None,
                    }
                }
            })
    };
    let mps = {
        let shared = shared.clone();
        watcher(Api::<MonitoringProfile>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .filter_map(move |e| {
                let shared = shared.clone();
                async move {
                    match e {
                        Ok(watcher::Event::Apply(p)) => {
                            shared.arrived(i, |w| {
                                matches!(w, Wanted::MonitoringProfile { name, interval }
                                    if *name == p.name_any() && p.spec.interval == *interval)
                            });
                            None
                        }
                        Ok(watcher::Event::InitDone) => Some(()),
                        _ => None,
                    }
                }
            })
    };
    let api: Api<NodeTrace> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let nodetrace = watcher(api.clone(), config).default_backoff().applied_objects();
    futures::pin_mut!(ptps, mps, nodetrace);
    let mut listed = 0;
    let mut reported = None;
    loop {
        tokio::select! {
            Some(()) = ptps.next() => listed += 1,
            Some(()) = mps.next() => listed += 1,
            Some(nt) = nodetrace.next() => {
                let Ok(nt) = nt else { continue };
                let format = nt.spec.format();
                if reported != Some(format) && !nt.spec.pods.is_empty() {
                    match report(&api, &nt, format).await {
                        Ok(()) => {
                            reported = Some(format);
                            if format == SpecFormat::Shared {
                                *shared.reported.lock() += 1;
                            }
                        }
                        Err(e) => eprintln!("agent {node}: status write failed: {e}"),
                    }
                }
            }
            else => return,
        }
        if listed == 2 {
            listed += 1;
            *shared.listed.lock() += 1;
        }
    }
}

/// What a real agent reports once every pod of `nt` attached: every probe attached with
/// tp_btf, every pod Attached (as the spec's `format` wants them), and the spec format it reads.
async fn report(api: &Api<NodeTrace>, nt: &NodeTrace, format: SpecFormat) -> kube::Result<()> {
    let results = NodeTraceStatus {
        pods: nt
            .spec
            .pods
            .iter()
            .map(|p| PodAttachStatus {
                uid: p.uid.clone(),
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                state: PodAttachState::Attached,
                reason: None,
                message: None,
            })
            .collect(),
        ..Default::default()
    }
    .for_format(format);
    let pods = nt.spec.pods.clone();
    let probes: Vec<_> = podtrace_api::Probe::ALL
        .iter()
        .map(|p| json!({"probe": p, "state": "Attached", "method": "tp_btf"}))
        .collect();
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"apiVersion": "podtrace.dev/v1alpha1", "kind": "NodeTrace", "status": {
        "specFormat": 2, "observedGeneration": nt.metadata.generation, "agentVersion": "bench",
        "heartbeat": now, "trackedPods": pods.len(), "attachedPods": pods.len(),
        "kernel": {"release": "6.1.0", "btf": true, "cgroupMode": "unified", "ebpfFilter": "cgroup"},
        "probes": probes, "pods": results.pods, "podResults": results.pod_results, "series": pods.len() * 60,
        "conditions": [{"type": "Ready", "status": "True", "reason": "AllPodsAttached",
            "message": "", "lastTransitionTime": now}]}});
    let params = PatchParams::apply("podtrace-agent").force();
    api.patch_status(&nt.name_any(), &params, &Patch::Apply(&status)).await?;
    Ok(())
}
