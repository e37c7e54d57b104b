//! podtrace as users run it: installed with Helm (or `kubectl apply`) from the images
//! `make images` builds, on a real node (kubelet, containerd, runc, CNI; `e2e/scripts/node.sh`),
//! tracing real pods. Needs root (namespaces, cgroups, eBPF).

mod gaps;
mod install;
mod plugin;
mod prometheus;
mod rbac;
mod workload;

use anyhow::{Context, Result, bail};
use podtrace_e2e::node::{Node, wait_until};
use serde_json::Value;
use std::time::Duration;

/// The namespace the README installs podtrace into (Helm and manifests alike).
const RELEASE_NAMESPACE: &str = "podtrace-system";

/// The label of the namespaces a test creates for its workloads, deleted with the release.
const WORKLOAD_LABEL: &str = "podtrace.dev/e2e-workload=true";

/// How a test installed podtrace.
#[derive(Clone, Copy)]
enum How {
    /// `helm install podtrace charts/podtrace`.
    Helm,
    /// `kubectl apply -f manifests/podtrace.yaml`.
    Manifests,
}

/// Removes what a test installed when dropped (also when the test fails): its PodTraces
/// (while the operator still runs to release their finalizer), the release or the manifests,
/// the CRDs and the namespace, so that the next test starts from an empty cluster.
struct Installed<'a> {
    node: &'a Node,
    how: How,
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        let node = self.node;
        let _ = node.kubectl(&["delete", "podtraces", "--all", "-A", "--timeout=30s"], None);
        // Should the operator be gone already, nothing releases the finalizer: drop it.
        let left = node.kubectl(&["get", "podtraces", "-A", "-o", "name"], None);
        for line in String::from_utf8_lossy(&left.stdout).lines() {
            let ns =
                node.kubectl(&["get", line, "-A", "-o", "jsonpath={.metadata.namespace}"], None);
            let ns = String::from_utf8_lossy(&ns.stdout).into_owned();
            let _ = node.kubectl(
                &[
                    "patch",
                    line,
                    "-n",
                    &ns,
                    "--type=merge",
                    "-p",
                    r#"{"metadata":{"finalizers":null}}"#,
                ],
                None,
            );
        }
        match self.how {
            How::Helm => {
                let _ = node.helm(&["uninstall", "podtrace", "-n", RELEASE_NAMESPACE, "--wait"]);
            }
            How::Manifests => {
                let manifests = podtrace_e2e::repo_root().join("manifests/podtrace.yaml");
                let _ = node.kubectl(
                    &[
                        "delete",
                        "--ignore-not-found",
                        "--wait=true",
                        "-f",
                        manifests.to_str().unwrap(),
                    ],
                    None,
                );
            }
        }
        // Whatever an interrupted uninstall left of the cluster-scoped objects.
        let _ = node.kubectl(
            &["delete", "clusterrole,clusterrolebinding", "-l", "app.kubernetes.io/name=podtrace"],
            None,
        );
        for crd in ["podtraces", "monitoringprofiles", "nodetraces", "podtraceprofiles"] {
            let _ = node.kubectl(
                &["delete", "crd", &format!("{crd}.podtrace.dev"), "--ignore-not-found"],
                None,
            );
        }
        let _ = node.kubectl(&["delete", "namespace", "-l", WORKLOAD_LABEL, "--timeout=60s"], None);
        let _ = node.kubectl(
            &["delete", "namespace", RELEASE_NAMESPACE, "--ignore-not-found", "--timeout=60s"],
            None,
        );
    }
}

/// `kubectl get … -o json`.
fn get_json(node: &Node, args: &[&str]) -> Result<Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend(["-o", "json"]);
    Ok(serde_json::from_str(&node.kubectl_ok(&all)?)?)
}

/// Creates namespace `name` and waits for its `default` ServiceAccount (the controller-manager
/// makes it a moment later; pods are refused until then).
fn namespace(node: &Node, name: &str) {
    node.kubectl_ok(&["create", "namespace", name]).unwrap();
    node.kubectl_ok(&["label", "namespace", name, WORKLOAD_LABEL]).unwrap();
    wait_until(&format!("ServiceAccount {name}/default"), Duration::from_secs(60), || {
        node.kubectl_ok(&["get", "serviceaccount", "default", "-n", name])
    });
}

/// Waits until the operator Deployment and the agent DaemonSet of a release named `release`
/// are rolled out and Ready (through the chart's own gRPC probes).
fn wait_ready(node: &Node, release: &str) {
    for workload in [format!("deployment/{release}-operator"), format!("daemonset/{release}-agent")]
    {
        let out = node.kubectl(
            &["rollout", "status", &workload, "-n", RELEASE_NAMESPACE, "--timeout=180s"],
            None,
        );
        assert!(
            out.status.success(),
            "{workload} not ready: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            diagnostics(node)
        );
    }
}

/// `helm upgrade --install podtrace charts/podtrace` as the tests install it: the images of
/// `make images` (never pulled), the node's kubelet cgroupRoot, and `extra` values; then waits
/// for the operator and the agent to be Ready.
fn helm_install(node: &Node, extra: &[&str]) {
    let chart = podtrace_e2e::repo_root().join("charts/podtrace");
    let root = format!("agent.kubeletCgroupRoot={}", node.kubelet_cgroup_root);
    let mut args =
        vec!["upgrade", "--install", "podtrace", chart.to_str().unwrap(), "-n", RELEASE_NAMESPACE];
    args.extend(["--create-namespace", "--set", "image.pullPolicy=Never", "--set", &root]);
    args.extend_from_slice(extra);
    node.helm(&args).unwrap();
    wait_ready(node, "podtrace");
}

/// `kubectl patch daemonset podtrace-agent --type=<kind> -p <patch>`, then waits for the rollout.
fn patch_agent(node: &Node, kind: &str, patch: &str) {
    let kind = format!("--type={kind}");
    node.kubectl_ok(&[
        "patch",
        "daemonset",
        "podtrace-agent",
        "-n",
        RELEASE_NAMESPACE,
        &kind,
        "-p",
        patch,
    ])
    .unwrap();
    wait_ready(node, "podtrace");
}

/// `kubectl set env daemonset/podtrace-agent <var>` (no wait: the new pod may never be Ready).
fn set_agent_env(node: &Node, var: &str) {
    node.kubectl_ok(&["set", "env", "daemonset/podtrace-agent", "-n", RELEASE_NAMESPACE, var])
        .unwrap();
}

/// What a person would look at when a rollout fails: pods, events and the agent's log.
fn diagnostics(node: &Node) -> String {
    let mut out = String::new();
    for args in [
        vec!["get", "pods", "-A", "-o", "wide"],
        vec!["get", "events", "-n", RELEASE_NAMESPACE, "--sort-by=.lastTimestamp"],
        vec![
            "logs",
            "-n",
            RELEASE_NAMESPACE,
            "-l",
            "app.kubernetes.io/component=agent",
            "--tail=40",
        ],
        vec![
            "logs",
            "-n",
            RELEASE_NAMESPACE,
            "-l",
            "app.kubernetes.io/component=operator",
            "--tail=40",
        ],
    ] {
        let o = node.kubectl(&args, None);
        out.push_str(&format!(
            "$ kubectl {}\n{}{}\n",
            args.join(" "),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    out
}

/// The name of the one pod in `namespace` with labels `selector`.
fn pod_name(node: &Node, namespace: &str, selector: &str) -> Result<String> {
    let pods = get_json(node, &["pods", "-n", namespace, "-l", selector])?;
    let items = pods["items"].as_array().context("items")?;
    let running: Vec<&Value> =
        items.iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).collect();
    match running.as_slice() {
        [p] => Ok(p["metadata"]["name"].as_str().context("name")?.to_owned()),
        other => bail!("{} pods match {selector} in {namespace}", other.len()),
    }
}

/// The agent pod's `/metrics` (through the API server's pod proxy).
fn agent_metrics(node: &Node, release: &str) -> Result<String> {
    let pod = pod_name(
        node,
        RELEASE_NAMESPACE,
        &format!("app.kubernetes.io/instance={release},app.kubernetes.io/component=agent"),
    )?;
    node.pod_get(RELEASE_NAMESPACE, &pod, 3000, "/metrics")
}

/// The values of the samples of `name` whose labels include every `labels` pair.
fn samples(text: &str, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}
