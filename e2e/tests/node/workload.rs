//! The test workload: a Deployment of the busybox image `podtrace.test/workload:1` that serves
//! HTTP, requests it, resolves a name and writes files, with a memory limit and a memory-backed
//! emptyDir to drive its memory usage; and the ground truth of its memory from its cgroup.

use super::get_json;
use anyhow::{Context, Result, bail, ensure};
use podtrace_e2e::node::Node;
use std::path::{Path, PathBuf};

/// The workload container's memory limit.
pub const MEMORY_LIMIT: u64 = 128 << 20;

/// Serves HTTP on :8080, and every half second requests a page from its own pod IP, resolves a
/// name (dnsmasq on the node answers `*.podtrace.test`) and writes a file with fsync, until
/// /tmp/exit exists (then the container exits with 1 and the kubelet restarts it).
const SCRIPT: &str = r#"
mkdir -p /www && echo hello > /www/index.html
httpd -p 8080 -h /www
ip=$(hostname -i)
while [ ! -e /tmp/exit ]; do
  printf 'GET /index.html HTTP/1.0\r\n\r\n' | nc "$ip" 8080 > /dev/null
  nslookup web.podtrace.test > /dev/null 2>&1
  dd if=/dev/zero of=/tmp/file bs=4096 count=16 conv=fsync 2> /dev/null
  sleep 0.5
done
exit 1
"#;

/// Deployment `namespace/name` (one replica, label `app: <name>`, container `app`).
pub fn deployment(namespace: &str, name: &str) -> String {
    let script = serde_json::to_string(SCRIPT).unwrap();
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: app
          image: podtrace.test/workload:1
          imagePullPolicy: Never
          command: [sh, -c, {script}]
          resources:
            requests: {{cpu: 50m, memory: 32Mi}}
            limits: {{cpu: 500m, memory: {MEMORY_LIMIT}}}
          volumeMounts: [{{name: fill, mountPath: /fill}}]
      volumes: [{{name: fill, emptyDir: {{medium: Memory}}}}]
"#
    )
}

/// PodTrace `namespace/name` selecting `app: <name>` with the preset `profile`.
pub fn podtrace(namespace: &str, name: &str, profile: &str) -> String {
    format!(
        r#"
apiVersion: podtrace.dev/v1alpha1
kind: PodTrace
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  profileRef: {{name: {profile}}}
"#
    )
}

/// Applies `manifests` and waits for the Deployments `names` of `namespace` to roll out.
pub fn start(node: &Node, namespace: &str, names: &[&str]) {
    let manifests: Vec<String> = names.iter().map(|n| deployment(namespace, n)).collect();
    let out = node.kubectl(&["apply", "-f", "-"], Some(&manifests.join("---")));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for name in names {
        let out = node.kubectl(
            &[
                "rollout",
                "status",
                &format!("deployment/{name}"),
                "-n",
                namespace,
                "--timeout=120s",
            ],
            None,
        );
        assert!(
            out.status.success(),
            "{name}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            super::diagnostics(node)
        );
    }
}

/// The `containerd://…` ID of container `app` of pod `namespace/pod`.
pub fn container_id(node: &Node, namespace: &str, pod: &str) -> Result<String> {
    let p = get_json(node, &["pod", pod, "-n", namespace])?;
    let id = p["status"]["containerStatuses"][0]["containerID"].as_str().unwrap_or_default();
    ensure!(id.starts_with("containerd://"), "no container ID yet: {:#}", p["status"]);
    Ok(id.to_owned())
}

/// The container's cgroup directory in the v1 memory hierarchy (or v2), from the pod's UID,
/// QoS class and container ID as the kubelet lays them out (cgroupfs driver).
pub fn memory_dir(node: &Node, namespace: &str, pod: &str, container_id: &str) -> Result<PathBuf> {
    let p = get_json(node, &["pod", pod, "-n", namespace])?;
    let uid = p["metadata"]["uid"].as_str().context("uid")?;
    let qos = p["status"]["qosClass"].as_str().context("qosClass")?.to_lowercase();
    let id = container_id.trim_start_matches("containerd://");
    let relative = match qos.as_str() {
        "guaranteed" => format!("kubepods/pod{uid}/{id}"),
        q => format!("kubepods/{q}/pod{uid}/{id}"),
    };
    for h in ["memory", "unified"] {
        let dir = node.cgroup_dir(h, &relative);
        if dir.is_dir() {
            return Ok(dir);
        }
    }
    bail!("no memory cgroup for {relative}")
}

/// Ground truth: the cgroup's own memory usage (v1 `memory.usage_in_bytes`, v2 `memory.current`).
pub fn cgroup_memory(dir: &Path) -> Result<f64> {
    let file = ["memory.usage_in_bytes", "memory.current"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists())
        .context("no memory usage file")?;
    Ok(std::fs::read_to_string(&file)?.trim().parse()?)
}

/// Grows (or shrinks) the file in the pod's memory-backed emptyDir so that the container's
/// memory usage is about `percent` of its limit; `dir` is its memory cgroup.
pub fn fill_memory(node: &Node, namespace: &str, pod: &str, dir: &Path, percent: f64) {
    let usage = cgroup_memory(dir).unwrap();
    let du = node.kubectl_ok(&["exec", "-n", namespace, pod, "--", "du", "-sk", "/fill"]).unwrap();
    let filled_kib: f64 = du.split_whitespace().next().unwrap().parse().unwrap();
    let target = MEMORY_LIMIT as f64 * percent / 100.0;
    let total_kib = (filled_kib + ((target - usage) / 1024.0).ceil()).max(0.0) as u64;
    node.kubectl_ok(&[
        "exec",
        "-n",
        namespace,
        pod,
        "--",
        "dd",
        "if=/dev/zero",
        "of=/fill/data",
        "bs=1024",
        &format!("count={total_kib}"),
    ])
    .unwrap();
}
