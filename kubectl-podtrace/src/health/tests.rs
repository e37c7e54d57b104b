use super::*;
use serde_json::json;

const NOW: &str = "2026-12-06T10:00:00Z";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn at(seconds_before: i64) -> String {
    (now() - SignedDuration::from_secs(seconds_before)).to_string()
}

fn pod(name: &str, node: &str, is_ready: bool) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "podtrace-system"},
        "spec": {"nodeName": node, "containers": [{"name": "agent"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if is_ready { "True" } else { "False" }}],
            "containerStatuses": [{"name": "agent", "image": "", "imageID": "", "ready": is_ready, "restartCount": if is_ready { 0 } else { 4 },
                "state": if is_ready { json!({"running": {}}) } else { json!({"waiting": {"reason": "CrashLoopBackOff"}}) }}]}
    }))
    .unwrap()
}

fn node_trace(node: &str, heartbeat_age: Option<i64>, degraded: Option<&str>) -> NodeTrace {
    let mut status = json!({"probes": [{"probe": "dns", "state": "Unavailable", "reason": "cgroup_skb: EPERM"}]});
    if let Some(age) = heartbeat_age {
        status["heartbeat"] = json!(at(age));
    }
    if let Some(reason) = degraded {
        status["conditions"] = json!([{"type": "Degraded", "status": "True", "reason": reason,
            "message": "requested eBPF probes are not attached (see status.probes)", "lastTransitionTime": NOW}]);
    }
    serde_json::from_value(json!({"apiVersion": "podtrace.dev/v1alpha1", "kind": "NodeTrace",
        "metadata": {"name": node}, "spec": {}, "status": status}))
    .unwrap()
}

fn lease(holder: &str, renewed_before: i64) -> Lease {
    serde_json::from_value(json!({"metadata": {"name": "podtrace-operator"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": at(renewed_before).replace('Z', ".000000Z")}}))
    .unwrap()
}

fn observed() -> Observed {
    Observed {
        agents: vec![
            pod("agent-a", "a", true),
            pod("agent-b", "b", true),
            pod("agent-c", "c", false),
            pod("agent-d", "d", true),
        ],
        node_traces: Ok(vec![
            node_trace("a", Some(10), None),
            node_trace("b", Some(200), None),
            node_trace("c", Some(10), None),
            node_trace("d", Some(5), Some("ProbesUnavailable")),
            node_trace("e", Some(5), None),
        ]),
        metrics: [
            (
                "agent-a".to_owned(),
                Ok("podtrace_agent_export_connected{exporter=\"nats\"} 1\n".to_owned()),
            ),
            ("agent-b".to_owned(), Err("503 ServiceUnavailable: no endpoints".to_owned())),
            (
                "agent-d".to_owned(),
                Ok("podtrace_agent_export_connected{exporter=\"mqtt\"} 0\n".to_owned()),
            ),
        ]
        .into(),
        operators: vec![pod("op-1", "a", true), pod("op-2", "b", true)],
        lease: Ok(Some(lease("op-1", 3))),
        now: now(),
    }
}

#[test]
fn each_agent_gets_the_level_its_pod_nodetrace_and_metrics_give() {
    let r = report(&observed());
    let level = |node: &str| r.agents.iter().find(|a| a.node == node).unwrap();
    assert_eq!(level("a").level, Level::Optimal, "{:?}", level("a"));
    assert_eq!(level("b").level, Level::Degraded);
    assert!(level("b").reasons[0].contains("200s ago"), "{:?}", level("b").reasons);
    assert!(
        level("b").reasons[1].starts_with("exporters not checked: 503"),
        "{:?}",
        level("b").reasons
    );
    assert_eq!(level("c").level, Level::Unhealthy);
    assert!(
        level("c").reasons[0].contains("agent waiting: CrashLoopBackOff; agent restarted 4 times"),
        "{:?}",
        level("c").reasons
    );
    assert_eq!(level("d").level, Level::Healthy);
    assert!(
        level("d").reasons[0].ends_with("; dns: cgroup_skb: EPERM"),
        "{:?}",
        level("d").reasons
    );
    assert_eq!(level("d").reasons[1], "exporter mqtt not connected to its broker");
    assert_eq!((level("e").pod.as_str(), level("e").level), ("-", Level::Unhealthy));
    assert_eq!(r.operator.level, Level::Optimal);
    assert_eq!(r.operator.leader.as_deref(), Some("op-1"));
    assert_eq!(r.level, Level::Unhealthy);
    let table = render(&r);
    assert!(table.contains("operator  -    op-1,op-2 Optimal   leader op-1"), "{table}");
    assert!(table.ends_with("overall: Unhealthy\n"), "{table}");
}

#[test]
fn the_operator_is_degraded_without_a_fresh_leader_and_unhealthy_without_a_ready_replica() {
    let mut o = observed();
    o.lease = Ok(Some(lease("op-1", 60)));
    let r = report(&o).operator;
    assert_eq!(r.level, Level::Degraded);
    assert!(r.reasons[0].contains("holder op-1, expired"), "{:?}", r.reasons);
    o.lease = Ok(None);
    assert_eq!(report(&o).operator.level, Level::Degraded);
    o.lease = Err("get lease podtrace-operator in podtrace-system: 403 Forbidden: …".into());
    let r = report(&o).operator;
    assert_eq!(r.level, Level::Optimal);
    assert!(r.reasons[0].starts_with("leader not checked: get lease"), "{:?}", r.reasons);
    o.lease = Ok(Some(lease("op-2", 1)));
    o.operators[1] = pod("op-2", "b", false);
    let r = report(&o).operator;
    assert_eq!(r.level, Level::Degraded, "the holder is not Ready: {:?}", r.reasons);
    o.operators = vec![pod("op-1", "a", false)];
    assert_eq!(report(&o).operator.level, Level::Unhealthy);
    o.operators.clear();
    assert_eq!(report(&o).operator.level, Level::Unhealthy);
}

#[test]
fn nodetraces_that_cannot_be_listed_are_named_not_taken_as_healthy() {
    let mut o = observed();
    o.node_traces = Err("list nodetraces: 403 Forbidden: …".into());
    let r = report(&o);
    let a = r.agents.iter().find(|a| a.node == "a").unwrap();
    assert_eq!(a.reasons, ["reporting not checked: list nodetraces: 403 Forbidden: …"]);
    assert_eq!(r.agents.len(), 4, "no NodeTrace-only entries without NodeTraces");
}
