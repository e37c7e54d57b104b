//! `kubectl apply -f manifests/podtrace.yaml` on the real node: the binaries run as their own
//! ServiceAccounts with the chart's RBAC, and a missing rule is reported, not a silent stall.

use super::{
    How, Installed, RELEASE_NAMESPACE, agent_metrics, get_json, namespace, pod_name, samples,
    set_agent_env, wait_ready,
};
use anyhow::ensure;
use podtrace_e2e::{
    node::{node, wait_until},
    repo_root,
};
use std::time::Duration;

/// A sleeping pod and a PodTrace (the `minimal` profile: no probes) that selects it.
const TRACED_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: sleeper, namespace: rbac, labels: {app: sleeper}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - {name: app, image: "podtrace.test/workload:1", imagePullPolicy: Never, command: [sleep, "3600"]}
---
apiVersion: podtrace.dev/v1alpha1
kind: PodTrace
metadata: {name: sleeper, namespace: rbac}
spec:
  selector: {matchLabels: {app: sleeper}}
  profileRef: {name: minimal}
"#;

#[test]
fn the_manifests_run_with_their_own_rbac_and_a_missing_rule_is_reported() {
    let Some((_turn, node)) =
        node("the_manifests_run_with_their_own_rbac_and_a_missing_rule_is_reported")
    else {
        return;
    };
    let manifests = repo_root().join("manifests/podtrace.yaml");
    let _installed = Installed { node, how: How::Manifests };
    node.kubectl_ok(&["apply", "--server-side", "-f", manifests.to_str().unwrap()]).unwrap();
    // What a user of a kubelet with a cgroupRoot does with the plain manifests.
    set_agent_env(node, &format!("PODTRACE_KUBELET_CGROUP_ROOT={}", node.kubelet_cgroup_root));
    wait_ready(node, "podtrace");

    // Each binary runs as its own ServiceAccount, which holds exactly what it needs.
    for (component, account) in [("operator", "podtrace-operator"), ("agent", "podtrace-agent")] {
        let pod =
            pod_name(node, RELEASE_NAMESPACE, &format!("app.kubernetes.io/component={component}"))
                .unwrap();
        let spec = get_json(node, &["pod", &pod, "-n", RELEASE_NAMESPACE]).unwrap();
        assert_eq!(spec["spec"]["serviceAccountName"], account);
    }
    let sa = |name: &str| format!("system:serviceaccount:{RELEASE_NAMESPACE}:{name}");
    for (who, verb, resource, subresource, allowed) in [
        ("podtrace-agent", "patch", "nodetraces.podtrace.dev", "status", true),
        ("podtrace-agent", "patch", "nodetraces.podtrace.dev", "", false),
        ("podtrace-agent", "list", "pods", "", false),
        ("podtrace-agent", "watch", "podtraceprofiles.podtrace.dev", "", true),
        ("podtrace-agent", "watch", "monitoringprofiles.podtrace.dev", "", true),
        ("podtrace-agent", "patch", "podtraceprofiles.podtrace.dev", "", false),
        ("podtrace-agent", "list", "podtraces.podtrace.dev", "", false),
        ("podtrace-operator", "patch", "nodetraces.podtrace.dev", "", true),
        ("podtrace-operator", "patch", "podtraceprofiles.podtrace.dev", "", true),
        ("podtrace-operator", "delete", "podtraceprofiles.podtrace.dev", "", true),
        ("podtrace-operator", "patch", "podtraces.podtrace.dev", "status", true),
        ("podtrace-operator", "delete", "pods", "", false),
        ("podtrace-operator", "watch", "namespaces", "", true),
        ("podtrace-operator", "patch", "namespaces", "", false),
    ] {
        let sub = format!("--subresource={subresource}");
        let mut args = vec!["auth", "can-i", verb, resource, "--as"];
        let account = sa(who);
        args.push(&account);
        if !subresource.is_empty() {
            args.push(&sub);
        }
        let out = node.kubectl(&args, None);
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(answer == "yes", allowed, "can {who} {verb} {resource} {subresource}? {answer}");
    }

    // A traced pod, so that the operator writes this node's NodeTrace and the agent reports in
    // its status (it may patch nodetraces/status).
    namespace(node, "rbac");
    let out = node.kubectl(&["apply", "-f", "-"], Some(TRACED_POD));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_until("the agent's heartbeat in its NodeTrace", Duration::from_secs(60), || {
        let nt = get_json(node, &["nodetrace", &node.name])?;
        ensure!(nt["status"]["heartbeat"].is_string(), "{:#}", nt["status"]);
        Ok(())
    });

    // Without the rule for nodetraces/status, the agent says so: in its log (naming the
    // resource and the verb), in its error counter and in its health.
    let role = get_json(node, &["clusterrole", "podtrace-agent"]).unwrap();
    let rules: Vec<&serde_json::Value> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["resources"] != serde_json::json!(["nodetraces/status"]))
        .collect();
    assert_eq!(rules.len() + 1, role["rules"].as_array().unwrap().len());
    let patch = serde_json::json!({"rules": rules}).to_string();
    node.kubectl_ok(&["patch", "clusterrole", "podtrace-agent", "--type=merge", "-p", &patch])
        .unwrap();
    let agent = pod_name(node, RELEASE_NAMESPACE, "app.kubernetes.io/component=agent").unwrap();
    wait_until("the agent reports the missing permission", Duration::from_secs(90), || {
        let log = node.kubectl_ok(&["logs", "-n", RELEASE_NAMESPACE, &agent, "--tail=200"])?;
        ensure!(
            log.lines().any(|l| l.contains("forbidden") && l.contains("nodetraces/status")),
            "no 'forbidden … nodetraces/status' line in the agent's log"
        );
        let m = agent_metrics(node, "podtrace")?;
        let errors = samples(&m, "podtrace_agent_errors_total", &[("source", "status")]);
        ensure!(errors.iter().sum::<f64>() > 0.0, "errors {errors:?}");
        let health = node.kubectl(
            &["exec", "-n", RELEASE_NAMESPACE, &agent, "--", "/podtrace-agent", "health", "live"],
            None,
        );
        let health = String::from_utf8_lossy(&health.stdout);
        ensure!(
            health.contains("Degraded") && health.contains("writing the NodeTrace status failed"),
            "health live: {health}"
        );
        Ok(())
    });
}
