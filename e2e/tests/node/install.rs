//! A Helm release on the real node traces a real Deployment end to end.

use super::{
    How, Installed, RELEASE_NAMESPACE, agent_metrics, get_json, helm_install, namespace, pod_name,
    samples,
    workload::{self, MEMORY_LIMIT, cgroup_memory, fill_memory, memory_dir},
};
use anyhow::{Context, Result, ensure};
use podtrace_e2e::node::{Node, node, wait_until};
use serde_json::Value;
use std::time::{Duration, Instant};

const RELEASE: &str = "podtrace";
const WORKLOAD_NAMESPACE: &str = "shop";
/// `helm install` of the chart with the images of `make images`; the steps of a user's first
/// day: operator and agent Ready through their gRPC probes, a PodTrace selects a Deployment,
/// the real containers' cgroups are resolved and measured, status rolls up, a restart is
/// followed, memory alerts rise with usage, the trace is removed cleanly, and the release is
/// upgraded and uninstalled.
#[test]
fn a_helm_release_traces_real_pods_end_to_end() {
    let Some((_turn, node)) = node("a_helm_release_traces_real_pods_end_to_end") else { return };
    let started = Instant::now();
    let _installed = Installed { node, how: How::Helm };
    helm_install(node, &[]);
    eprintln!("helm install → operator and agent Ready in {:.1}s", started.elapsed().as_secs_f64());
    // The operator created the six presets.
    wait_until("the six preset MonitoringProfiles", Duration::from_secs(60), || {
        let n = get_json(node, &["monitoringprofiles"])?["items"].as_array().map_or(0, Vec::len);
        ensure!(n == 6, "{n} MonitoringProfiles");
        Ok(())
    });

    namespace(node, WORKLOAD_NAMESPACE);
    workload::start(node, WORKLOAD_NAMESPACE, &["web", "other"]);
    let podtrace = workload::podtrace(WORKLOAD_NAMESPACE, "web", "intensive");
    let out = node.kubectl(&["apply", "-f", "-"], Some(&podtrace));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The operator writes the real container ID into the node's NodeTrace.
    let web = pod_name(node, WORKLOAD_NAMESPACE, "app=web").unwrap();
    let first_id = container_id(node, &web).unwrap();
    wait_until("the NodeTrace lists web with its container ID", Duration::from_secs(60), || {
        let line = node_trace_line(node, &web)?;
        ensure!(line.contains(&first_id), "{line}");
        Ok(())
    });

    // The agent (inside its pod) attaches and reports; the PodTrace rolls the report up.
    wait_until("PodTrace web: 1/1 nodes ready, 1 pod attached", Duration::from_secs(90), || {
        let pt = get_json(node, &["podtrace", "web", "-n", WORKLOAD_NAMESPACE])?;
        let status = &pt["status"];
        ensure!(status["readyNodes"] == "1/1" && status["matchedPods"] == 1, "{status:#}");
        ensure!(status["nodes"][0]["attached"] == 1, "{status:#}");
        Ok(())
    });
    check_probes_attached_as_on_the_host(node);

    // The pod's series carry namespace/pod/container, and the untraced pod has none.
    let other = pod_name(node, WORKLOAD_NAMESPACE, "app=other").unwrap();
    let labels = [("namespace", WORKLOAD_NAMESPACE), ("pod", web.as_str()), ("container", "app")];
    wait_until("web's resource, process and eBPF series", Duration::from_secs(90), || {
        let m = agent_metrics(node, RELEASE)?;
        for (name, extra) in [
            ("podtrace_resource_usage_bytes", vec![("resource_type", "memory")]),
            ("podtrace_process_threads", vec![]),
            ("podtrace_latency_seconds_count", vec![]),
            ("podtrace_dns_latency_seconds_histogram_count", vec![]),
            ("podtrace_filesystem_bytes_total", vec![]),
            ("podtrace_network_bytes_total", vec![]),
        ] {
            let mut want = labels.to_vec();
            want.extend(extra);
            let values = samples(&m, name, &want);
            ensure!(values.iter().any(|v| *v > 0.0), "{name}{want:?}: {values:?}");
        }
        ensure!(!m.contains(&format!("pod=\"{other}\"")), "the untraced pod {other} has series");
        Ok(())
    });
    check_memory_against_the_cgroup(node, &web, &first_id);
    check_alert_levels(node, &web);

    // A container restart (new container ID) is followed.
    node.kubectl_ok(&["exec", "-n", WORKLOAD_NAMESPACE, &web, "--", "touch", "/tmp/exit"]).unwrap();
    let restarted = wait_until("web's container restarted", Duration::from_secs(60), || {
        let id = container_id(node, &web)?;
        ensure!(id != first_id, "still {id}");
        Ok(id)
    });
    wait_until(
        "the NodeTrace and the agent follow the new container",
        Duration::from_secs(90),
        || {
            ensure!(
                node_trace_line(node, &web)?.contains(&restarted),
                "NodeTrace still has the old ID"
            );
            let nt = get_json(node, &["nodetrace", &node.name])?;
            let attached = nt["status"]["pods"]
                .as_array()
                .context("status.pods")?
                .iter()
                .any(|p| p["name"] == web.as_str() && p["state"] == "Attached");
            ensure!(attached, "{:#}", nt["status"]["pods"]);
            // Memory of the new container (the old one's was tens of MiB of /fill).
            check_memory_close(node, &web, &restarted)
        },
    );

    // Deleting the PodTrace removes the pod from the NodeTrace and its series from /metrics.
    node.kubectl_ok(&["delete", "podtrace", "web", "-n", WORKLOAD_NAMESPACE, "--wait=true"])
        .unwrap();
    wait_until("web untraced", Duration::from_secs(60), || {
        ensure!(node_trace_line(node, &web).is_err(), "web is still in the NodeTrace");
        let m = agent_metrics(node, RELEASE)?;
        ensure!(!m.contains(&format!("pod=\"{web}\"")), "web's series are still served");
        Ok(())
    });

    // helm upgrade rolls both workloads; helm uninstall removes them (the CRDs stay by default).
    helm_install(node, &["--set", "logging.level=debug"]);
    let ds = get_json(node, &["daemonset", "podtrace-agent", "-n", RELEASE_NAMESPACE]).unwrap();
    assert!(
        ds.to_string().contains(r#""value":"debug""#),
        "the upgrade did not reach the DaemonSet"
    );
    node.helm(&["uninstall", RELEASE, "-n", RELEASE_NAMESPACE, "--wait"]).unwrap();
    wait_until("the release's pods gone", Duration::from_secs(60), || {
        let pods = get_json(node, &["pods", "-n", RELEASE_NAMESPACE])?;
        let n = pods["items"].as_array().map_or(0, Vec::len);
        ensure!(n == 0, "{n} pods left");
        Ok(())
    });
    node.kubectl_ok(&["get", "crd", "podtraces.podtrace.dev"]).expect("crds.keep keeps the CRDs");
}

/// The `containerd://…` ID of web's container.
fn container_id(node: &Node, pod: &str) -> Result<String> {
    workload::container_id(node, WORKLOAD_NAMESPACE, pod)
}

/// The NodeTrace line of pod `shop/<pod>`.
fn node_trace_line(node: &Node, pod: &str) -> Result<String> {
    let nt = get_json(node, &["nodetrace", &node.name])?;
    let prefix = format!("{WORKLOAD_NAMESPACE}/{pod} ");
    nt["spec"]["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|l| l.starts_with(&prefix))
        .map(str::to_owned)
        .with_context(|| format!("no {prefix}line in NodeTrace {}: {:#}", node.name, nt["spec"]))
}

/// The agent's memory usage of web's container equals the cgroup's within 2 MiB (they are read
/// up to a second apart while the workload runs).
fn check_memory_close(node: &Node, pod: &str, container_id: &str) -> Result<()> {
    let truth = cgroup_memory(&memory_dir(node, WORKLOAD_NAMESPACE, pod, container_id)?)?;
    let m = agent_metrics(node, RELEASE)?;
    let labels = [("resource_type", "memory"), ("pod", pod), ("container", "app")];
    let got = samples(&m, "podtrace_resource_usage_bytes", &labels);
    ensure!(got.len() == 1, "{got:?}");
    ensure!((got[0] - truth).abs() < 2.0 * 1048576.0, "agent {} vs cgroup {truth}", got[0]);
    Ok(())
}

fn check_memory_against_the_cgroup(node: &Node, pod: &str, container_id: &str) {
    wait_until("memory usage equal to the cgroup's", Duration::from_secs(30), || {
        check_memory_close(node, pod, container_id)
    });
    let limit = samples(
        &agent_metrics(node, RELEASE).unwrap(),
        "podtrace_resource_limit_bytes",
        &[("resource_type", "memory"), ("pod", pod), ("container", "app")],
    );
    assert_eq!(limit, [MEMORY_LIMIT as f64], "the container's memory limit");
}

/// Fills the pod's memory-backed emptyDir to 85 %, 92 % and 97 % of its memory limit: the
/// alert level of its memory series goes 1, 2, 3 (intensive: warning 80, critical 90,
/// emergency 95), with the utilization the cgroup itself shows.
fn check_alert_levels(node: &Node, pod: &str) {
    let id = container_id(node, pod).unwrap();
    let dir = memory_dir(node, WORKLOAD_NAMESPACE, pod, &id).unwrap();
    let labels = [("resource_type", "memory"), ("pod", pod), ("container", "app")];
    for (percent, level) in [(85.0, 1.0), (92.0, 2.0), (97.0, 3.0)] {
        fill_memory(node, WORKLOAD_NAMESPACE, pod, &dir, percent);
        wait_until(&format!("alert level {level} at {percent} %"), Duration::from_secs(30), || {
            let m = agent_metrics(node, RELEASE)?;
            let alert = samples(&m, "podtrace_resource_alert_level", &labels);
            let utilization = samples(&m, "podtrace_resource_utilization_percent", &labels);
            let truth = cgroup_memory(&dir)? / MEMORY_LIMIT as f64 * 100.0;
            ensure!(
                alert == [level],
                "alert {alert:?}, utilization {utilization:?}, cgroup {truth:.1} %"
            );
            ensure!(
                utilization.len() == 1 && (utilization[0] - truth).abs() < 2.0,
                "utilization {utilization:?} vs cgroup {truth:.1} %"
            );
            Ok(())
        });
    }
    // Back to normal: the level falls to 0 once the data is gone.
    node.kubectl_ok(&["exec", "-n", WORKLOAD_NAMESPACE, pod, "--", "rm", "/fill/data"]).unwrap();
    wait_until("alert level 0 after freeing", Duration::from_secs(30), || {
        let alert =
            samples(&agent_metrics(node, RELEASE)?, "podtrace_resource_alert_level", &labels);
        ensure!(alert == [0.0], "{alert:?}");
        Ok(())
    });
}

/// The agent in its pod, with only the chart's capabilities and mounts, attaches each probe
/// with the method the same kernel gives a root process on the host (`probe_status` example).
fn check_probes_attached_as_on_the_host(node: &Node) {
    let host = std::process::Command::new(podtrace_e2e::example("probe_status")).output().unwrap();
    assert!(host.status.success(), "{}", String::from_utf8_lossy(&host.stderr));
    let host = String::from_utf8(host.stdout).unwrap();
    let nt = get_json(node, &["nodetrace", &node.name]).unwrap();
    let probes = nt["status"]["probes"].as_array().cloned().unwrap_or_default();
    assert!(!probes.is_empty(), "no probes in the NodeTrace status: {:#}", nt["status"]);
    for p in &probes {
        let name = p["probe"].as_str().unwrap();
        let line = host
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("the host printed no line for {name}:\n{host}"));
        let mut words = line.split_whitespace().skip(1);
        let (state, method) = (words.next().unwrap(), words.next().unwrap());
        assert_eq!(p["state"], state, "{name}: pod {p:#} vs host {line:?}");
        assert_eq!(
            p["method"].as_str().unwrap_or("-"),
            method,
            "{name}: pod {p:#} vs host {line:?}"
        );
    }
    assert!(
        probes.iter().all(|p| p["state"] == "Attached"),
        "the intensive profile asks for every probe: {probes:#?}"
    );
}
