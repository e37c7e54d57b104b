use super::{agent_writes, plugin};
use crate::operator::fixture::{Fixture, eventually};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::time::Duration;

/// Creates a pod of podtrace's `component` (agent or operator) on `node`, Ready or not as the
/// kubelet would report it.
async fn podtrace_pod(fx: &Fixture, name: &str, component: &str, node: &str, ready: bool) {
    let pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "podtrace",
            "app.kubernetes.io/component": component}},
        "spec": {"nodeName": node, "containers": [{"name": component, "image": "podtrace",
            "ports": [{"name": "metrics", "containerPort": 3000}]}]}
    }))
    .unwrap();
    fx.pods().create(&PostParams::default(), &pod).await.unwrap();
    let (state, waiting) = if ready {
        (json!({"running": {}}), "True")
    } else {
        (json!({"waiting": {"reason": "CrashLoopBackOff"}}), "False")
    };
    let status = json!({"status": {"phase": "Running",
        "conditions": [{"type": "Ready", "status": waiting}],
        "containerStatuses": [{"name": component, "image": "podtrace", "imageID": "",
            "ready": ready, "restartCount": if ready { 0 } else { 5 }, "state": state}]}});
    fx.pods().patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
}

fn level<'a>(report: &'a Value, node: &str) -> &'a Value {
    report["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["node"] == node)
        .unwrap_or_else(|| panic!("no agent of {node} in {report:#}"))
}

#[tokio::test]
async fn health_grades_agents_by_pod_heartbeat_and_conditions_and_the_operator_by_its_lease() {
    let fx = Fixture::without_agents("plugin-health").await;
    let (a, b, c) = (fx.node("a").await, fx.node("b").await, fx.node("c").await);
    // The operator process holds the Lease `podtrace-operator` in the test namespace as
    // `op`; the pod `op` stands for its replica.
    let mut op = fx.operator("op");
    podtrace_pod(&fx, "op", "operator", &a, true).await;
    fx.pod("web-a", &a, &[("app", "web")], &["app"], true).await;
    fx.pod("web-b", &b, &[("app", "web")], &["app"], true).await;
    fx.podtrace(
        "web",
        json!({"selector": {"matchLabels": {"app": "web"}}, "profileRef": {"name": "minimal"}}),
    )
    .await;
    eventually(Duration::from_secs(20), || async {
        anyhow::ensure!(
            fx.node_trace(&a).await.is_some() && fx.node_trace(&b).await.is_some(),
            "no NodeTraces yet"
        );
        Ok(())
    })
    .await
    .unwrap();
    podtrace_pod(&fx, "agent-a", "agent", &a, true).await;
    podtrace_pod(&fx, "agent-b", "agent", &b, true).await;
    podtrace_pod(&fx, "agent-c", "agent", &c, false).await;
    let second = |t: Timestamp| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    // a reports now with a probe missing; b last reported five minutes ago.
    agent_writes(
        &fx.client,
        &a,
        json!({"specFormat": 2, "heartbeat": second(Timestamp::now()),
        "probes": [{"probe": "tcpRtt", "state": "Unavailable", "reason": "tp_btf: ENOENT"}],
        "conditions": [{"type": "Degraded", "status": "True", "reason": "ProbesUnavailable",
            "message": "requested eBPF probes are not attached (see status.probes)",
            "lastTransitionTime": second(Timestamp::now())}]}),
    )
    .await;
    let stale = Timestamp::now() - SignedDuration::from_secs(300);
    agent_writes(&fx.client, &b, json!({"specFormat": 2, "heartbeat": second(stale)})).await;
    let ns = fx.name().to_owned();
    let args = ["health", "--system-namespace", ns.as_str(), "-o", "json"];

    let run = eventually(Duration::from_secs(20), || async {
        let run = plugin(fx.cp, &args)?;
        let report: Value = serde_json::from_str(&run.stdout)?;
        anyhow::ensure!(report["operator"]["leader"] == "op", "no leader yet: {report:#}");
        Ok((run, report))
    })
    .await
    .unwrap();
    let (run, report) = run;
    assert_eq!(run.code, 3, "Unhealthy exits with 3: {report:#}");
    assert_eq!(report["level"], "Unhealthy");
    assert_eq!(report["operator"]["level"], "Optimal", "{report:#}");
    assert_eq!(report["operator"]["replicas"], json!({"op": true}));
    let (la, lb, lc) = (level(&report, &a), level(&report, &b), level(&report, &c));
    assert_eq!(
        (la["pod"].as_str(), la["level"].as_str()),
        (Some("agent-a"), Some("Healthy")),
        "{la:#}"
    );
    let reasons = |l: &Value| -> Vec<String> {
        l["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_owned()).collect()
    };
    assert!(
        reasons(la)[0].contains("ProbesUnavailable")
            && reasons(la)[0].contains("tcpRtt: tp_btf: ENOENT"),
        "{la:#}"
    );
    // Without a kubelet the pod proxy cannot reach the agent: said, not taken as healthy.
    assert!(reasons(la).iter().any(|r| r.starts_with("exporters not checked: ")), "{la:#}");
    assert_eq!(lb["level"], "Degraded", "{lb:#}");
    assert!(reasons(lb)[0].starts_with("last NodeTrace status write 30"), "{lb:#}");
    assert_eq!(lc["level"], "Unhealthy", "{lc:#}");
    assert!(
        reasons(lc)[0].contains("CrashLoopBackOff") && reasons(lc)[0].contains("restarted 5 times"),
        "{lc:#}"
    );
    assert!(reasons(lc)[1].contains("no NodeTrace"), "{lc:#}");

    // The operator crashes: its Lease (4 s here) runs out and nothing reconciles.
    op.kill();
    let report = eventually(Duration::from_secs(20), || async {
        let report: Value = serde_json::from_str(&plugin(fx.cp, &args)?.stdout)?;
        anyhow::ensure!(report["operator"]["level"] == "Degraded", "{report:#}");
        Ok(report)
    })
    .await
    .unwrap();
    let why = report["operator"]["reasons"][0].as_str().unwrap();
    assert!(why.contains("holder op, expired"), "{why}");

    // The table says the same for people.
    let table = plugin(fx.cp, &["health", "--system-namespace", &ns]).unwrap();
    eprintln!("kubectl podtrace health --system-namespace {ns}:\n{}", table.stdout);
    assert_eq!(table.code, 3);
    assert!(
        table.stdout.contains("operator") && table.stdout.contains("Degraded"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.ends_with("overall: Unhealthy\n"), "{}", table.stdout);
}
