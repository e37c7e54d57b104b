//! Merging the effective profiles that apply to the same pod, or to the pods of one node.
//!
//! The merge never loses what any PodTrace asked for: collectors, probes, exporters and label
//! keys are unioned, the smallest interval and the largest history win, resource-limit alerts
//! use the most sensitive thresholds (the minimum of each, which keeps them ordered), and the
//! series budget is the largest asked for (the union of probes produces more series).

use std::collections::{BTreeMap, BTreeSet};

use crate::hash::settings_key;
use crate::nodetrace::{NodeTraceSpec, PodSettings, SpecFormat, TracedPod};
use crate::profile::{MonitoringProfileSpec, ProbeSettings};

/// Merges profiles; `None` when there are none.
pub fn merge_profiles<'a>(
    profiles: impl IntoIterator<Item = &'a MonitoringProfileSpec>,
) -> Option<MonitoringProfileSpec> {
    let mut iter = profiles.into_iter();
    let mut merged = iter.next()?.clone();
    for p in iter {
        merge_into(&mut merged, p);
    }
    normalize(&mut merged);
    Some(merged)
}

fn merge_into(acc: &mut MonitoringProfileSpec, p: &MonitoringProfileSpec) {
    // A profile whose interval does not parse never reaches here (the CRD rejects it); if it
    // did, the other interval is kept rather than guessing.
    if let (Ok(mine), Ok(theirs)) = (acc.interval(), p.interval())
        && theirs < mine
    {
        acc.interval = p.interval.clone();
    }
    let (c, o) = (&mut acc.collect, &p.collect);
    c.cpu |= o.cpu;
    c.memory |= o.memory;
    c.disk_io |= o.disk_io;
    c.network_io |= o.network_io;
    c.threads |= o.threads;
    c.file_descriptors |= o.file_descriptors;

    let probes: BTreeSet<_> = acc.probes.active().chain(p.probes.active()).collect();
    acc.probes =
        ProbeSettings { enabled: !probes.is_empty(), include: probes.into_iter().collect() };

    let (r, o) = (&mut acc.resource_limits, &p.resource_limits);
    r.enabled |= o.enabled;
    r.warning_percent = r.warning_percent.min(o.warning_percent);
    r.critical_percent = r.critical_percent.min(o.critical_percent);
    r.emergency_percent = r.emergency_percent.min(o.emergency_percent);

    acc.history.size = acc.history.size.max(p.history.size);

    let (e, o) = (&mut acc.export, &p.export);
    e.prometheus |= o.prometheus;
    e.nats |= o.nats;
    e.mqtt |= o.mqtt;
    e.influx |= o.influx;
    e.otlp |= o.otlp;

    acc.labels.process_name |= p.labels.process_name;
    acc.labels.pod_labels.extend(p.labels.pod_labels.iter().cloned());
    acc.max_series_per_pod = acc.max_series_per_pod.max(p.max_series_per_pod);
}

/// Sorted, de-duplicated lists, so that equal merges serialize (and hash) equal whatever the
/// order of the inputs.
fn normalize(p: &mut MonitoringProfileSpec) {
    p.probes.include.sort();
    p.probes.include.dedup();
    if !p.probes.enabled {
        p.probes.include.clear();
    }
    p.labels.pod_labels.sort();
    p.labels.pod_labels.dedup();
}

/// Builds a node's NodeTrace spec in `format` from its traced pods and their merged settings,
/// pods sorted by namespace and name.
///
/// Format 2 keeps the pods only: each names its PodTraces and owner kind, and the agent finds
/// the settings in their PodTraceProfiles, so the spec does not change when settings do. Format
/// 1 (for agents that have not reported format 2) refers each pod by `settingsKey` to its
/// settings, listed once per distinct content in `podSettings` (sorted by key), with the
/// node-wide merged settings, and no owner kinds (earlier agents skip them anyway).
pub fn node_trace_spec(
    pods: Vec<(TracedPod, MonitoringProfileSpec)>,
    format: SpecFormat,
) -> NodeTraceSpec {
    let mut table: BTreeMap<String, MonitoringProfileSpec> = BTreeMap::new();
    let mut pods: Vec<TracedPod> = pods
        .into_iter()
        .map(|(mut pod, settings)| {
            match format {
                SpecFormat::Shared => {
                    pod.settings_key = None;
                    pod.profiles.clear();
                }
                SpecFormat::PodSettings => {
                    pod.owner_kind = None;
                    let key = settings_key(&settings);
                    table.entry(key.clone()).or_insert(settings);
                    pod.settings_key = Some(key);
                }
            }
            pod
        })
        .collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name, &a.uid).cmp(&(&b.namespace, &b.name, &b.uid)));
    if format == SpecFormat::Shared {
        return NodeTraceSpec { pods, ..Default::default() };
    }
    // Merging is idempotent (unions, minima, maxima), so the distinct settings merge to the same
    // node-wide settings as one copy per pod.
    let settings = Some(merge_profiles(table.values()).unwrap_or_default());
    NodeTraceSpec {
        settings,
        pods,
        pod_settings: table
            .into_iter()
            .map(|(key, settings)| PodSettings { key, settings })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodetrace::PodTraceRef;
    use crate::presets::Preset;
    use crate::profile::Probe;

    #[test]
    fn merging_nothing_is_none_and_one_profile_is_itself() {
        assert_eq!(merge_profiles([]), None);
        let s = Preset::Batch.spec();
        assert_eq!(merge_profiles([&s]), Some(s));
    }

    #[test]
    fn merge_unions_probes_and_collectors_and_takes_smallest_interval_largest_history() {
        let batch = Preset::Batch.spec(); // 30s, fs probes, history 200, no network collector
        let api = Preset::RealtimeApi.spec(); // 5s, network probes, history 500, no disk collector
        let m = merge_profiles([&batch, &api]).unwrap();
        assert_eq!(m.interval, "5s");
        assert_eq!(m.history.size, 500);
        assert!(m.collect.disk_io && m.collect.network_io && m.collect.threads);
        assert_eq!(
            m.probes.include,
            Probe::ALL
                .to_vec()
                .into_iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
        );
        assert!(m.probes.enabled);
    }

    #[test]
    fn merge_is_independent_of_order() {
        let (a, b, c) = (Preset::Minimal.spec(), Preset::Daemon.spec(), Preset::Batch.spec());
        assert_eq!(merge_profiles([&a, &b, &c]), merge_profiles([&c, &a, &b]));
    }

    #[test]
    fn a_disabled_probe_set_contributes_nothing() {
        let mut off = Preset::Standard.spec();
        off.probes.enabled = false; // include still lists all seven
        let minimal = Preset::Minimal.spec();
        let m = merge_profiles([&off, &minimal]).unwrap();
        assert!(!m.probes.enabled);
        assert!(m.probes.include.is_empty());
    }

    #[test]
    fn thresholds_take_the_most_sensitive_and_stay_ordered() {
        let mut a = Preset::Standard.spec();
        (
            a.resource_limits.warning_percent,
            a.resource_limits.critical_percent,
            a.resource_limits.emergency_percent,
        ) = (50, 98, 99);
        let mut b = Preset::Standard.spec();
        (
            b.resource_limits.warning_percent,
            b.resource_limits.critical_percent,
            b.resource_limits.emergency_percent,
        ) = (70, 75, 100);
        let r = merge_profiles([&a, &b]).unwrap().resource_limits;
        assert_eq!((r.warning_percent, r.critical_percent, r.emergency_percent), (50, 75, 99));
    }

    #[test]
    fn exporters_labels_and_budget_are_unioned() {
        let mut a = Preset::Minimal.spec();
        a.export.nats = true;
        a.labels.pod_labels = vec!["app".into(), "team".into()];
        a.max_series_per_pod = 100;
        let mut b = Preset::Minimal.spec();
        b.export.influx = true;
        b.export.otlp = true;
        b.labels.pod_labels = vec!["app".into(), "tier".into()];
        let m = merge_profiles([&a, &b]).unwrap();
        assert!(m.export.nats && m.export.influx && m.export.otlp && !m.export.mqtt);
        assert_eq!(m.labels.pod_labels, ["app", "team", "tier"]);
        assert_eq!(m.max_series_per_pod, 2000);
    }

    fn shared() -> crate::SharedSettings {
        crate::SharedSettings::default()
    }

    #[test]
    fn node_trace_spec_sorts_pods_and_lists_each_requester_once() {
        let pt = |n: &str| PodTraceRef { namespace: "ns".into(), name: n.into() };
        let pod = |name: &str, spec: MonitoringProfileSpec, by: Vec<PodTraceRef>| {
            let pod = TracedPod {
                uid: format!("uid-{name}"),
                namespace: "ns".into(),
                name: name.into(),
                requested_by: by,
                ..Default::default()
            };
            (pod, spec)
        };
        let pods = vec![
            pod("b", Preset::Daemon.spec(), vec![pt("x"), pt("y")]),
            pod("a", Preset::Intensive.spec(), vec![pt("x")]),
        ];
        let spec = node_trace_spec(pods.clone(), SpecFormat::PodSettings);
        assert_eq!(spec.pods.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(spec.requested_by(), [&pt("x"), &pt("y")].into_iter().collect());
        let node = spec.settings.as_ref().unwrap();
        assert_eq!((node.interval.as_str(), node.history.size), ("1s", 1000));
        assert_eq!(spec.settings_for(&spec.pods[0], &shared()), Ok(Preset::Intensive.spec()));
        assert_eq!(spec.settings_for(&spec.pods[1], &shared()), Ok(Preset::Daemon.spec()));
        assert_eq!(spec.format(), SpecFormat::PodSettings);

        let shared_format = node_trace_spec(pods, SpecFormat::Shared);
        assert_eq!(shared_format.format(), SpecFormat::Shared);
        assert_eq!(
            shared_format.pods.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!((shared_format.settings, shared_format.pod_settings.len()), (None, 0));
        assert!(shared_format.pods.iter().all(|p| p.settings_key.is_none()));
    }

    #[test]
    fn pods_with_equal_settings_share_one_entry_and_a_missing_key_finds_none() {
        let pod = |name: &str| {
            let pod = TracedPod { uid: name.into(), name: name.into(), ..Default::default() };
            (pod, Preset::Standard.spec())
        };
        let spec = node_trace_spec(vec![pod("a"), pod("b"), pod("c")], SpecFormat::PodSettings);
        assert_eq!(spec.pod_settings.len(), 1);
        assert_eq!(spec.pod_settings[0].key, settings_key(&Preset::Standard.spec()));
        assert!(
            spec.pods.iter().all(|p| p.settings_key.as_ref() == Some(&spec.pod_settings[0].key))
        );
        assert_eq!(spec.settings, Some(Preset::Standard.spec()));
        let stray =
            TracedPod { settings_key: Some("0000000000000000".into()), ..Default::default() };
        assert!(spec.settings_for(&stray, &shared()).is_err());
    }

    #[test]
    fn node_without_pods_gets_default_settings() {
        let spec = node_trace_spec(vec![], SpecFormat::PodSettings);
        assert!(spec.pods.is_empty() && spec.requested_by().is_empty());
    }
}
