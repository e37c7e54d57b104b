//! The effective profile of a pod under a PodTrace: the referenced profile, the inline one, or
//! the automatic choice by the pod's owner.

use crate::hash::profile_hash;
use crate::podtrace::{PodTraceSpec, ProfileRef};
use crate::podtraceprofile::{PodTraceProfileSpec, ProfileChoice};
use crate::presets::Preset;
use crate::profile::MonitoringProfileSpec;

/// Owner kinds whose pods are long-running, for which `daemon` is chosen automatically (the
/// reference's "daemon task"). Everything else (Jobs, CronJobs, bare pods) gets `standard`.
pub const LONG_RUNNING_OWNER_KINDS: [&str; 4] =
    ["Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"];

/// Where an effective profile came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileSource {
    /// `spec.profileRef`.
    Reference,
    /// `spec.profile`.
    Inline,
    /// Neither: a preset chosen by the pod's owner kind.
    Automatic,
}

/// The settings a PodTrace applies to one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveProfile {
    /// The profile's name: the MonitoringProfile's, `inline`, or the automatic preset's.
    pub name: String,
    /// Where it came from.
    pub source: ProfileSource,
    /// The settings.
    pub spec: MonitoringProfileSpec,
    /// Hash of the settings (see [`crate::hash::profile_hash`]).
    pub hash: String,
}

/// A PodTrace whose profile cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// `spec.profileRef` names a MonitoringProfile that does not exist.
    #[error(
        "MonitoringProfile {name:?} (spec.profileRef.name) does not exist; create it or refer to one of the presets"
    )]
    NotFound {
        /// The missing profile's name.
        name: String,
    },
}

impl ProfileError {
    /// The condition reason for this error (`ProfileNotFound`).
    pub fn reason(&self) -> &'static str {
        match self {
            ProfileError::NotFound { .. } => "ProfileNotFound",
        }
    }
}

/// The preset chosen when a PodTrace names no profile: `daemon` for pods owned by a
/// long-running controller, `standard` otherwise.
pub fn automatic_preset(owner_kind: Option<&str>) -> Preset {
    match owner_kind {
        Some(kind) if LONG_RUNNING_OWNER_KINDS.contains(&kind) => Preset::Daemon,
        _ => Preset::Standard,
    }
}

/// Resolves the profile `spec` applies to a pod owned by `owner_kind`.
///
/// `lookup` returns the cluster's MonitoringProfile of a name. An automatic choice uses the
/// cluster's object of the preset's name when there is one (so an edited preset applies) and the
/// built-in values otherwise; a `profileRef` must exist.
pub fn resolve(
    spec: &PodTraceSpec,
    owner_kind: Option<&str>,
    lookup: impl Fn(&str) -> Option<MonitoringProfileSpec>,
) -> Result<EffectiveProfile, ProfileError> {
    let (name, source, settings) = match (&spec.profile_ref, &spec.profile) {
        (Some(reference), _) => {
            let found = lookup(&reference.name)
                .ok_or_else(|| ProfileError::NotFound { name: reference.name.clone() })?;
            (reference.name.clone(), ProfileSource::Reference, found)
        }
        (None, Some(inline)) => ("inline".to_owned(), ProfileSource::Inline, inline.clone()),
        (None, None) => {
            let preset = automatic_preset(owner_kind);
            let found = lookup(preset.name()).unwrap_or_else(|| preset.spec());
            (preset.name().to_owned(), ProfileSource::Automatic, found)
        }
    };
    let hash = profile_hash(&settings);
    Ok(EffectiveProfile { name, source, spec: settings, hash })
}

/// The PodTraceProfile of a PodTrace: where the agents find the settings of each of its pods,
/// by owner kind. `exists` says whether the cluster has a MonitoringProfile of a name.
///
/// The same choice as [`resolve`] for every owner kind, but by reference: a profileRef, and an
/// automatic preset whose cluster object exists, name the MonitoringProfile instead of copying
/// it, so that editing that MonitoringProfile reaches the agents without rewriting any
/// PodTraceProfile. Only existence matters here: the result changes when a referenced
/// MonitoringProfile is created or deleted, not when it is edited.
pub fn choices(
    spec: &PodTraceSpec,
    exists: impl Fn(&str) -> bool,
) -> Result<PodTraceProfileSpec, ProfileError> {
    let by_name = |name: &str| ProfileRef { name: name.to_owned() };
    let profiles = match (&spec.profile_ref, &spec.profile) {
        (Some(reference), _) => {
            if !exists(&reference.name) {
                return Err(ProfileError::NotFound { name: reference.name.clone() });
            }
            vec![ProfileChoice { profile_ref: Some(reference.clone()), ..Default::default() }]
        }
        (None, Some(inline)) => {
            vec![ProfileChoice { profile: Some(inline.clone()), ..Default::default() }]
        }
        (None, None) => {
            let preset = |p: Preset| {
                if exists(p.name()) {
                    (Some(by_name(p.name())), None)
                } else {
                    (None, Some(p.spec()))
                }
            };
            let mut kinds: Vec<String> =
                LONG_RUNNING_OWNER_KINDS.iter().map(|k| (*k).to_owned()).collect();
            kinds.sort();
            let (daemon_ref, daemon) = preset(Preset::Daemon);
            let (standard_ref, standard) = preset(Preset::Standard);
            vec![
                ProfileChoice { owner_kinds: kinds, profile_ref: daemon_ref, profile: daemon },
                ProfileChoice {
                    owner_kinds: Vec::new(),
                    profile_ref: standard_ref,
                    profile: standard,
                },
            ]
        }
    };
    Ok(PodTraceProfileSpec { profiles })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::podtrace::ProfileRef;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn spec(profile_ref: Option<&str>, inline: Option<MonitoringProfileSpec>) -> PodTraceSpec {
        PodTraceSpec {
            selector: LabelSelector::default(),
            containers: vec![],
            profile_ref: profile_ref.map(|n| ProfileRef { name: n.into() }),
            profile: inline,
            paused: false,
            namespace_selector: None,
            duration: None,
        }
    }

    fn cluster(name: &str) -> Option<MonitoringProfileSpec> {
        match name {
            "fast" => Some(MonitoringProfileSpec { interval: "2s".into(), ..Default::default() }),
            // An edited preset: the cluster's object wins over the built-in values.
            "daemon" => Some(MonitoringProfileSpec { interval: "5m".into(), ..Default::default() }),
            _ => None,
        }
    }

    #[test]
    fn profile_ref_resolves_to_the_cluster_object() {
        let p = resolve(&spec(Some("fast"), None), None, cluster).unwrap();
        assert_eq!(
            (p.name.as_str(), p.source, p.spec.interval.as_str()),
            ("fast", ProfileSource::Reference, "2s")
        );
    }

    #[test]
    fn missing_profile_ref_is_profile_not_found() {
        let err = resolve(&spec(Some("nope"), None), Some("Deployment"), cluster).unwrap_err();
        assert_eq!(err, ProfileError::NotFound { name: "nope".into() });
        assert_eq!(err.reason(), "ProfileNotFound");
        assert!(err.to_string().contains("spec.profileRef.name"));
    }

    #[test]
    fn a_preset_name_in_profile_ref_still_needs_the_object() {
        // The presets are installed as objects; a reference to a deleted one is an error, not a
        // silent fallback to built-in values.
        assert!(resolve(&spec(Some("standard"), None), None, cluster).is_err());
    }

    #[test]
    fn inline_profile_is_used_as_is() {
        let inline = MonitoringProfileSpec { interval: "3s".into(), ..Default::default() };
        let p = resolve(&spec(None, Some(inline.clone())), Some("DaemonSet"), cluster).unwrap();
        assert_eq!((p.name.as_str(), p.source, p.spec), ("inline", ProfileSource::Inline, inline));
    }

    #[test]
    fn automatic_choice_is_daemon_for_long_running_owners_and_standard_otherwise() {
        for kind in LONG_RUNNING_OWNER_KINDS {
            assert_eq!(automatic_preset(Some(kind)), Preset::Daemon, "{kind}");
        }
        for kind in [Some("Job"), Some("CronJob"), Some("Node"), None] {
            assert_eq!(automatic_preset(kind), Preset::Standard, "{kind:?}");
        }
    }

    #[test]
    fn automatic_choice_prefers_the_edited_cluster_preset_and_falls_back_to_built_in() {
        let daemon = resolve(&spec(None, None), Some("StatefulSet"), cluster).unwrap();
        assert_eq!((daemon.name.as_str(), daemon.spec.interval.as_str()), ("daemon", "5m"));
        let standard = resolve(&spec(None, None), Some("Job"), cluster).unwrap();
        assert_eq!(standard.spec, Preset::Standard.spec());
        assert_eq!(standard.source, ProfileSource::Automatic);
    }

    /// The agents' reading of a PodTraceProfile gives every pod the settings `resolve` gives it,
    /// for every kind of PodTrace and owner, with the preset objects present or not.
    #[test]
    fn choices_give_each_owner_kind_what_resolve_gives_it() {
        let inline = MonitoringProfileSpec { interval: "3s".into(), ..Default::default() };
        let specs = [spec(Some("fast"), None), spec(None, Some(inline)), spec(None, None)];
        let without_presets = |name: &str| (name == "fast").then(|| cluster("fast").unwrap());
        type Lookup<'a> = &'a dyn Fn(&str) -> Option<MonitoringProfileSpec>;
        let lookups: [Lookup; 2] = [&cluster, &without_presets];
        for lookup in lookups {
            for s in &specs {
                let ptp = choices(s, |n| lookup(n).is_some()).unwrap();
                let kinds = LONG_RUNNING_OWNER_KINDS.iter().map(|k| Some(*k));
                for kind in kinds.chain([Some("Job"), None]) {
                    let want = resolve(s, kind, lookup).unwrap().spec;
                    let choice = ptp.choice_for(kind).unwrap();
                    let got = match (&choice.profile_ref, &choice.profile) {
                        (Some(r), None) => lookup(&r.name).unwrap(),
                        (None, Some(p)) => p.clone(),
                        other => panic!("not exactly one of profileRef and profile: {other:?}"),
                    };
                    assert_eq!(got, want, "{s:?} for {kind:?}");
                }
            }
        }
        let missing = choices(&spec(Some("nope"), None), |_| true);
        assert!(missing.is_ok(), "existence is the caller's answer");
        let missing = choices(&spec(Some("nope"), None), |_| false).unwrap_err();
        assert_eq!(missing, ProfileError::NotFound { name: "nope".into() });
    }

    #[test]
    fn an_automatic_podtrace_names_the_preset_objects_and_falls_back_to_built_in_values() {
        let with = choices(&spec(None, None), |_| true).unwrap();
        let names: Vec<_> = with.profile_refs().collect();
        assert_eq!(names, ["daemon", "standard"]);
        assert_eq!(
            with.profiles[0].owner_kinds,
            ["DaemonSet", "Deployment", "ReplicaSet", "StatefulSet"]
        );
        let without = choices(&spec(None, None), |_| false).unwrap();
        assert_eq!(without.profile_refs().count(), 0);
        assert_eq!(without.profiles[1].profile, Some(Preset::Standard.spec()));
    }
}
