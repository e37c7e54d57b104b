//! The status vocabulary both CRDs share: how a probe attached on a node ([`ProbeStatus`]),
//! whether a pod is measured and why not ([`PodAttachState`], [`PodAttachReason`]), and the one
//! builder of Kubernetes conditions ([`condition`]) that the operator (PodTrace status) and the
//! agent (NodeTrace status) both use.
//!
//! ```text
//!  NodeTrace.status  (agent)  probes[]: ProbeStatus    pods[]: PodAttachState + PodAttachReason
//!        │ rolled up by the operator
//!        ▼
//!  PodTrace.status   (operator) nodes[]: probes[]: ProbeStatus, reasons[]: PodAttachReason
//!  both: conditions[] built by `condition`, which keeps lastTransitionTime while status holds
//! ```

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::profile::Probe;

/// How a probe is attached to the kernel, best first.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub enum AttachMethod {
    /// BPF trampoline on a kernel function entry/exit.
    #[serde(rename = "fentry")]
    Fentry,
    /// BTF-typed tracepoint.
    #[serde(rename = "tp_btf")]
    TpBtf,
    /// Raw tracepoint.
    #[serde(rename = "raw_tracepoint")]
    RawTracepoint,
    /// Classic tracepoint.
    #[serde(rename = "tracepoint")]
    Tracepoint,
    /// cgroup socket-buffer hook.
    #[serde(rename = "cgroup_skb")]
    CgroupSkb,
    /// Dynamic kernel probe (only where nothing else exists).
    #[serde(rename = "kprobe")]
    Kprobe,
}

/// Whether a probe is running on a node.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeState {
    /// Loaded and attached.
    Attached,
    /// No attach method loaded on this kernel; see reason.
    Unavailable,
    /// Not requested by any profile on this node.
    Disabled,
}

/// One probe's attach result on a node.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProbeStatus {
    /// The probe family.
    pub probe: Probe,
    /// Attached, Unavailable or Disabled.
    pub state: ProbeState,
    /// The attach method chosen (for Attached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<AttachMethod>,
    /// The kernel's reason (for Unavailable), for example "fentry: EPERM; tracepoint: ENOENT".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Whether the agent measures a pod.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PodAttachState {
    /// The pod's cgroups were found and are tracked by the probes and collectors.
    Attached,
    /// Not yet: the agent retries (see reason).
    Pending,
    /// The agent cannot measure the pod (see reason).
    Failed,
}

/// Why a pod is pending or failed, as a typed reason.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub enum PodAttachReason {
    /// No container of the pod has a runtime ID yet (not started).
    ContainerNotStarted,
    /// The pod's cgroup does not exist (yet) on the node; retried every interval.
    CgroupNotFound,
    /// The cgroup exists but has no cgroup v2 id, so in-kernel filtering by cgroup is impossible.
    CgroupV2Unavailable,
    /// The tracked-cgroup map of the eBPF programs is full; raise the agent's map size.
    TrackedMapFull,
    /// The pod's series exceed its maxSeriesPerPod budget; some are dropped.
    SeriesBudgetExceeded,
    /// The node's agent has not reported for three heartbeats.
    AgentNotReporting,
    /// The agent does not know what to measure for the pod: a PodTraceProfile or
    /// MonitoringProfile it names has not reached the agent (Pending until it does), or a
    /// format-1 settingsKey names no entry of spec.podSettings (Failed). The other pods are
    /// traced.
    SettingsNotFound,
}

/// A status enum's name in JSON (`tp_btf`, `tcpRtt`, `CgroupNotFound`), as status lines
/// write it.
pub fn name_of(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        other => unreachable!("status enums serialize as strings, not {other:?}"),
    }
}

/// A status enum from its name in a status line.
pub(crate) fn from_name<T: serde::de::DeserializeOwned>(name: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
}

/// A condition of `type_`, `True` when `on`, for an object at `observed_generation`.
///
/// Its `lastTransitionTime` is the one in `previous` when that list holds the same type with the
/// same status, and `now` otherwise: a status recomputed without a change then compares equal to
/// the stored one, so neither the operator nor the agent writes it again.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    on: bool,
    reason: &str,
    message: String,
    observed_generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if on { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation,
        last_transition_time,
    }
}

/// The condition of `type_` in `conditions`.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Time {
        Time(text.parse().unwrap())
    }

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let (t0, t1) = (at("2026-11-22T00:00:00Z"), at("2026-11-22T01:00:00Z"));
        let first = condition(&[], "Ready", true, "AllPodsAttached", "1/1".into(), Some(2), &t0);
        assert_eq!((first.status.as_str(), &first.last_transition_time), ("True", &t0));
        assert_eq!(first.observed_generation, Some(2));
        let same = condition(
            std::slice::from_ref(&first),
            "Ready",
            true,
            "Other",
            "x".into(),
            Some(3),
            &t1,
        );
        assert_eq!(same.last_transition_time, t0, "status unchanged: the time stays");
        assert_eq!((same.reason.as_str(), same.observed_generation), ("Other", Some(3)));
        let flipped = condition(&[first], "Ready", false, "PodsPending", "0/1".into(), None, &t1);
        assert_eq!((flipped.status.as_str(), &flipped.last_transition_time), ("False", &t1));
        assert_eq!(find_condition(std::slice::from_ref(&flipped), "Ready"), Some(&flipped));
        assert_eq!(find_condition(&[flipped], "Degraded"), None);
    }
}
