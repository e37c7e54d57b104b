//! `kubectl podtrace status`: every PodTrace with its per-node roll-up (the operator's
//! `status.nodes` lines, read by [`NodeSummary`]'s own parser) joined with what each node's
//! agent wrote in its NodeTrace status (series, drops, the kernel's reason for an unavailable
//! probe, the message of a pending or failed pod).
//!
//! ```text
//!  PodTrace.status ─ nodes[]: NodeSummary ─┐
//!                  └ conditions ───────────┼─► report() ─► Report ─► table | JSON | YAML
//!  NodeTrace.status (per node, by name) ───┘   (pure)
//! ```

use crate::cluster::Cluster;
use crate::error::{Result, api, describe};
use kube::{Api, ResourceExt, api::ListParams};
use podtrace_api::{
    NodeTrace, PodTrace,
    nodetrace::PodTraceRef,
    podtrace::NodeSummary,
    status::{PodAttachState, ProbeState, name_of},
};
use serde::Serialize;
use std::{collections::BTreeMap, fmt::Write};

/// What `status` prints.
#[derive(Serialize, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// One entry per PodTrace, by namespace and name.
    pub pod_traces: Vec<PodTraceReport>,
    /// What could not be read (such as NodeTraces the user may not list): the report is
    /// partial where these say.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
}

/// One PodTrace.
#[derive(Serialize, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodTraceReport {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The effective profile.
    pub profile: Option<String>,
    /// Pods the selector matches.
    pub matched_pods: i32,
    /// Nodes whose agent attached to every matched pod there.
    pub nodes_ready: usize,
    /// Nodes with matched pods.
    pub nodes_total: usize,
    /// The operator's estimate of the series the matched pods produce.
    pub series_estimate: i64,
    /// Whether the PodTrace is paused.
    pub paused: bool,
    /// When tracing stops (spec.duration), RFC 3339; past when the Expired condition is True.
    pub expires_at: Option<String>,
    /// Whether the operator has seen the current spec (status.observedGeneration equals
    /// metadata.generation).
    pub up_to_date: bool,
    /// The conditions, `type=status (reason)`.
    pub conditions: BTreeMap<String, String>,
    /// Per node.
    pub nodes: Vec<NodeReport>,
    /// Why something is not working, one sentence each.
    pub failures: Vec<String>,
}

/// One node of a PodTrace.
#[derive(Serialize, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    /// Node name.
    pub node: String,
    /// Matched pods on the node.
    pub pods: i32,
    /// Pods the agent attached to.
    pub attached: i32,
    /// Pods not attached yet.
    pub pending: i32,
    /// Pods the agent cannot attach to.
    pub failed: i32,
    /// Probe name → attach method (`tp_btf`), or `Unavailable`.
    pub probes: BTreeMap<String, String>,
    /// Reasons of the pending and failed pods.
    pub reasons: Vec<String>,
    /// What the node's agent reports for the whole node (shared by every PodTrace there);
    /// absent when it has not written its NodeTrace status.
    pub agent: Option<AgentReport>,
}

/// A node agent's own figures, from its NodeTrace status.
#[derive(Serialize, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentReport {
    /// Series the agent exports.
    pub series: i64,
    /// Series dropped by maxSeriesPerPod since it started.
    pub series_dropped: i64,
    /// Samples dropped by push exporters since it started.
    pub export_dropped: i64,
    /// Its last report (RFC 3339).
    pub heartbeat: Option<String>,
    /// Its version.
    pub version: Option<String>,
}

/// Reads the PodTraces of the scope (`name` only, if given) and every NodeTrace.
pub async fn fetch(cluster: &Cluster, name: Option<&str>) -> Result<Report> {
    let client = cluster.client.clone();
    let (api_pt, scope): (Api<PodTrace>, _) = match &cluster.namespace {
        Some(ns) => (Api::namespaced(client.clone(), ns), format!("in namespace {ns}")),
        None => (Api::all(client.clone()), "in any namespace".to_owned()),
    };
    let mut pod_traces = match name {
        Some(n) => vec![api_pt.get(n).await.map_err(api(format!("get podtrace {n} {scope}")))?],
        None => {
            api_pt
                .list(&ListParams::default())
                .await
                .map_err(api(format!("list podtraces {scope}")))?
                .items
        }
    };
    pod_traces.sort_by_key(|p| (p.namespace(), p.name_any()));
    let mut unreadable = Vec::new();
    let node_traces = match Api::<NodeTrace>::all(client).list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => {
            unreadable.push(format!(
                "list nodetraces: {}; per-node series, drops and the agents' reasons are missing",
                describe(&e)
            ));
            Vec::new()
        }
    };
    let mut report = report(&pod_traces, &node_traces);
    report.unreadable = unreadable;
    Ok(report)
}

/// The report of `pod_traces`, with the agents' side from `node_traces` (pure).
pub fn report(pod_traces: &[PodTrace], node_traces: &[NodeTrace]) -> Report {
    let by_node: BTreeMap<String, &NodeTrace> =
        node_traces.iter().map(|n| (n.name_any(), n)).collect();
    let pod_traces = pod_traces.iter().map(|pt| pod_trace(pt, &by_node)).collect();
    Report { pod_traces, unreadable: Vec::new() }
}

fn pod_trace(pt: &PodTrace, node_traces: &BTreeMap<String, &NodeTrace>) -> PodTraceReport {
    let status = pt.status.clone().unwrap_or_default();
    let me = PodTraceRef { namespace: pt.namespace().unwrap_or_default(), name: pt.name_any() };
    let mut failures = Vec::new();
    for c in &status.conditions {
        let bad = match c.type_.as_str() {
            "Ready" => c.status == "False",
            "Degraded" => c.status == "True",
            _ => false,
        };
        if bad {
            failures.push(format!("{}={} ({}): {}", c.type_, c.status, c.reason, c.message));
        }
    }
    let nodes: Vec<NodeReport> = status
        .nodes
        .iter()
        .map(|summary| node(summary, node_traces.get(&summary.node).copied(), &me, &mut failures))
        .collect();
    let generation = pt.metadata.generation;
    PodTraceReport {
        namespace: me.namespace.clone(),
        name: me.name.clone(),
        profile: status.effective_profile.clone(),
        matched_pods: status.matched_pods,
        nodes_ready: nodes.iter().filter(|n| n.attached == n.pods).count(),
        nodes_total: nodes.len(),
        series_estimate: status.series_estimate,
        paused: pt.spec.paused,
        expires_at: status.expires_at.as_ref().map(|t| t.0.to_string()),
        up_to_date: generation.is_none() || status.observed_generation == generation,
        conditions: status
            .conditions
            .iter()
            .map(|c| (c.type_.clone(), format!("{} ({})", c.status, c.reason)))
            .collect(),
        nodes,
        failures,
    }
}

fn node(
    summary: &NodeSummary,
    nt: Option<&NodeTrace>,
    me: &PodTraceRef,
    failures: &mut Vec<String>,
) -> NodeReport {
    let node = &summary.node;
    let agent_status = nt.and_then(|n| n.status.as_ref());
    let mut probes = BTreeMap::new();
    for p in &summary.probes {
        let how = match (p.state, p.method) {
            (ProbeState::Attached, Some(method)) => name_of(&method),
            (state, _) => name_of(&state),
        };
        if p.state == ProbeState::Unavailable {
            let why = agent_status
                .and_then(|s| s.probes.iter().find(|q| q.probe == p.probe))
                .and_then(|q| q.reason.clone())
                .unwrap_or_else(|| "see the node's NodeTrace status.probes".into());
            failures.push(format!("{node}: probe {} Unavailable: {why}", name_of(&p.probe)));
        }
        probes.insert(name_of(&p.probe), how);
    }
    if let (Some(nt), Some(s)) = (nt, agent_status) {
        // The pods of this PodTrace on the node (format 2 names the requesters; a format-1
        // line does not: then every pod of the PodTrace's namespace there).
        let mine = |uid: &str| {
            nt.spec.pods.iter().any(|p| {
                p.uid == uid
                    && (p.requested_by.contains(me)
                        || (p.requested_by.is_empty() && p.namespace == me.namespace))
            })
        };
        for r in s.attach_results().filter(|r| r.state != PodAttachState::Attached) {
            if mine(&r.uid) {
                failures.push(format!(
                    "{node}: pod {}/{} {} ({}){}",
                    r.namespace,
                    r.name,
                    name_of(&r.state),
                    r.reason.as_ref().map(name_of).unwrap_or_else(|| "no reason given".into()),
                    r.message.as_ref().map(|m| format!(": {m}")).unwrap_or_default()
                ));
            }
        }
        for c in s.conditions.iter().filter(|c| c.type_ == "Degraded" && c.status == "True") {
            if c.reason == "DataUnavailable" {
                failures.push(format!("{node}: agent Degraded ({}): {}", c.reason, c.message));
            }
        }
    }
    let reasons: Vec<String> = summary.reasons.iter().map(name_of).collect();
    if reasons.iter().any(|r| r == "AgentNotReporting") {
        failures.push(format!(
            "{node}: the agent has not reported (no NodeTrace status, or none for three heartbeats): is its pod running?"
        ));
    }
    NodeReport {
        node: node.clone(),
        pods: summary.pods,
        attached: summary.attached,
        pending: summary.pending,
        failed: summary.failed,
        probes,
        reasons,
        agent: agent_status.map(|s| AgentReport {
            series: s.series,
            series_dropped: s.series_dropped,
            export_dropped: s.export_dropped,
            heartbeat: s.heartbeat.as_ref().map(|t| t.0.to_string()),
            version: s.agent_version.clone(),
        }),
    }
}

/// The report as a table: a line per PodTrace, its nodes indented below it, then what failed.
pub fn render(report: &Report) -> String {
    let mut s = String::new();
    if report.pod_traces.is_empty() {
        s.push_str("No PodTraces found.\n");
    }
    for (i, pt) in report.pod_traces.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        // Columns as wide as their longest value, as kubectl's tables.
        let ns = pt.namespace.len().max(9);
        let name = pt.name.len().max(4);
        let profile = pt.profile.as_deref().map_or(1, str::len).max(7);
        let node = pt.nodes.iter().map(|n| n.node.len()).max().unwrap_or(0).max(4);
        let _ = writeln!(
            s,
            "{:<ns$} {:<name$} {:<profile$} {:>7} {:>11} {:>13} CONDITIONS",
            "NAMESPACE", "NAME", "PROFILE", "MATCHED", "READY NODES", "SERIES (EST.)"
        );
        let conditions: Vec<String> =
            pt.conditions.iter().map(|(t, v)| format!("{t}={v}")).collect();
        let _ = writeln!(
            s,
            "{:<ns$} {:<name$} {:<profile$} {:>7} {:>11} {:>13} {}{}{}{}",
            pt.namespace,
            pt.name,
            pt.profile.as_deref().unwrap_or("-"),
            pt.matched_pods,
            format!("{}/{}", pt.nodes_ready, pt.nodes_total),
            pt.series_estimate,
            conditions.join(" "),
            if pt.paused { " (paused)" } else { "" },
            pt.expires_at.as_ref().map(|t| format!(" (until {t})")).unwrap_or_default(),
            if pt.up_to_date { "" } else { " (the operator has not seen the last edit yet)" },
        );
        if !pt.nodes.is_empty() {
            let _ = writeln!(
                s,
                "  {:<node$} {:>4} {:>8} {:>7} {:>6} {:>7} {:>14} {:>14}  PROBES",
                "NODE",
                "PODS",
                "ATTACHED",
                "PENDING",
                "FAILED",
                "SERIES",
                "SERIES DROPPED",
                "EXPORT DROPPED"
            );
        }
        for n in &pt.nodes {
            let agent = |f: fn(&AgentReport) -> i64| {
                n.agent.as_ref().map_or("-".into(), |a| f(a).to_string())
            };
            let probes: Vec<String> =
                n.probes.iter().map(|(p, how)| format!("{p}:{how}")).collect();
            let _ = writeln!(
                s,
                "  {:<node$} {:>4} {:>8} {:>7} {:>6} {:>7} {:>14} {:>14}  {}",
                n.node,
                n.pods,
                n.attached,
                n.pending,
                n.failed,
                agent(|a| a.series),
                agent(|a| a.series_dropped),
                agent(|a| a.export_dropped),
                if probes.is_empty() { "-".into() } else { probes.join(" ") }
            );
        }
        for f in &pt.failures {
            let _ = writeln!(s, "  ! {f}");
        }
    }
    for u in &report.unreadable {
        let _ = writeln!(s, "warning: {u}");
    }
    s
}

#[cfg(test)]
mod tests;
