//! A PodTrace's status: matched pods, the per-node roll-up of the agents' NodeTrace statuses,
//! the effective profile, the series estimate, the countdown of `spec.duration` and the
//! conditions. Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use podtrace_api::hash::profile_hash;
use podtrace_api::merge;
use podtrace_api::nodetrace::NodeTraceStatus;
use podtrace_api::podtrace::NodeSummary;
use podtrace_api::status::{PodAttachReason, PodAttachState, condition, find_condition};
use podtrace_api::{MonitoringProfileSpec, PodTrace, PodTraceStatus};
use std::collections::{BTreeMap, BTreeSet};

use crate::desired::TraceSet;
use crate::expiry;
use crate::index::{PodIndex, ProjectedPod};

/// Condition types of a PodTrace.
pub const READY: &str = "Ready";
/// Some matched pods could not be attached.
pub const DEGRADED: &str = "Degraded";
/// `spec.paused` is true.
pub const PAUSED: &str = "Paused";
/// `spec.duration` has elapsed (present only while `spec.duration` is set).
pub const EXPIRED: &str = "Expired";

/// The series a pod produces with `spec`, from the agents' metric catalog (see
/// [`podtrace_api::catalog::series_per_pod`]): capped at the profile's budget, for capacity
/// planning.
pub fn series_estimate(spec: &MonitoringProfileSpec, containers: usize) -> i64 {
    podtrace_api::catalog::series_per_pod(spec, containers)
}

/// Computes the status of `pt` from the pod index, the profiles and the NodeTrace statuses,
/// keeping `lastTransitionTime` of conditions whose status did not change.
pub fn podtrace_status<'a, L: Fn(&str) -> Option<MonitoringProfileSpec>>(
    pt: &PodTrace,
    index: &PodIndex,
    profiles: &TraceSet<'_, L>,
    node_status: impl Fn(&str) -> Option<&'a NodeTraceStatus>,
    now: &Time,
) -> PodTraceStatus {
    let world = profiles.world();
    let matched = world.matched(pt, index);
    let generation = pt.metadata.generation;
    let countdown = expiry::countdown(pt, now.0);
    let expires_at = countdown.as_ref().map(expiry::expires_at);
    let mut status = PodTraceStatus {
        observed_generation: generation,
        matched_pods: matched.len() as i32,
        expires_at: expires_at.clone().and_then(Result::ok).map(Time),
        countdown,
        ..Default::default()
    };
    let expired = expiry::expired(pt, world.now);
    let refusal = world.cluster_tracing.refusal(pt);

    // The profile per pod; with no pods, the one an unowned pod would get.
    let resolved: Result<Vec<_>, _> = if matched.is_empty() {
        profiles.resolve(pt, None).map(|p| vec![(None, p)])
    } else {
        matched
            .iter()
            .map(|p| profiles.resolve(pt, p.owner_kind.as_ref()).map(|e| (Some(*p), e)))
            .collect()
    };
    let ready = match (&resolved, refusal) {
        (_, Some(refusal)) => (false, "NamespaceSelectorNotAllowed", refusal),
        (Err(e), _) => (false, e.reason(), e.to_string()),
        (Ok(_), _) if pt.spec.paused => {
            (false, "Paused", "spec.paused is true: the agents do not trace its pods".into())
        }
        (Ok(_), _) if expired => {
            (false, "Expired", "spec.duration has elapsed: the agents do not trace its pods".into())
        }
        (Ok(_), _) => (
            true,
            "NodeTracesWritten",
            format!("{} pods configured on their nodes' NodeTrace", matched.len()),
        ),
    };
    let mut degraded = (false, "AllAttached", "no matched pod is failed or stuck".to_string());
    if let Ok(resolved) = &resolved {
        let names: BTreeSet<&str> = resolved.iter().map(|(_, p)| p.name.as_str()).collect();
        status.effective_profile = Some(names.into_iter().collect::<Vec<_>>().join("+"));
        let specs: BTreeMap<&str, &MonitoringProfileSpec> =
            resolved.iter().map(|(_, p)| (p.hash.as_str(), &p.spec)).collect();
        let merged = merge::merge_profiles(specs.values().copied()).unwrap_or_default();
        status.profile_hash = Some(profile_hash(&merged));
        status.series_estimate = resolved
            .iter()
            .filter_map(|(pod, p)| Some(series_estimate(&p.spec, traced_containers(pt, (*pod)?))))
            .sum();
        if world.in_effect(pt) {
            status.nodes = node_summaries(&matched, resolved, &node_status);
            let ready_nodes = status.nodes.iter().filter(|n| n.attached == n.pods).count();
            status.ready_nodes = Some(format!("{ready_nodes}/{}", status.nodes.len()));
            let failed: i32 = status.nodes.iter().map(|n| n.failed).sum();
            let stuck: i32 =
                status.nodes.iter().filter(|n| !n.reasons.is_empty()).map(|n| n.pending).sum();
            if failed + stuck > 0 {
                degraded = (
                    true,
                    "PodsNotAttached",
                    format!(
                        "{failed} pods failed and {stuck} are pending with a reason; see status.nodes"
                    ),
                );
            }
        }
    }
    let paused = if pt.spec.paused {
        (true, "Paused", "spec.paused is true".to_string())
    } else {
        (false, "Active", "spec.paused is false".to_string())
    };
    let expiry = pt.spec.duration.as_ref().map(|duration| match &expires_at {
        Some(Err(e)) => (false, "InvalidDuration", format!("spec.duration: {e}")),
        Some(Ok(end)) if expired => (
            true,
            "DurationElapsed",
            format!(
                "spec.duration {duration} elapsed at {end}: the agents no longer trace its pods; \
                 set another duration to trace again, or remove it to trace without end"
            ),
        ),
        Some(Ok(end)) => {
            (false, "Counting", format!("tracing stops at {end} (spec.duration {duration})"))
        }
        None => (false, "Counting", "the countdown starts now".to_string()),
    });
    let old = pt.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let conditions = [(READY, ready), (DEGRADED, degraded), (PAUSED, paused)];
    status.conditions = conditions
        .into_iter()
        .chain(expiry.map(|e| (EXPIRED, e)))
        .map(|(type_, (on, reason, message))| {
            condition(old, type_, on, reason, message, generation, now)
        })
        .collect();
    status
}

fn traced_containers(pt: &PodTrace, pod: &ProjectedPod) -> usize {
    if pt.spec.containers.is_empty() {
        pod.containers.len()
    } else {
        pod.containers.iter().filter(|c| pt.spec.containers.iter().any(|n| **n == *c.name)).count()
    }
}

fn node_summaries<'a>(
    matched: &[&ProjectedPod],
    resolved: &[(Option<&ProjectedPod>, std::sync::Arc<podtrace_api::EffectiveProfile>)],
    node_status: &impl Fn(&str) -> Option<&'a NodeTraceStatus>,
) -> Vec<NodeSummary> {
    let mut by_node: BTreeMap<&str, Vec<&ProjectedPod>> = BTreeMap::new();
    for pod in matched {
        by_node.entry(pod.node.as_deref().unwrap_or_default()).or_default().push(pod);
    }
    let probes: BTreeSet<_> = resolved.iter().flat_map(|(_, p)| p.spec.probes.active()).collect();
    by_node
        .into_iter()
        .map(|(node, pods)| {
            let status = node_status(node);
            let mut summary =
                NodeSummary { node: node.into(), pods: pods.len() as i32, ..Default::default() };
            let mut reasons = BTreeSet::new();
            for pod in pods {
                let found = status.and_then(|s| s.attach_results().find(|p| *p.uid == *pod.uid));
                match found.map(|p| (p.state, p.reason)) {
                    Some((PodAttachState::Attached, _)) => summary.attached += 1,
                    Some((PodAttachState::Failed, reason)) => {
                        summary.failed += 1;
                        reasons.extend(reason);
                    }
                    Some((PodAttachState::Pending, reason)) => {
                        summary.pending += 1;
                        reasons.extend(reason);
                    }
                    None => summary.pending += 1,
                }
            }
            if status.is_none() {
                reasons.insert(PodAttachReason::AgentNotReporting);
            }
            summary.reasons = reasons.into_iter().collect();
            summary.probes = status
                .map(|s| s.probes.iter().filter(|p| probes.contains(&p.probe)).cloned().collect())
                .unwrap_or_default();
            summary
        })
        .collect()
}

/// The condition of `type_` in `status`.
pub fn find<'a>(status: Option<&'a PodTraceStatus>, type_: &str) -> Option<&'a Condition> {
    find_condition(&status?.conditions, type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::tests::pod;
    use podtrace_api::nodetrace::{PodAttachStatus, SpecFormat};
    use podtrace_api::presets::Preset;

    fn now() -> Time {
        Time("2026-11-22T00:00:00Z".parse().unwrap())
    }

    fn podtrace(profile: Option<&str>) -> PodTrace {
        let mut pt = crate::fixtures::podtrace_of("ns", "t", "web", profile);
        pt.metadata.generation = Some(3);
        pt
    }

    fn presets(name: &str) -> Option<MonitoringProfileSpec> {
        Preset::from_name(name).map(Preset::spec)
    }

    fn index() -> PodIndex {
        let mut index = PodIndex::default();
        for (name, node) in [("a", "n1"), ("b", "n1"), ("c", "n2")] {
            index.apply(pod("ns", name, Some(node), &[("app", "web")], &[("c", Some("id"))]));
        }
        index.apply(pod("ns", "other", Some("n2"), &[("app", "db")], &[]));
        index
    }

    fn attach(
        name: &str,
        state: PodAttachState,
        reason: Option<PodAttachReason>,
    ) -> PodAttachStatus {
        PodAttachStatus {
            uid: format!("uid-ns-{name}"),
            namespace: "ns".into(),
            name: name.into(),
            state,
            reason,
            message: None,
        }
    }

    #[test]
    fn rollup_counts_attached_pending_and_failed_per_node_with_reasons() {
        let pt = podtrace(Some("minimal"));
        let n1 = NodeTraceStatus {
            pods: vec![
                attach("a", PodAttachState::Attached, None),
                attach("b", PodAttachState::Failed, Some(PodAttachReason::CgroupNotFound)),
            ],
            ..Default::default()
        };
        let set = TraceSet::new([&pt], presets);
        let idx = index();
        let status = podtrace_status(&pt, &idx, &set, |n| (n == "n1").then_some(&n1), &now());
        assert_eq!(
            status.nodes,
            vec![
                NodeSummary {
                    node: "n1".into(),
                    pods: 2,
                    attached: 1,
                    pending: 0,
                    failed: 1,
                    probes: vec![],
                    reasons: vec![PodAttachReason::CgroupNotFound],
                },
                NodeSummary {
                    node: "n2".into(),
                    pods: 1,
                    attached: 0,
                    pending: 1,
                    failed: 0,
                    probes: vec![],
                    reasons: vec![PodAttachReason::AgentNotReporting],
                },
            ]
        );
        assert_eq!(status.matched_pods, 3);
        assert_eq!(status.ready_nodes.as_deref(), Some("0/2"));
        assert_eq!(status.effective_profile.as_deref(), Some("minimal"));
        assert_eq!(status.observed_generation, Some(3));
        // minimal: 2 resources × (usage, limit, utilization, alert) and 4 process series.
        assert_eq!(status.series_estimate, 3 * (2 * 4 + 4));
        let degraded = status.conditions.iter().find(|c| c.type_ == DEGRADED).unwrap();
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "PodsNotAttached")
        );
    }

    /// An agent with a format-2 spec writes its results as lines (`podResults`): the roll-up
    /// is the same as from the objects of format 1.
    #[test]
    fn rollup_reads_the_results_of_a_format_2_agent_from_its_lines() {
        let pt = podtrace(Some("minimal"));
        let objects = NodeTraceStatus {
            pods: vec![
                attach("a", PodAttachState::Attached, None),
                attach("b", PodAttachState::Pending, Some(PodAttachReason::CgroupNotFound)),
            ],
            ..Default::default()
        };
        let lines = objects.clone().for_format(SpecFormat::Shared);
        assert!(lines.pods.is_empty() && lines.pod_results.len() == 2);
        let set = TraceSet::new([&pt], presets);
        let idx = index();
        let rollup = |s: &NodeTraceStatus| {
            podtrace_status(&pt, &idx, &set, |n| (n == "n1").then_some(s), &now()).nodes
        };
        let from_lines = rollup(&lines);
        assert_eq!(from_lines, rollup(&objects));
        let n1 = &from_lines[0];
        assert_eq!((n1.attached, n1.pending, n1.failed), (1, 1, 0));
        assert_eq!(n1.reasons, vec![PodAttachReason::CgroupNotFound]);
    }

    #[test]
    fn missing_profile_is_ready_false_profile_not_found() {
        let pt = podtrace(Some("nope"));
        let set = TraceSet::new([&pt], presets);
        let status = podtrace_status(&pt, &index(), &set, |_| None, &now());
        let ready = status.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "ProfileNotFound"));
        assert!(ready.message.contains("\"nope\""), "{}", ready.message);
        assert_eq!(status.effective_profile, None);
        assert!(status.nodes.is_empty());
    }

    #[test]
    fn paused_sets_paused_true_and_lists_no_nodes() {
        let mut pt = podtrace(None);
        pt.spec.paused = true;
        let set = TraceSet::new([&pt], presets);
        let status = podtrace_status(&pt, &index(), &set, |_| None, &now());
        let kinds: Vec<(&str, &str, &str)> = status
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("Ready", "False", "Paused"),
                ("Degraded", "False", "AllAttached"),
                ("Paused", "True", "Paused")
            ]
        );
        assert!(status.nodes.is_empty());
        assert_eq!(status.effective_profile.as_deref(), Some("standard"));
    }

    /// The (type, status, reason) of every condition.
    fn conditions(status: &PodTraceStatus) -> Vec<(&str, &str, &str)> {
        let c = status.conditions.iter();
        c.map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str())).collect()
    }

    #[test]
    fn a_duration_counts_from_the_first_status_and_expires_like_a_pause() {
        let mut pt = podtrace(None);
        pt.spec.duration = Some("90s".into());
        let idx = index();
        let status_at = |pt: &PodTrace, now: &Time| {
            let world = crate::desired::World { now: now.0, ..crate::desired::World::local() };
            podtrace_status(pt, &idx, &TraceSet::within(world, [pt], presets), |_| None, now)
        };
        let first = status_at(&pt, &now());
        assert_eq!(first.expires_at, Some(Time("2026-11-22T00:01:30Z".parse().unwrap())));
        assert_eq!(first.nodes.len(), 2);
        let expired = conditions(&first)[3];
        assert_eq!(expired, ("Expired", "False", "Counting"));
        assert!(first.conditions[3].message.contains("tracing stops at 2026-11-22T00:01:30Z"));

        pt.status = Some(first.clone());
        let later = Time("2026-11-22T00:01:30Z".parse().unwrap());
        let over = status_at(&pt, &later);
        assert_eq!(over.expires_at, first.expires_at, "the same countdown");
        assert_eq!(
            conditions(&over),
            [
                ("Ready", "False", "Expired"),
                ("Degraded", "False", "AllAttached"),
                ("Paused", "False", "Active"),
                ("Expired", "True", "DurationElapsed")
            ]
        );
        assert!(over.conditions[3].message.contains("elapsed at 2026-11-22T00:01:30Z"));
        assert_eq!((over.matched_pods, over.nodes.len()), (3, 0), "matched, not traced");

        pt.spec.duration = None;
        let endless = status_at(&pt, &later);
        assert_eq!((&endless.countdown, &endless.expires_at), (&None, &None));
        assert_eq!(conditions(&endless).len(), 3, "no Expired condition without a duration");
    }

    #[test]
    fn a_refused_namespace_selector_is_ready_false_and_matches_nothing() {
        let mut pt = podtrace(None);
        pt.spec.namespace_selector = Some(Default::default());
        let set = TraceSet::new([&pt], presets);
        let status = podtrace_status(&pt, &index(), &set, |_| None, &now());
        assert_eq!(conditions(&status)[0], ("Ready", "False", "NamespaceSelectorNotAllowed"));
        assert!(status.conditions[0].message.contains("not in ns"), "{:?}", status.conditions);
        assert_eq!((status.matched_pods, status.nodes.len()), (0, 0));
    }

    #[test]
    fn an_unchanged_condition_keeps_its_transition_time_so_status_compares_equal() {
        let mut pt = podtrace(Some("minimal"));
        let idx = index();
        let first = podtrace_status(&pt, &idx, &TraceSet::new([&pt], presets), |_| None, &now());
        pt.status = Some(first.clone());
        let later = Time("2026-11-22T01:00:00Z".parse().unwrap());
        let second = podtrace_status(&pt, &idx, &TraceSet::new([&pt], presets), |_| None, &later);
        assert_eq!(first, second);
    }

    #[test]
    fn series_estimate_is_capped_by_the_budget() {
        let mut spec = Preset::Intensive.spec();
        let catalog = podtrace_api::catalog::series_per_container(&spec, 1);
        assert_eq!(series_estimate(&spec, 1), i64::try_from(catalog).unwrap());
        spec.max_series_per_pod = 10;
        assert_eq!(series_estimate(&spec, 3), 10);
    }
}
