//! Standalone mode: the targets come from a YAML file of `MonitoringProfile` and `PodTrace`
//! documents in the CRD format, whose selectors match local cgroups and processes instead of pods.
//!
//! Field mapping (a PodTrace's `spec.selector` uses these keys, in `matchLabels` or as
//! `matchExpressions` with operator `In`; values of one key are alternatives, different keys must
//! all match):
//!
//! | key | matches |
//! |---|---|
//! | `podtrace.dev/cgroup` | cgroup paths relative to the hierarchy root, as globs (`/podtrace-demo/*`, `/system.slice/**`) |
//! | `podtrace.dev/process-name` | process command names (comm), as globs (`nginx`, `python*`) |
//! | `podtrace.dev/pid` | process ids |
//!
//! The PodTrace is the pod (`namespace` from its metadata, default `standalone`; `pod` its
//! name); each matched cgroup is a container named after its last path segment. With only a
//! cgroup key every process of the cgroup is measured; with a process key only the matched
//! processes are (grouped by their cgroup). `profileRef` names a MonitoringProfile of the file or
//! one of the six presets; `profile` is inline; neither means `standard`.

pub mod reload;

use podtrace_api::{
    MonitoringProfile, MonitoringProfileSpec, PodTrace, effective, presets::Preset,
    status::PodAttachReason,
};
use serde::Deserialize;
use std::{collections::BTreeMap, path::Path};

use crate::{
    cgroup::{CgroupLayout, parse_proc_cgroup},
    glob,
    metrics::{Labels, TargetKey},
    targets::{Pending, Target},
};

/// The selector key of cgroup path globs.
pub const CGROUP_KEY: &str = "podtrace.dev/cgroup";
/// The selector key of process name globs.
pub const PROCESS_NAME_KEY: &str = "podtrace.dev/process-name";
/// The selector key of process ids.
pub const PID_KEY: &str = "podtrace.dev/pid";

/// One PodTrace of the file, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalTrace {
    /// Namespace (the "pod"'s).
    pub namespace: String,
    /// Name (the "pod").
    pub name: String,
    /// Cgroup path globs.
    pub cgroups: Vec<String>,
    /// Process name globs.
    pub process_names: Vec<String>,
    /// Process ids.
    pub pids: Vec<u32>,
    /// The effective profile's name.
    pub profile_name: String,
    /// The effective profile.
    pub profile: MonitoringProfileSpec,
    /// Paused traces measure nothing.
    pub paused: bool,
}

/// A parsed standalone configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    /// The traces, in file order.
    pub traces: Vec<LocalTrace>,
    /// Documents in the file (MonitoringProfiles and PodTraces).
    pub documents: usize,
}

/// `podtrace-agent health config FILE`: prints whether the file is valid and what it traces
/// (one JSON object with `json`); returns the exit code (0 valid, 1 not).
pub fn check(file: &Path, allow_empty: bool, json: bool) -> i32 {
    let result = load(file, allow_empty);
    if json {
        let report = match &result {
            Ok(c) => serde_json::json!({
                "file": file,
                "valid": true,
                "traces": c.traces.iter().map(|t| format!("{}/{}", t.namespace, t.name)).collect::<Vec<_>>(),
            }),
            Err(e) => serde_json::json!({"file": file, "valid": false, "error": e.to_string()}),
        };
        println!("{report}");
        return if result.is_ok() { 0 } else { 1 };
    }
    match result {
        Ok(c) => {
            println!("{}: valid, {} PodTrace(s)", file.display(), c.traces.len());
            for t in &c.traces {
                println!(
                    "  {}/{}: profile {}, cgroups {:?}, process names {:?}, pids {:?}",
                    t.namespace, t.name, t.profile_name, t.cgroups, t.process_names, t.pids
                );
            }
            0
        }
        Err(e) => {
            eprintln!("invalid: {e}");
            1
        }
    }
}

/// Parses and validates a configuration file's text. Errors name the document and field. A
/// text without any document is an error unless `allow_empty`: applied, it would silently stop
/// tracing everything (a file truncated by a failed edit looks the same).
pub fn parse_with(text: &str, allow_empty: bool) -> Result<Config, String> {
    let config = parse(text)?;
    if config.documents == 0 && !allow_empty {
        return Err("the file has no MonitoringProfile or PodTrace document, so it would trace \
                    nothing; write one, or start the agent with --allow-empty-config if tracing \
                    nothing is meant"
            .into());
    }
    Ok(config)
}

/// Parses and validates a configuration file's text (an empty one is valid here; see
/// [`parse_with`]). Errors name the document and field.
pub fn parse(text: &str) -> Result<Config, String> {
    let mut profiles: BTreeMap<String, MonitoringProfileSpec> = BTreeMap::new();
    let mut traces: Vec<PodTrace> = Vec::new();
    let mut documents = 0;
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let n = i + 1;
        let value =
            serde_json::Value::deserialize(doc).map_err(|e| format!("document {n}: {e}"))?;
        if value.is_null() {
            continue;
        }
        documents += 1;
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_owned();
        let api = value.get("apiVersion").and_then(|k| k.as_str()).unwrap_or_default();
        if api != "podtrace.dev/v1alpha1" {
            return Err(format!(
                "document {n}: apiVersion must be podtrace.dev/v1alpha1, not {api:?}"
            ));
        }
        match kind.as_str() {
            "MonitoringProfile" => {
                let p: MonitoringProfile = serde_json::from_value(value)
                    .map_err(|e| format!("document {n} (MonitoringProfile): {e}"))?;
                let name = p
                    .metadata
                    .name
                    .clone()
                    .ok_or(format!("document {n}: metadata.name is required"))?;
                validate_profile(&p.spec)
                    .map_err(|e| format!("MonitoringProfile {name:?}: spec.{e}"))?;
                profiles.insert(name, p.spec);
            }
            "PodTrace" => traces.push(
                serde_json::from_value(value)
                    .map_err(|e| format!("document {n} (PodTrace): {e}"))?,
            ),
            other => {
                return Err(format!(
                    "document {n}: kind {other:?} is not MonitoringProfile or PodTrace"
                ));
            }
        }
    }
    let lookup = |name: &str| {
        profiles.get(name).cloned().or_else(|| Preset::from_name(name).map(Preset::spec))
    };
    let mut out = Config { documents, ..Default::default() };
    for t in traces {
        let name = t.metadata.name.clone().ok_or("a PodTrace has no metadata.name")?;
        let what = format!("PodTrace {name:?}");
        if t.spec.profile_ref.is_some() && t.spec.profile.is_some() {
            return Err(format!("{what}: set at most one of spec.profileRef and spec.profile"));
        }
        let eff = effective::resolve(&t.spec, None, lookup).map_err(|e| format!("{what}: {e}"))?;
        validate_profile(&eff.spec).map_err(|e| format!("{what}: spec.profile.{e}"))?;
        let mut trace = LocalTrace {
            namespace: t.metadata.namespace.clone().unwrap_or_else(|| "standalone".into()),
            name,
            cgroups: Vec::new(),
            process_names: Vec::new(),
            pids: Vec::new(),
            profile_name: eff.name,
            profile: eff.spec,
            paused: t.spec.paused,
        };
        let sel = &t.spec.selector;
        let mut pairs: Vec<(String, Vec<String>)> =
            sel.match_labels.iter().flatten().map(|(k, v)| (k.clone(), vec![v.clone()])).collect();
        for e in sel.match_expressions.iter().flatten() {
            if e.operator != "In" {
                return Err(format!(
                    "{what}: spec.selector.matchExpressions: only operator In is supported standalone, not {:?}",
                    e.operator
                ));
            }
            pairs.push((e.key.clone(), e.values.clone().unwrap_or_default()));
        }
        for (key, values) in pairs {
            match key.as_str() {
                CGROUP_KEY => trace.cgroups.extend(values),
                PROCESS_NAME_KEY => trace.process_names.extend(values),
                PID_KEY => {
                    for v in values {
                        trace.pids.push(v.parse().map_err(|_| {
                            format!("{what}: {PID_KEY} value {v:?} is not a process id")
                        })?);
                    }
                }
                other => {
                    return Err(format!(
                        "{what}: spec.selector key {other:?} cannot match anything on a single machine; use {CGROUP_KEY}, {PROCESS_NAME_KEY} or {PID_KEY}"
                    ));
                }
            }
        }
        if trace.cgroups.is_empty() && trace.process_names.is_empty() && trace.pids.is_empty() {
            return Err(format!(
                "{what}: spec.selector selects nothing; set {CGROUP_KEY}, {PROCESS_NAME_KEY} or {PID_KEY}"
            ));
        }
        out.traces.push(trace);
    }
    Ok(out)
}

/// The checks the CRD's CEL rules make on a cluster, for hand-written files.
pub fn validate_profile(p: &MonitoringProfileSpec) -> Result<(), String> {
    let interval = p.interval().map_err(|e| format!("interval: {e}"))?;
    if !(1..=3600).contains(&interval.as_secs()) || interval.as_secs_f64() < 1.0 {
        return Err("interval: must be between 1s and 1h".into());
    }
    let r = &p.resource_limits;
    if !(r.warning_percent < r.critical_percent && r.critical_percent < r.emergency_percent) {
        return Err(
            "resourceLimits: warningPercent < criticalPercent < emergencyPercent is required"
                .into(),
        );
    }
    if !(1..=100).contains(&r.emergency_percent) || r.warning_percent < 1 {
        return Err("resourceLimits: percentages must be between 1 and 100".into());
    }
    if !(0..=10000).contains(&p.history.size) {
        return Err("history.size: must be between 0 and 10000".into());
    }
    if !(10..=100000).contains(&p.max_series_per_pod) {
        return Err("maxSeriesPerPod: must be between 10 and 100000".into());
    }
    Ok(())
}

/// Reads and parses a file (see [`parse_with`] for `allow_empty`).
pub fn load(path: &Path, allow_empty: bool) -> crate::Result<Config> {
    let content = std::fs::read(path)
        .map_err(|e| crate::Error::Config { path: path.to_owned(), message: e.to_string() })?;
    parse_content(path, &content, allow_empty)
}

/// Parses the content of the file at `path` (see [`parse_with`] for `allow_empty`).
pub fn parse_content(path: &Path, content: &[u8], allow_empty: bool) -> crate::Result<Config> {
    let err = |message: String| crate::Error::Config { path: path.to_owned(), message };
    let text = std::str::from_utf8(content).map_err(|e| err(format!("not UTF-8 text: {e}")))?;
    parse_with(text, allow_empty).map_err(err)
}

/// A process on this machine: pid, comm and cgroup path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalProcess {
    /// Process id.
    pub pid: u32,
    /// Command name.
    pub comm: String,
    /// Relative cgroup path.
    pub cgroup: String,
}

/// Every process of `proc` (normally `/proc`; only when a trace selects processes).
pub fn local_processes(proc: &Path) -> Vec<LocalProcess> {
    let Ok(entries) = std::fs::read_dir(proc) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let comm = std::fs::read_to_string(proc.join(format!("{pid}/comm"))).ok()?;
            let cgroup = parse_proc_cgroup(
                &std::fs::read_to_string(proc.join(format!("{pid}/cgroup"))).ok()?,
            )?;
            Some(LocalProcess { pid, comm: comm.trim_end().to_owned(), cgroup })
        })
        .collect()
}

/// What a trace selects, before cgroup lookup: per cgroup path, all processes or some.
pub fn select(
    trace: &LocalTrace,
    cgroups: &[String],
    processes: &[LocalProcess],
) -> BTreeMap<String, Option<Vec<u32>>> {
    let cgroup_ok = |path: &str| {
        trace.cgroups.is_empty() || trace.cgroups.iter().any(|g| glob::matches(g, path))
    };
    let mut out: BTreeMap<String, Option<Vec<u32>>> = BTreeMap::new();
    if trace.process_names.is_empty() && trace.pids.is_empty() {
        for c in cgroups.iter().filter(|c| cgroup_ok(c)) {
            out.insert(c.clone(), None);
        }
        return out;
    }
    for p in processes {
        let by_name = trace.process_names.is_empty()
            || trace.process_names.iter().any(|g| glob::matches(g, &p.comm));
        let by_pid = trace.pids.is_empty() || trace.pids.contains(&p.pid);
        if by_name && by_pid && cgroup_ok(&p.cgroup) {
            out.entry(p.cgroup.clone())
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(p.pid);
        }
    }
    out
}

/// The container name of a cgroup path: its last segment (`root` for `/`).
pub fn container_name(path: &str) -> String {
    match path.trim_end_matches('/').rsplit('/').next() {
        Some("") | None => "root".into(),
        Some(leaf) => leaf.to_owned(),
    }
}

/// Resolves the traces of `config` against this machine's cgroups and processes.
pub fn resolve(config: &Config, layout: &CgroupLayout, proc: &Path) -> (Vec<Target>, Vec<Pending>) {
    let active: Vec<&LocalTrace> = config.traces.iter().filter(|t| !t.paused).collect();
    let cgroups =
        if active.iter().any(|t| !t.cgroups.is_empty()) { layout.walk() } else { Vec::new() };
    let processes = if active.iter().any(|t| !t.process_names.is_empty() || !t.pids.is_empty()) {
        local_processes(proc)
    } else {
        Vec::new()
    };
    let mut targets = Vec::new();
    let mut pending = Vec::new();
    for t in active {
        let selected = select(t, &cgroups, &processes);
        if selected.is_empty() {
            pending.push(Pending {
                key: TargetKey::new(&t.namespace, &t.name, ""),
                uid: String::new(),
                reason: PodAttachReason::CgroupNotFound,
                message: format!(
                    "nothing matches yet (cgroups {:?}, process names {:?}, pids {:?}); retrying",
                    t.cgroups, t.process_names, t.pids
                ),
            });
            continue;
        }
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        for path in selected.keys() {
            *names.entry(container_name(path)).or_default() += 1;
        }
        for (path, pids) in selected {
            let leaf = container_name(&path);
            // Two cgroups with the same last segment are told apart by their whole path.
            let container = if names[&leaf] > 1 {
                path.trim_start_matches('/').replace('/', "_")
            } else {
                leaf
            };
            let key = TargetKey::new(&t.namespace, &t.name, &container);
            match layout.resolve(&path) {
                Some(cgroup) => targets.push(Target {
                    key,
                    uid: String::new(),
                    cgroup,
                    pids,
                    profile: t.profile.clone(),
                    pod_labels: Labels::default(),
                }),
                None => pending.push(Pending {
                    key,
                    uid: String::new(),
                    reason: PodAttachReason::CgroupNotFound,
                    message: format!("cgroup {path} vanished"),
                }),
            }
        }
    }
    (targets, pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
apiVersion: podtrace.dev/v1alpha1
kind: MonitoringProfile
metadata: {name: fast}
spec: {interval: 2s, history: {size: 5}}
---
apiVersion: podtrace.dev/v1alpha1
kind: PodTrace
metadata: {name: demo, namespace: lab}
spec:
  selector:
    matchLabels: {podtrace.dev/cgroup: "/podtrace-demo/*"}
  profileRef: {name: fast}
---
apiVersion: podtrace.dev/v1alpha1
kind: PodTrace
metadata: {name: shells}
spec:
  selector:
    matchExpressions:
    - {key: podtrace.dev/process-name, operator: In, values: ["bash", "zsh*"]}
    - {key: podtrace.dev/pid, operator: In, values: ["1", "42"]}
  profileRef: {name: minimal}
"#;

    #[test]
    fn file_maps_selectors_and_resolves_profiles_from_the_file_and_presets() {
        let c = parse(FILE).unwrap();
        assert_eq!(c.traces.len(), 2);
        let demo = &c.traces[0];
        assert_eq!((demo.namespace.as_str(), demo.name.as_str()), ("lab", "demo"));
        assert_eq!(demo.cgroups, ["/podtrace-demo/*"]);
        assert_eq!((demo.profile.interval.as_str(), demo.profile.history.size), ("2s", 5));
        let shells = &c.traces[1];
        assert_eq!(shells.namespace, "standalone");
        assert_eq!(shells.process_names, ["bash", "zsh*"]);
        assert_eq!(shells.pids, [1, 42]);
        assert_eq!(shells.profile, Preset::Minimal.spec());
    }

    #[test]
    fn bad_files_are_rejected_with_the_place_and_advice() {
        let err = |t: &str| parse(t).unwrap_err();
        assert!(
            err("kind: Pod\napiVersion: v1\n").contains("apiVersion must be podtrace.dev/v1alpha1")
        );
        assert!(
            err("apiVersion: podtrace.dev/v1alpha1\nkind: Pod\n")
                .contains("not MonitoringProfile or PodTrace")
        );
        let bad_label = "apiVersion: podtrace.dev/v1alpha1\nkind: PodTrace\nmetadata: {name: x}\nspec: {selector: {matchLabels: {app: web}}}\n";
        assert!(err(bad_label).contains("cannot match anything on a single machine"));
        let empty = "apiVersion: podtrace.dev/v1alpha1\nkind: PodTrace\nmetadata: {name: x}\nspec: {selector: {}}\n";
        assert!(err(empty).contains("selects nothing"));
        let missing = "apiVersion: podtrace.dev/v1alpha1\nkind: PodTrace\nmetadata: {name: x}\nspec: {selector: {matchLabels: {podtrace.dev/pid: \"1\"}}, profileRef: {name: nope}}\n";
        assert!(err(missing).contains("\"nope\""));
        let interval = "apiVersion: podtrace.dev/v1alpha1\nkind: MonitoringProfile\nmetadata: {name: p}\nspec: {interval: 2h}\n";
        assert!(err(interval).contains("spec.interval: must be between 1s and 1h"));
        let pid = "apiVersion: podtrace.dev/v1alpha1\nkind: PodTrace\nmetadata: {name: x}\nspec: {selector: {matchLabels: {podtrace.dev/pid: abc}}}\n";
        assert!(err(pid).contains("not a process id"));
        assert!(err("{{{").contains("document 1"));
    }

    #[test]
    fn an_empty_file_is_an_error_unless_allowed() {
        for empty in ["", "\n# a comment\n", "---\n---\n"] {
            let e = parse_with(empty, false).unwrap_err();
            assert!(e.contains("--allow-empty-config"), "{empty:?}: {e}");
            assert!(parse_with(empty, true).unwrap().traces.is_empty());
        }
        assert_eq!(parse_with(FILE, false).unwrap().traces.len(), 2);
    }

    #[test]
    fn selection_combines_keys_with_and_and_values_with_or() {
        let c = parse(FILE).unwrap();
        let procs = vec![
            LocalProcess { pid: 1, comm: "bash".into(), cgroup: "/user/a".into() },
            LocalProcess { pid: 42, comm: "zshx".into(), cgroup: "/user/a".into() },
            LocalProcess { pid: 43, comm: "bash".into(), cgroup: "/user/b".into() },
        ];
        let s = select(&c.traces[1], &[], &procs);
        assert_eq!(s, BTreeMap::from([("/user/a".to_string(), Some(vec![1, 42]))]));
        let cgroups = vec![
            "/podtrace-demo".into(),
            "/podtrace-demo/web".into(),
            "/podtrace-demo/web/x".into(),
        ];
        let s = select(&c.traces[0], &cgroups, &procs);
        assert_eq!(s, BTreeMap::from([("/podtrace-demo/web".to_string(), None)]));
        assert_eq!(container_name("/podtrace-demo/web"), "web");
        assert_eq!(container_name("/"), "root");
    }
}
