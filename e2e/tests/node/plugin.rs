//! `kubectl podtrace top` and `health` on the real node: the agent pod's `/metrics` read
//! through the API server's pod proxy with the admin's credentials, its latency columns filled
//! by the real probes, its memory and processes the agent's own (read with kubectl, the other
//! way).

use super::{How, Installed, agent_metrics, helm_install, namespace, pod_name, samples, workload};
use crate::plugin::{plugin, plugin_ok};
use anyhow::{Context, Result, ensure};
use podtrace_e2e::node::{node, wait_until};
use serde_json::Value;
use std::time::Duration;

const NS: &str = "plugin";

/// The columns of the `top` line of pod `pod`, split at runs of spaces.
fn top_line(table: &str, pod: &str) -> Result<Vec<String>> {
    let line = table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(pod))
        .with_context(|| format!("no line of {pod} in\n{table}"))?;
    Ok(line.split_whitespace().map(str::to_owned).collect())
}

/// A size of the table (`13.6MiB`) in bytes, and how far off its one decimal may be.
fn bytes(cell: &str) -> (f64, f64) {
    let units =
        [("TiB", 1u64 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1)];
    let (unit, factor) = units.iter().find(|(u, _)| cell.ends_with(u)).expect("a size");
    let factor = *factor as f64;
    (cell.trim_end_matches(unit).parse::<f64>().unwrap() * factor, 0.05 * factor + 1.0)
}

/// A latency (`85µs`, `1.2ms`, `3.40s`) in seconds.
fn seconds(cell: &str) -> f64 {
    for (unit, factor) in [("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)] {
        if let Some(v) = cell.strip_suffix(unit) {
            return v.parse::<f64>().unwrap() * factor;
        }
    }
    panic!("not a latency: {cell}")
}

#[test]
fn kubectl_podtrace_top_and_health_read_the_real_agent_through_the_api_server() {
    let test = "kubectl_podtrace_top_and_health_read_the_real_agent_through_the_api_server";
    let Some((_turn, node)) = node(test) else { return };
    let _installed = Installed { node, how: How::Helm };
    helm_install(node, &[]);
    namespace(node, NS);
    workload::start(node, NS, &["web"]);
    // standard: every probe; the workload connects, resolves, writes with fsync and sleeps.
    let out = node.kubectl(&["apply", "-f", "-"], Some(&workload::podtrace(NS, "web", "standard")));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let web = pod_name(node, NS, "app=web").unwrap();

    // Latencies need observations in the histograms: wait until every column has some.
    let columns =
        wait_until("top shows web with its eBPF latencies", Duration::from_secs(120), || {
            let table = plugin_ok(&node.cp, &["top", "-n", NS, "--once"])?;
            let cols = top_line(&table, &web)?;
            // NAMESPACE POD CONTAINER CPU% MEM% MEM ALERT RX TX PROCS CONNECT RTT DNS FS OFFCPU
            ensure!(cols.len() == 15, "{table}");
            ensure!(
                cols[10..].iter().all(|c| c != "-"),
                "a latency column is still empty:\n{table}"
            );
            eprintln!("kubectl podtrace top -n {NS} --once:\n{table}");
            Ok(cols)
        });
    assert_eq!((columns[0].as_str(), columns[2].as_str()), (NS, "app"));
    for cell in &columns[10..] {
        let (p50, p99) = cell.split_once('/').unwrap();
        let (p50, p99) = (seconds(p50), seconds(p99));
        assert!(p50 > 0.0 && p50 <= p99 && p99 <= 52.43, "{cell}");
    }
    // MEM and PROCS are what the agent serves, read right after with `kubectl get --raw` (a
    // collection in between changes them: then again).
    wait_until("top's MEM and PROCS equal the agent's own series", Duration::from_secs(60), || {
        let table = plugin_ok(&node.cp, &["top", "-n", NS, "--once"])?;
        let cols = top_line(&table, &web)?;
        let text = agent_metrics(node, "podtrace")?;
        let pod = [("namespace", NS), ("pod", web.as_str()), ("container", "app")];
        let memory = samples(
            &text,
            "podtrace_resource_usage_bytes",
            &[pod[0], pod[1], pod[2], ("resource_type", "memory")],
        );
        let processes = samples(&text, "podtrace_process_uptime_seconds", &pod).len();
        ensure!(memory.len() == 1, "{memory:?}");
        let (shown, rounding) = bytes(&cols[5]);
        ensure!((shown - memory[0]).abs() <= rounding, "MEM {shown} vs {}", memory[0]);
        ensure!(cols[9] == processes.to_string(), "PROCS {} vs {processes}", cols[9]);
        Ok(())
    });

    // -l narrows to the pods with those labels; another namespace shows nothing.
    let none = plugin_ok(&node.cp, &["top", "-n", NS, "-l", "app=nothing", "--once"]).unwrap();
    assert!(none.contains("(no targets yet)"), "{none}");
    let all = plugin_ok(&node.cp, &["top", "-A", "-l", "app=web", "--once"]).unwrap();
    top_line(&all, &web).unwrap();

    // health: the real readiness, heartbeat and Lease of a working install.
    let run = plugin(&node.cp, &["health", "-o", "json"]).unwrap();
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    eprintln!("kubectl podtrace health: {report:#}");
    assert_eq!(run.code, 0, "{report:#}");
    let operator = &report["operator"];
    assert_eq!(operator["level"], "Optimal", "{report:#}");
    assert!(operator["leader"].as_str().is_some_and(|l| l.starts_with("podtrace-operator-")));
    let agents = report["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 1, "{report:#}");
    assert_eq!(agents[0]["node"], node.name.as_str());
    assert!(["Optimal", "Healthy"].contains(&agents[0]["level"].as_str().unwrap()), "{report:#}");
    let reasons = agents[0]["reasons"].to_string();
    assert!(!reasons.contains("not checked"), "everything was readable: {reasons}");
}
