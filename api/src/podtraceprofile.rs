//! `PodTraceProfile`: the settings one PodTrace gives its pods, resolved by the operator once and
//! read by every agent that traces one of those pods.
//!
//! ```text
//!  PodTrace shop/web  (profileRef | inline profile | neither: automatic)
//!     │ operator: effective::choices
//!     ▼
//!  PodTraceProfile shop/web   profiles: [{ownerKinds, profileRef: {name} | profile: {…}}, …]
//!     ▲ by=shop/web                                    │ profileRef
//!     │                                                ▼
//!  NodeTrace n1: "shop/web-1 uid=… owner=ReplicaSet by=shop/web …"   MonitoringProfile daemon
//! ```
//!
//! Why an object of its own: a pod line in a NodeTrace names the PodTraces that select the pod,
//! never their settings, so editing a PodTrace's profile writes this one object (and editing a
//! MonitoringProfile writes nothing at all: the agents watch MonitoringProfiles too) instead of
//! the NodeTrace of every node the PodTrace's pods run on. At 1,000 nodes that is one write of
//! about 4 ms of API-server CPU instead of 1,000 writes of 10 ms.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::nodetrace::PodTraceRef;
use crate::podtrace::ProfileRef;
use crate::profile::{MonitoringProfileSpec, without_cel_rules};

/// Spec of a PodTraceProfile: the profile each pod of one PodTrace gets. Written by the
/// operator, same namespace and name as the PodTrace; read by the node agents.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "podtrace.dev",
    version = "v1alpha1",
    kind = "PodTraceProfile",
    plural = "podtraceprofiles",
    shortname = "ptprof",
    category = "podtrace-all",
    namespaced,
    derive = "PartialEq",
    doc = "PodTraceProfile is the monitoring profile of one PodTrace as the operator resolved it for \
           the node agents (same namespace and name as the PodTrace): a MonitoringProfile by name, \
           the PodTrace's inline profile, or for the automatic choice one entry per kind of pod \
           owner. NodeTrace pod lines name their PodTraces (by=), and the agents read the settings \
           here, so a profile change is one write of this object and none of a NodeTrace. Users \
           read it; the operator writes it.",
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct PodTraceProfileSpec {
    /// The profile of each pod, first match wins: an entry applies to the pods whose owner kind
    /// is in its ownerKinds, and an entry without ownerKinds to every pod. A profileRef or inline
    /// profile of the PodTrace gives one entry; the automatic choice gives daemon for pods owned
    /// by a Deployment, ReplicaSet, StatefulSet or DaemonSet, then standard for every other pod.
    #[schemars(length(min = 1, max = 8))]
    // Atomic: written whole by the operator only.
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub profiles: Vec<ProfileChoice>,
}

/// One entry of a PodTraceProfile: which pods it applies to and where their settings are.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.profileRef) != has(self.profile)")
        .message("set exactly one of profiles[].profileRef and profiles[].profile")
)]
pub struct ProfileChoice {
    /// Kinds of the pod's controlling owner this entry applies to (for example ReplicaSet;
    /// NodeTrace pod lines carry it as owner=). Empty or absent: every pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 63)))]
    pub owner_kinds: Vec<String>,
    /// The MonitoringProfile whose settings apply. The agents read it directly, so an edit of
    /// the MonitoringProfile reaches them with no write of the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_ref: Option<ProfileRef>,
    /// Settings that apply as they are: the PodTrace's inline profile, or a preset's built-in
    /// values when the cluster has no MonitoringProfile of the preset's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = without_cel_rules)]
    pub profile: Option<MonitoringProfileSpec>,
}

impl PodTraceProfileSpec {
    /// The entry that applies to a pod whose controlling owner is of `owner_kind`.
    pub fn choice_for(&self, owner_kind: Option<&str>) -> Option<&ProfileChoice> {
        self.profiles.iter().find(|c| {
            c.owner_kinds.is_empty()
                || owner_kind.is_some_and(|k| c.owner_kinds.iter().any(|o| o == k))
        })
    }

    /// The MonitoringProfiles this PodTraceProfile refers to.
    pub fn profile_refs(&self) -> impl Iterator<Item = &str> {
        self.profiles.iter().filter_map(|c| c.profile_ref.as_ref()).map(|r| r.name.as_str())
    }
}

/// The shared settings objects an agent has seen: PodTraceProfiles by PodTrace and
/// MonitoringProfiles by name. The settings of a pod of a NodeTrace come from here (see
/// [`crate::NodeTraceSpec::settings_for`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SharedSettings {
    /// PodTraceProfiles, by the PodTrace they belong to (same namespace and name).
    pub podtrace_profiles: BTreeMap<PodTraceRef, PodTraceProfileSpec>,
    /// MonitoringProfiles, by name.
    pub monitoring_profiles: BTreeMap<String, MonitoringProfileSpec>,
}

impl SharedSettings {
    /// The part of `self` the pods of `spec` refer to: their PodTraces' PodTraceProfiles and
    /// the MonitoringProfiles those name. An agent keeps every shared object it watches but
    /// hands only this part to its engine, so an edit that concerns no pod of its node does not
    /// wake it.
    pub fn relevant_to(&self, spec: &crate::NodeTraceSpec) -> SharedSettings {
        let mut out = SharedSettings::default();
        let refs =
            spec.pods.iter().filter(|p| p.settings_key.is_none()).flat_map(|p| &p.requested_by);
        for r in refs {
            if out.podtrace_profiles.contains_key(r) {
                continue;
            }
            let Some(ptp) = self.podtrace_profiles.get(r) else { continue };
            for name in ptp.profile_refs() {
                if let Some(mp) = self.monitoring_profiles.get(name) {
                    out.monitoring_profiles.insert(name.to_owned(), mp.clone());
                }
            }
            out.podtrace_profiles.insert(r.clone(), ptp.clone());
        }
        out
    }
}

/// Why the settings of a pod of a NodeTrace cannot be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A pod line of the first format names a settings key `spec.podSettings` does not have.
    #[error(
        "settingsKey {key:?} names no entry of spec.podSettings: the pod is not traced; the operator \
         rewrites the NodeTrace whole, so this is a hand-edited NodeTrace or an operator bug"
    )]
    NotInPodSettings {
        /// The key of the pod line.
        key: String,
    },
    /// A pod line names no PodTrace (`by=`) and no settings key.
    #[error(
        "the pod line names no PodTrace (by=) and no settings key: nothing says what to measure"
    )]
    NoPodTrace,
    /// The PodTraceProfile of a PodTrace that selects the pod has not reached the agent (yet).
    #[error(
        "PodTraceProfile {podtrace} not seen yet: the operator writes it with the PodTrace; the pod \
         is traced once it arrives (if it stays missing, check the agent's RBAC for \
         podtraceprofiles)"
    )]
    PodTraceProfileMissing {
        /// The PodTrace, `namespace/name`.
        podtrace: PodTraceRef,
    },
    /// A PodTraceProfile refers to a MonitoringProfile the agent has not seen.
    #[error(
        "MonitoringProfile {name:?} (named by PodTraceProfile {podtrace}) not seen: the pod is traced \
         once it exists again"
    )]
    MonitoringProfileMissing {
        /// The MonitoringProfile's name.
        name: String,
        /// The PodTrace whose PodTraceProfile names it.
        podtrace: PodTraceRef,
    },
    /// No entry of a PodTraceProfile applies to the pod's owner kind.
    #[error("PodTraceProfile {podtrace} has no entry for pods owned by {owner_kind:?}")]
    NoChoice {
        /// The PodTrace.
        podtrace: PodTraceRef,
        /// The pod's owner kind (`None`: no owner).
        owner_kind: Option<String>,
    },
}

impl SettingsError {
    /// Whether the agent should wait for the missing object (the pod is Pending) rather than
    /// give up on the pod (Failed): shared objects arrive on their own watches, a moment before
    /// or after the NodeTrace that names them.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SettingsError::PodTraceProfileMissing { .. }
                | SettingsError::MonitoringProfileMissing { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets::Preset;

    fn choice(kinds: &[&str], name: &str) -> ProfileChoice {
        ProfileChoice {
            owner_kinds: kinds.iter().map(|k| k.to_string()).collect(),
            profile_ref: Some(ProfileRef { name: name.into() }),
            profile: None,
        }
    }

    #[test]
    fn the_first_entry_that_applies_wins_and_an_entry_without_kinds_applies_to_every_pod() {
        let spec = PodTraceProfileSpec {
            profiles: vec![choice(&["ReplicaSet", "DaemonSet"], "daemon"), choice(&[], "standard")],
        };
        let name = |kind| spec.choice_for(kind).unwrap().profile_ref.as_ref().unwrap().name.clone();
        assert_eq!(name(Some("ReplicaSet")), "daemon");
        assert_eq!(name(Some("Job")), "standard");
        assert_eq!(name(None), "standard");
        let only_daemons = PodTraceProfileSpec { profiles: vec![choice(&["DaemonSet"], "daemon")] };
        assert_eq!(only_daemons.choice_for(Some("Job")), None);
        assert_eq!(spec.profile_refs().collect::<Vec<_>>(), ["daemon", "standard"]);
    }

    #[test]
    fn an_entry_is_one_json_object_with_only_what_it_sets() {
        let inline = ProfileChoice { profile: Some(Preset::Minimal.spec()), ..Default::default() };
        let json = serde_json::to_value(PodTraceProfileSpec {
            profiles: vec![choice(&["ReplicaSet"], "daemon"), inline],
        })
        .unwrap();
        assert_eq!(
            json["profiles"][0],
            serde_json::json!({"ownerKinds": ["ReplicaSet"], "profileRef": {"name": "daemon"}})
        );
        assert_eq!(json["profiles"][1]["profile"]["interval"], "1m");
        assert!(json["profiles"][1].get("ownerKinds").is_none());
    }

    #[test]
    fn only_missing_shared_objects_are_transient() {
        let pt = PodTraceRef { namespace: "ns".into(), name: "t".into() };
        assert!(SettingsError::PodTraceProfileMissing { podtrace: pt.clone() }.is_transient());
        let missing =
            SettingsError::MonitoringProfileMissing { name: "fast".into(), podtrace: pt.clone() };
        assert!(missing.is_transient());
        assert!(missing.to_string().contains("\"fast\""), "{missing}");
        assert!(!SettingsError::NotInPodSettings { key: "k".into() }.is_transient());
        assert!(!SettingsError::NoChoice { podtrace: pt, owner_kind: None }.is_transient());
    }
}
