use super::{agent_writes, plugin, plugin_ok};
use crate::operator::fixture::{Fixture, eventually};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn status_shows_each_node_probes_drops_and_why_a_pod_is_pending() {
    let fx = Fixture::without_agents("plugin-status").await;
    let (a, b) = (fx.node("a").await, fx.node("b").await);
    let _op = fx.operator("op");
    let web1 = fx.pod("web-1", &a, &[("app", "web")], &["app"], true).await;
    let web2 = fx.pod("web-2", &b, &[("app", "web")], &["app"], true).await;
    fx.podtrace(
        "web",
        json!({"selector": {"matchLabels": {"app": "web"}}, "profileRef": {"name": "realtime-api"}}),
    )
    .await;
    eventually(Duration::from_secs(20), || async {
        let (x, y) = (fx.node_trace(&a).await, fx.node_trace(&b).await);
        anyhow::ensure!(x.is_some() && y.is_some(), "NodeTraces not written yet");
        Ok(())
    })
    .await
    .unwrap();

    // What the two agents report: on a every probe but dns attached and web-1 attached; on b
    // web-2 pending without its cgroup, and drops.
    let uid = |p: &k8s_openapi::api::core::v1::Pod| p.metadata.uid.clone().unwrap();
    let ns = fx.name().to_owned();
    let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let probes = json!([
        {"probe": "tcpRtt", "state": "Attached", "method": "tp_btf"},
        {"probe": "tcpConnect", "state": "Attached", "method": "tracepoint"},
        {"probe": "dns", "state": "Unavailable", "reason": "cgroup_skb: EPERM"},
        {"probe": "cpuBlock", "state": "Attached", "method": "tp_btf"},
        {"probe": "networkBytes", "state": "Attached", "method": "cgroup_skb"}
    ]);
    agent_writes(
        &fx.client,
        &a,
        json!({"specFormat": 2, "heartbeat": now, "agentVersion": "0.1.0",
        "probes": probes, "trackedPods": 1, "attachedPods": 1, "series": 40,
        "podResults": [format!("{ns}/web-1 uid={} Attached", uid(&web1))]}),
    )
    .await;
    agent_writes(&fx.client, &b, json!({"specFormat": 2, "heartbeat": now, "agentVersion": "0.1.0",
        "probes": probes, "trackedPods": 1, "attachedPods": 0, "series": 12, "seriesDropped": 3,
        "exportDropped": 7,
        "podResults": [format!("{ns}/web-2 uid={} Pending reason=CgroupNotFound message=no cgroup at /kubepods/pod-x", uid(&web2))]}))
    .await;
    // The operator's roll-up.
    eventually(Duration::from_secs(20), || async {
        let pt = fx.podtraces().get("web").await?;
        let nodes = pt.status.map(|s| s.nodes).unwrap_or_default();
        anyhow::ensure!(
            nodes.iter().any(|n| n.attached == 1) && nodes.iter().any(|n| !n.reasons.is_empty()),
            "not rolled up yet: {nodes:?}"
        );
        Ok(())
    })
    .await
    .unwrap();

    let out = plugin_ok(fx.cp, &["status", "-n", &ns, "-o", "json"]).unwrap();
    let report: Value = serde_json::from_str(&out).unwrap();
    let pt = &report["podTraces"][0];
    assert_eq!(report["podTraces"].as_array().unwrap().len(), 1, "{report:#}");
    let expected_probes = json!({"tcpRtt": "tp_btf", "tcpConnect": "tracepoint",
        "dns": "Unavailable", "cpuBlock": "tp_btf", "networkBytes": "cgroup_skb"});
    let expected = json!({
        "namespace": ns, "name": "web", "profile": "realtime-api", "matchedPods": 2,
        "nodesReady": 1, "nodesTotal": 2, "paused": false, "upToDate": true,
    });
    podtrace_e2e::json_subset(&expected, pt, "status").unwrap_or_else(|e| panic!("{e}\n{pt:#}"));
    let expected_nodes = [
        json!({"node": a, "pods": 1, "attached": 1, "pending": 0, "failed": 0,
             "probes": expected_probes, "reasons": [],
             "agent": {"series": 40, "seriesDropped": 0, "exportDropped": 0, "version": "0.1.0"}}),
        json!({"node": b, "pods": 1, "attached": 0, "pending": 1, "failed": 0,
             "probes": expected_probes, "reasons": ["CgroupNotFound"],
             "agent": {"series": 12, "seriesDropped": 3, "exportDropped": 7, "version": "0.1.0"}}),
    ];
    assert_eq!(pt["nodes"].as_array().unwrap().len(), 2, "{pt:#}");
    for (i, node) in expected_nodes.iter().enumerate() {
        let path = format!("nodes[{i}]");
        podtrace_e2e::json_subset(node, &pt["nodes"][i], &path)
            .unwrap_or_else(|e| panic!("{e}\n{pt:#}"));
        assert_eq!(pt["nodes"][i]["agent"]["heartbeat"], json!(now), "{path}");
    }
    let failures: Vec<&str> =
        pt["failures"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for want in [
        format!("{a}: probe dns Unavailable: cgroup_skb: EPERM"),
        format!("{b}: pod {ns}/web-2 Pending (CgroupNotFound): no cgroup at /kubepods/pod-x"),
    ] {
        assert!(failures.contains(&want.as_str()), "{want:?} not in {failures:#?}");
    }
    assert!(failures.iter().any(|f| f.starts_with("Degraded=True")), "{failures:#?}");
    // The series estimate is the operator's.
    let pt_obj = fx.podtraces().get("web").await.unwrap();
    assert_eq!(pt["seriesEstimate"], pt_obj.status.unwrap().series_estimate);

    // YAML says the same; the table names the PodTrace, its nodes and the pending pod; a
    // PodTrace that does not exist is an error naming it.
    let yaml = plugin_ok(fx.cp, &["status", "web", "-n", &ns, "-o", "yaml"]).unwrap();
    let from_yaml: Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(from_yaml, report);
    let table = plugin_ok(fx.cp, &["status", "-n", &ns]).unwrap();
    eprintln!("kubectl podtrace status -n {ns}:\n{table}");
    assert!(table.contains(&format!("{ns} web  realtime-api")), "{table}");
    assert!(table.contains("  ! ") && table.contains("Pending (CgroupNotFound)"), "{table}");
    let missing = plugin(fx.cp, &["status", "nope", "-n", &ns]).unwrap();
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("get podtrace nope in namespace") && missing.stderr.contains("404"),
        "{}",
        missing.stderr
    );
    // -A sees it too.
    let all = plugin_ok(fx.cp, &["status", "-A", "-o", "json"]).unwrap();
    let all: Value = serde_json::from_str(&all).unwrap();
    assert!(all["podTraces"].as_array().unwrap().iter().any(|p| p["namespace"] == ns));
}
