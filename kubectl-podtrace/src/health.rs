//! `kubectl podtrace health`: a [`Level`] for every agent and for the operator, from what the
//! API server shows with the user's credentials.
//!
//! The agents' and the operator's `grpc.health.v1` services cannot be reached through the API
//! server (its pod proxy speaks HTTP/1.1, gRPC needs HTTP/2), so each service is read where the
//! API server reflects it:
//!
//! | agent service | read from | level when not serving |
//! |---|---|---|
//! | `""` (engine runs, configuration loaded) | the pod's Ready condition: the kubelet's readiness probe asks exactly this service | Unhealthy |
//! | `podtrace.kubernetes` (watches and status writes work) | the NodeTrace's `status.heartbeat`, written at least every 30 s: older than 90 s means the agent cannot report | Degraded |
//! | `podtrace.probes`, `podtrace.collectors` | the NodeTrace's `Degraded` condition (ProbesUnavailable, DataUnavailable, PodsPending) | Healthy |
//! | `podtrace.exporters` | `podtrace_agent_export_connected` on the agent's `/metrics`, through the pod proxy | Healthy |
//!
//! The operator: Unhealthy without a Ready replica (its readiness probe is its gRPC health),
//! Degraded when no Ready replica holds an unexpired leader Lease (nothing reconciles),
//! Healthy when some replicas are not Ready, else Optimal. What cannot be read (a 403, an agent
//! whose `/metrics` does not answer) is named in the reasons, never taken as healthy silently.

use crate::cluster::Cluster;
use crate::error::{Result, describe};
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{Api, ResourceExt, api::ListParams};
use podtrace_api::{NodeTrace, health::Level, top::parse_line};
use serde::Serialize;
use std::{collections::BTreeMap, fmt::Write};

/// An agent whose NodeTrace heartbeat is older than this cannot report (three heartbeats of
/// 30 s, as the operator's AgentNotReporting).
pub const STALE_AFTER: SignedDuration = SignedDuration::from_secs(90);

/// What `health` prints.
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The worst level of all.
    pub level: Level,
    /// The operator.
    pub operator: OperatorHealth,
    /// Every agent, by node.
    pub agents: Vec<AgentHealth>,
}

/// The operator's health.
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OperatorHealth {
    /// Its level.
    pub level: Level,
    /// Replica pod → Ready.
    pub replicas: BTreeMap<String, bool>,
    /// The holder of the unexpired leader Lease.
    pub leader: Option<String>,
    /// Why it is not Optimal, and what could not be read.
    pub reasons: Vec<String>,
}

/// One agent's health.
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentHealth {
    /// The node.
    pub node: String,
    /// The agent pod (`-` when a NodeTrace's node has none).
    pub pod: String,
    /// Its level.
    pub level: Level,
    /// Why it is not Optimal, and what could not be read.
    pub reasons: Vec<String>,
}

/// Everything `health` reads, for [`report`].
pub struct Observed {
    /// The agent pods.
    pub agents: Vec<Pod>,
    /// Every NodeTrace, or why they could not be listed.
    pub node_traces: Result<Vec<NodeTrace>, String>,
    /// Each agent pod's `/metrics` text, or why it could not be read.
    pub metrics: BTreeMap<String, Result<String, String>>,
    /// The operator pods.
    pub operators: Vec<Pod>,
    /// The leader Lease (`Ok(None)` when there is none), or why it could not be read.
    pub lease: Result<Option<Lease>, String>,
    /// The time of the reading.
    pub now: Timestamp,
}

/// Reads what [`report`] needs.
pub async fn observe(
    cluster: &Cluster,
    system_namespace: &str,
    agent_selector: &str,
    operator_selector: &str,
    lease_name: &str,
) -> Result<Observed> {
    let agents = cluster.pods(system_namespace, agent_selector).await?;
    let operators = cluster.pods(system_namespace, operator_selector).await?;
    let node_traces = Api::<NodeTrace>::all(cluster.client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| format!("list nodetraces: {}", describe(&e)));
    let lease = Api::<Lease>::namespaced(cluster.client.clone(), system_namespace)
        .get_opt(lease_name)
        .await
        .map_err(|e| format!("get lease {lease_name} in {system_namespace}: {}", describe(&e)));
    let reads = agents.iter().filter(|p| ready(p)).map(|pod| async move {
        let text = cluster.pod_get(pod, "metrics", "/metrics").await;
        (pod.name_any(), text.map_err(|e| e.to_string()))
    });
    let metrics = futures::future::join_all(reads).await.into_iter().collect();
    Ok(Observed { agents, node_traces, metrics, operators, lease, now: Timestamp::now() })
}

/// Whether a pod's Ready condition is True.
fn ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.into_iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Why a pod is not Ready, in a few words.
fn not_ready(pod: &Pod) -> String {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Unknown");
    let mut why = format!("pod not Ready (phase {phase}");
    for c in status.and_then(|s| s.container_statuses.as_ref()).into_iter().flatten() {
        if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let _ = write!(why, "; {} waiting: {}", c.name, w.reason.as_deref().unwrap_or("?"));
        }
        if c.restart_count > 0 {
            let _ = write!(why, "; {} restarted {} times", c.name, c.restart_count);
        }
    }
    why + "): its gRPC readiness (the engine runs with a configuration) fails, or it is not running"
}

/// The report of what was observed (pure).
pub fn report(o: &Observed) -> Report {
    let mut agents = agent_levels(o);
    agents.sort_by(|a, b| (&a.node, &a.pod).cmp(&(&b.node, &b.pod)));
    let operator = operator_level(o);
    let level =
        agents.iter().map(|a| a.level).chain([operator.level]).max().unwrap_or(Level::Optimal);
    Report { level, operator, agents }
}

fn agent_levels(o: &Observed) -> Vec<AgentHealth> {
    let node_traces: BTreeMap<String, &NodeTrace> = match &o.node_traces {
        Ok(list) => list.iter().map(|n| (n.name_any(), n)).collect(),
        Err(_) => BTreeMap::new(),
    };
    let mut out = Vec::new();
    for pod in &o.agents {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        let mut h = AgentHealth {
            node: node.clone(),
            pod: pod.name_any(),
            level: Level::Optimal,
            reasons: Vec::new(),
        };
        if !ready(pod) {
            h.level = Level::Unhealthy;
            h.reasons.push(not_ready(pod));
        }
        match (&o.node_traces, node_traces.get(&node)) {
            (Err(e), _) => h.reasons.push(format!("reporting not checked: {e}")),
            (Ok(_), None) => h.reasons.push(format!(
                "no NodeTrace {node} (no traced pods on this node): its reporting is not checked"
            )),
            (Ok(_), Some(nt)) => node_trace_health(nt, o.now, &mut h),
        }
        match o.metrics.get(&h.pod) {
            Some(Ok(text)) => exporters(text, &mut h),
            Some(Err(e)) => h.reasons.push(format!("exporters not checked: {e}")),
            None => {}
        }
        out.push(h);
    }
    // A NodeTrace whose node has no agent pod: nothing measures its pods.
    if o.node_traces.is_ok() {
        let orphans: Vec<&String> =
            node_traces.keys().filter(|n| !out.iter().any(|a| &a.node == *n)).collect();
        for name in orphans {
            out.push(AgentHealth {
                node: name.clone(),
                pod: "-".into(),
                level: Level::Unhealthy,
                reasons: vec![format!(
                    "NodeTrace {name} lists traced pods but no agent pod runs on the node (DaemonSet nodeSelector or tolerations?)"
                )],
            });
        }
    }
    out
}

fn node_trace_health(nt: &NodeTrace, now: Timestamp, h: &mut AgentHealth) {
    let status = nt.status.as_ref();
    match status.and_then(|s| s.heartbeat.as_ref()) {
        Some(t) if now.duration_since(t.0) <= STALE_AFTER => {}
        other => {
            h.level = h.level.max(Level::Degraded);
            let since = other
                .map_or("never".into(), |t| format!("{}s ago", now.duration_since(t.0).as_secs()));
            h.reasons.push(format!(
                "last NodeTrace status write {since} (every 30 s when working): the agent cannot reach the API server or may not patch nodetraces/status (see its log)"
            ));
        }
    }
    let conditions = status.map(|s| s.conditions.as_slice()).unwrap_or_default();
    for c in conditions.iter().filter(|c| c.type_ == "Degraded" && c.status == "True") {
        h.level = h.level.max(Level::Healthy);
        let mut why = format!("NodeTrace Degraded ({})", c.reason);
        if !c.message.is_empty() {
            let _ = write!(why, ": {}", c.message);
        }
        if c.reason == "ProbesUnavailable" {
            let probes = status.map(|s| s.probes.as_slice()).unwrap_or_default();
            for p in probes.iter().filter(|p| p.reason.is_some()) {
                let _ = write!(
                    why,
                    "; {}: {}",
                    podtrace_api::status::name_of(&p.probe),
                    p.reason.as_deref().unwrap_or_default()
                );
            }
        }
        h.reasons.push(why);
    }
}

fn exporters(text: &str, h: &mut AgentHealth) {
    for (name, labels, value) in text.lines().filter_map(parse_line) {
        if name == "podtrace_agent_export_connected" && value == 0.0 {
            h.level = h.level.max(Level::Healthy);
            let exporter = labels.get("exporter").map_or("?", String::as_str);
            h.reasons.push(format!("exporter {exporter} not connected to its broker"));
        }
    }
}

fn operator_level(o: &Observed) -> OperatorHealth {
    let replicas: BTreeMap<String, bool> =
        o.operators.iter().map(|p| (p.name_any(), ready(p))).collect();
    let mut h =
        OperatorHealth { level: Level::Optimal, replicas, leader: None, reasons: Vec::new() };
    if h.replicas.is_empty() {
        h.level = Level::Unhealthy;
        h.reasons.push("no operator pod found: pass --system-namespace (and --operator-selector) where podtrace is installed".into());
        return h;
    }
    for pod in o.operators.iter().filter(|p| !ready(p)) {
        h.reasons.push(format!("{}: {}", pod.name_any(), not_ready(pod)));
    }
    let ready_count = h.replicas.values().filter(|r| **r).count();
    if ready_count == 0 {
        h.level = Level::Unhealthy;
        return h;
    }
    match &o.lease {
        Err(e) => h.reasons.push(format!("leader not checked: {e}")),
        Ok(lease) => {
            let spec = lease.as_ref().and_then(|l| l.spec.as_ref());
            let holder = spec.and_then(|s| s.holder_identity.clone());
            let expires = spec.and_then(|s| {
                let renewed = s.renew_time.as_ref()?.0;
                renewed
                    .checked_add(SignedDuration::from_secs(i64::from(s.lease_duration_seconds?)))
                    .ok()
            });
            let fresh = expires.is_some_and(|e| e >= o.now);
            match holder {
                Some(holder) if fresh && h.replicas.get(&holder) == Some(&true) => {
                    h.leader = Some(holder)
                }
                holder => {
                    h.level = Level::Degraded;
                    h.reasons.push(format!(
                        "no Ready replica holds the leader Lease (holder {}, {}): nothing reconciles PodTraces until one takes it",
                        holder.as_deref().unwrap_or("none"),
                        if fresh { "renewed in time" } else { "expired or never renewed" }
                    ));
                }
            }
        }
    }
    if ready_count < h.replicas.len() {
        h.level = h.level.max(Level::Healthy);
    }
    h
}

/// The report as a table: the operator's line, then one per agent.
pub fn render(r: &Report) -> String {
    let o = &r.operator;
    let pods: Vec<&str> = o.replicas.keys().map(String::as_str).collect();
    let mut reasons = o.reasons.clone();
    if let Some(l) = &o.leader {
        reasons.insert(0, format!("leader {l}"));
    }
    let operator_pods = if pods.is_empty() { "-".to_owned() } else { pods.join(",") };
    let mut lines = vec![("operator", "-", operator_pods.as_str(), o.level, reasons.join("; "))];
    for a in &r.agents {
        lines.push(("agent", &a.node, &a.pod, a.level, a.reasons.join("; ")));
    }
    // Columns as wide as their longest value, as kubectl's tables.
    let node = lines.iter().map(|l| l.1.len()).max().unwrap_or(0).max(4);
    let pod = lines.iter().map(|l| l.2.len()).max().unwrap_or(0).max(3);
    let mut s =
        format!("{:<9} {:<node$} {:<pod$} {:<9} REASONS\n", "COMPONENT", "NODE", "POD", "LEVEL");
    for (component, n, p, level, why) in lines {
        let _ = writeln!(s, "{component:<9} {n:<node$} {p:<pod$} {level:<9} {why}");
    }
    let _ = writeln!(s, "\noverall: {}", r.level);
    s
}

#[cfg(test)]
mod tests;
