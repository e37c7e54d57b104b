//! What the agent cannot read, it says: an agent pod without `CAP_SYS_PTRACE` and
//! `CAP_DAC_READ_SEARCH` cannot read a non-root workload's `/proc/<pid>/io` and `fd`, and one
//! without `hostPID` gets no usable pids. Each is reported in `podtrace_agent_data_unavailable`,
//! `health live` and the NodeTrace's Degraded condition, and the affected series are left out
//! instead of being exported as 0.

use super::{
    How, Installed, RELEASE_NAMESPACE, agent_metrics, get_json, helm_install, namespace,
    patch_agent, pod_name, samples,
};
use anyhow::{Context, Result, ensure};
use podtrace_e2e::node::{Node, node, wait_until};
use std::time::Duration;

const APPS: &str = "gaps";

/// A workload running as uid 1000 (its /proc files are not root's) that writes a file and
/// keeps a few descriptors open, traced with the `standard` preset (every collector).
const WORKLOAD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: app, namespace: gaps, labels: {app: app}}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {runAsUser: 1000, runAsGroup: 1000}
  containers:
    - name: app
      image: podtrace.test/workload:1
      imagePullPolicy: Never
      command: [sh, -c, 'while true; do dd if=/dev/zero of=/tmp/f bs=4k count=8 2> /dev/null; sleep 1; done']
---
apiVersion: podtrace.dev/v1alpha1
kind: PodTrace
metadata: {name: app, namespace: gaps}
spec:
  selector: {matchLabels: {app: app}}
  profileRef: {name: standard}
"#;

/// The gaps the agent reports (`source/data/reason` of each `podtrace_agent_data_unavailable`).
fn gaps(node: &Node) -> Result<Vec<String>> {
    let m = agent_metrics(node, "podtrace")?;
    let mut out: Vec<String> = m
        .lines()
        .filter(|l| l.starts_with("podtrace_agent_data_unavailable{") && l.ends_with(" 1"))
        .map(|l| {
            let label = |k: &str| {
                l.split(&format!("{k}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap_or("")
            };
            format!("{}/{}/{}", label("source"), label("data"), label("reason"))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// `podtrace-agent health live` inside the agent pod: its output.
fn health(node: &Node) -> String {
    let agent = pod_name(node, RELEASE_NAMESPACE, "app.kubernetes.io/component=agent").unwrap();
    let out = node.kubectl(
        &["exec", "-n", RELEASE_NAMESPACE, &agent, "--", "/podtrace-agent", "health", "live"],
        None,
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Degraded condition of the node's NodeTrace: (status, reason, message).
fn degraded(node: &Node) -> Result<(String, String, String)> {
    let nt = get_json(node, &["nodetrace", &node.name])?;
    let c = nt["status"]["conditions"]
        .as_array()
        .context("conditions")?
        .iter()
        .find(|c| c["type"] == "Degraded")
        .context("no Degraded condition")?
        .clone();
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
    Ok((s("status"), s("reason"), s("message")))
}

/// Replaces the agent container's capabilities and rolls the DaemonSet out.
fn agent_capabilities(node: &Node, caps: &[&str]) {
    let patch = serde_json::json!([{
        "op": "replace",
        "path": "/spec/template/spec/containers/0/securityContext/capabilities/add",
        "value": caps,
    }]);
    patch_agent(node, "json", &patch.to_string());
}

#[test]
fn data_the_agent_cannot_read_is_reported_not_exported_as_zero() {
    let Some((_turn, node)) = node("data_the_agent_cannot_read_is_reported_not_exported_as_zero")
    else {
        return;
    };
    let _installed = Installed { node, how: How::Helm };
    helm_install(node, &[]);
    namespace(node, APPS);
    let out = node.kubectl(&["apply", "-f", "-"], Some(WORKLOAD));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let disk = |node: &Node| -> Result<Vec<f64>> {
        let m = agent_metrics(node, "podtrace")?;
        Ok(samples(&m, "podtrace_process_disk_write_bytes_total", &[("pod", "app")]))
    };

    // With the chart's capabilities and hostPID: everything is read, nothing is reported.
    wait_until(
        "the non-root workload's disk and descriptor series",
        Duration::from_secs(90),
        || {
            let m = agent_metrics(node, "podtrace")?;
            ensure!(!disk(node)?.is_empty(), "no disk series");
            ensure!(
                !samples(&m, "podtrace_process_open_fds", &[("pod", "app")]).is_empty(),
                "no fds"
            );
            Ok(())
        },
    );
    assert_eq!(gaps(node).unwrap(), Vec::<String>::new());
    assert!(health(node).contains("Optimal"), "{}", health(node));

    // Without CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH: io, fds and network are refused.
    agent_capabilities(node, &["BPF", "PERFMON", "NET_ADMIN"]);
    wait_until("the refusals reported", Duration::from_secs(90), || {
        let g = gaps(node)?;
        let want = ["process/fds/permission_denied", "process/io/permission_denied"];
        ensure!(want.iter().all(|w| g.iter().any(|x| x == w)), "gaps {g:?}");
        ensure!(disk(node)?.is_empty(), "disk series exported although /proc/<pid>/io is refused");
        let (status, reason, message) = degraded(node)?;
        ensure!(status == "True" && reason == "DataUnavailable", "{status} {reason} {message}");
        ensure!(message.contains("CAP_SYS_PTRACE"), "{message}");
        let h = health(node);
        ensure!(h.contains("Healthy") && h.contains("podtrace.collectors"), "{h}");
        Ok(())
    });

    // Without hostPID: the agent says it gets no usable pids.
    agent_capabilities(node, &["BPF", "PERFMON", "NET_ADMIN", "SYS_PTRACE", "DAC_READ_SEARCH"]);
    patch_agent(node, "merge", r#"{"spec":{"template":{"spec":{"hostPID":false}}}}"#);
    wait_until("the PID namespace reported", Duration::from_secs(90), || {
        let g = gaps(node)?;
        ensure!(g == ["process/pids/pid_namespace"], "gaps {g:?}");
        let (_, reason, message) = degraded(node)?;
        ensure!(reason == "DataUnavailable" && message.contains("hostPID"), "{reason} {message}");
        Ok(())
    });
}
