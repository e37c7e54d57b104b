use super::*;
use serde_json::json;

fn pod_trace() -> PodTrace {
    serde_json::from_value(json!({
        "apiVersion": "podtrace.dev/v1alpha1", "kind": "PodTrace",
        "metadata": {"name": "web", "namespace": "shop", "generation": 2},
        "spec": {"selector": {"matchLabels": {"app": "web"}}},
        "status": {
            "observedGeneration": 2, "matchedPods": 3, "readyNodes": "1/2",
            "expiresAt": "2026-12-06T10:15:00Z",
            "effectiveProfile": "daemon", "seriesEstimate": 120,
            "nodes": [
                "node-a pods=2 attached=2 pending=0 failed=0 probes=tcpRtt:tp_btf,dns:Unavailable",
                "node-b pods=1 attached=0 pending=1 failed=0 probes=tcpRtt:tracepoint reasons=CgroupNotFound"
            ],
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "PodsPending", "message": "2/3 pods attached", "lastTransitionTime": "2026-12-06T10:00:00Z"},
                {"type": "Degraded", "status": "True", "reason": "PodsNotAttached", "message": "1 pod pending", "lastTransitionTime": "2026-12-06T10:00:00Z"}
            ]
        }
    }))
    .unwrap()
}

fn node_trace(name: &str, status: serde_json::Value) -> NodeTrace {
    serde_json::from_value(json!({
        "apiVersion": "podtrace.dev/v1alpha1", "kind": "NodeTrace",
        "metadata": {"name": name},
        "spec": {"pods": [
            "shop/web-1 uid=u1 by=shop/web container:app=containerd://1",
            "shop/other uid=u9 by=shop/other container:app=containerd://9"
        ]},
        "status": status
    }))
    .unwrap()
}

#[test]
fn a_podtrace_joins_its_node_lines_with_the_agents_status() {
    let a = node_trace(
        "node-a",
        json!({"series": 40, "seriesDropped": 3, "exportDropped": 7, "agentVersion": "0.1.0",
            "heartbeat": "2026-12-06T10:00:30Z",
            "probes": [{"probe": "dns", "state": "Unavailable", "reason": "cgroup_skb: EPERM"}]}),
    );
    let b = node_trace(
        "node-b",
        json!({"podResults": [
            "shop/web-1 uid=u1 Pending reason=CgroupNotFound message=no cgroup at /kubepods/x",
            "shop/other uid=u9 Failed reason=TrackedMapFull"
        ]}),
    );
    let r = report(&[pod_trace()], &[a, b]);
    let pt = &r.pod_traces[0];
    assert_eq!((pt.matched_pods, pt.nodes_ready, pt.nodes_total), (3, 1, 2));
    assert_eq!(
        (pt.profile.as_deref(), pt.series_estimate, pt.up_to_date),
        (Some("daemon"), 120, true)
    );
    assert_eq!(pt.nodes[0].probes["tcpRtt"], "tp_btf");
    assert_eq!(pt.nodes[0].probes["dns"], "Unavailable");
    let agent = pt.nodes[0].agent.as_ref().unwrap();
    assert_eq!((agent.series, agent.series_dropped, agent.export_dropped), (40, 3, 7));
    assert_eq!(agent.heartbeat.as_deref(), Some("2026-12-06T10:00:30Z"));
    assert_eq!(pt.nodes[1].reasons, ["CgroupNotFound"]);
    assert_eq!(
        pt.failures,
        [
            "Ready=False (PodsPending): 2/3 pods attached",
            "Degraded=True (PodsNotAttached): 1 pod pending",
            "node-a: probe dns Unavailable: cgroup_skb: EPERM",
            "node-b: pod shop/web-1 Pending (CgroupNotFound): no cgroup at /kubepods/x",
        ],
        "the other PodTrace's failed pod is not this one's"
    );
    let table = render(&r);
    assert!(table.contains("shop      web  daemon"), "{table}");
    assert!(table.contains("1/2"), "{table}");
    assert!(table.contains(" (until 2026-12-06T10:15:00Z)"), "{table}");
    assert_eq!(pt.expires_at.as_deref(), Some("2026-12-06T10:15:00Z"));
    assert!(table.contains("dns:Unavailable tcpRtt:tp_btf"), "{table}");
    assert!(table.contains("  ! node-b: pod shop/web-1 Pending"), "{table}");
}

#[test]
fn a_node_without_agent_status_says_so_and_the_json_keeps_the_shape() {
    let mut pt = pod_trace();
    pt.status.as_mut().unwrap().nodes = vec![
        "node-c pods=1 attached=0 pending=1 failed=0 reasons=AgentNotReporting".parse().unwrap(),
    ];
    pt.metadata.generation = Some(3);
    let r = report(&[pt], &[]);
    let p = &r.pod_traces[0];
    assert!(!p.up_to_date);
    assert!(p.nodes[0].agent.is_none());
    assert!(
        p.failures.last().unwrap().starts_with("node-c: the agent has not reported"),
        "{:?}",
        p.failures
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["podTraces"][0]["nodes"][0]["reasons"], json!(["AgentNotReporting"]));
    assert_eq!(json["podTraces"][0]["nodesTotal"], 1);
    assert!(render(&Report::default()).contains("No PodTraces found."));
}
