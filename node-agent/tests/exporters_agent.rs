//! The whole path: the `podtrace-agent` binary in standalone mode measures a process in a cgroup
//! and pushes its samples to a real nats-server, whose subscriber receives them with the right
//! identity and values. Needs root (cgroups); prints SKIPPED otherwise.

mod exporters_support;

use exporters_support::*;
use futures::StreamExt;
use serde_json::Value;
use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

/// A process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Under `exporters::` so that `cargo test -p podtrace-agent exporters` selects it.
mod exporters {
    use super::*;

    async fn next_json(sub: &mut async_nats::Subscriber, what: &str) -> Value {
        let m = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .unwrap_or_else(|_| panic!("no {what} message within 20s"))
            .unwrap();
        serde_json::from_slice(&m.payload).unwrap()
    }

    #[tokio::test]
    async fn the_agent_pushes_its_targets_and_the_kernel_to_nats_every_interval() {
        if !podtrace_test_support::require_root(
            "the_agent_pushes_its_targets_and_the_kernel_to_nats_every_interval",
            "cgroups",
        ) {
            return;
        }
        let broker = Broker::nats();
        let url = format!("nats://127.0.0.1:{}", broker.port);
        let client = async_nats::connect(&url).await.unwrap();
        let mut pods = client.subscribe("podtrace.pod.metrics").await.unwrap();
        let mut kernel = client.subscribe("node.kernel.metrics").await.unwrap();

        // A cgroup of the v2 hierarchy with one sleeping process in it.
        let v2 = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .find(|p| std::path::Path::new(p).join("cgroup.procs").exists())
            .expect("a cgroup v2 hierarchy");
        let group = format!("podtrace-push-{}", std::process::id());
        let outer = std::path::Path::new(v2).join(&group);
        let dir = outer.join("worker");
        // Declared before the sleeper, so dropped after it: the cgroups go once it is gone.
        let _cgroups = podtrace_test_support::CgroupDirs::create(&[&outer, &dir]).unwrap();
        let _sleeper = Process(
            podtrace_test_support::command_in_cgroups(&[&dir], "sleep").arg("300").spawn().unwrap(),
        );
        // The shell moves itself in before it execs: under load the agent could otherwise find
        // the cgroup still empty at its first collection.
        let procs = dir.join("cgroup.procs");
        while std::fs::read_to_string(&procs).unwrap().trim().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }

        let tmp = TempDir::new("agent-push");
        let config = tmp.0.join("agent.yaml");
        std::fs::write(
            &config,
            format!(
                "apiVersion: podtrace.dev/v1alpha1\nkind: PodTrace\nmetadata: {{name: pusher, namespace: e2e}}\nspec:\n  selector:\n    matchLabels: {{podtrace.dev/cgroup: \"/{group}/*\"}}\n  profile: {{interval: 1s, export: {{nats: true}}, probes: {{enabled: false, include: []}}}}\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(tmp.0.join("agent.log")).unwrap();
        let _agent = Process(
            Command::new(env!("CARGO_BIN_EXE_podtrace-agent"))
                .args(["standalone", "--config"])
                .arg(&config)
                .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())])
                .args(["--health-addr", &format!("127.0.0.1:{}", free_port())])
                .args(["--admin-addr", &format!("127.0.0.1:{}", free_port())])
                .args([
                    "--nats-url",
                    &url,
                    "--node-name",
                    "push-node",
                    "--interval",
                    "1",
                    "--ebpf=false",
                ])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );

        let pod = next_json(&mut pods, "pod").await;
        assert_eq!(
            (&pod["node"], &pod["namespace"], &pod["pod"], &pod["container"]),
            (
                &Value::from("push-node"),
                &Value::from("e2e"),
                &Value::from("pusher"),
                &Value::from("worker")
            ),
            "{pod:#}"
        );
        // The one process of the cgroup: a single-threaded sleep.
        assert_eq!(pod["metrics"]["thread_count"], 1, "{pod:#}");
        assert!(pod["metrics"]["memory_usage_bytes"].as_u64().unwrap() > 0, "{pod:#}");
        assert!(pod["aggregated"]["sample_count"].as_u64().unwrap() >= 1, "{pod:#}");
        let k = next_json(&mut kernel, "kernel").await;
        assert_eq!(k["node"], "push-node");
        assert!(k["node_context_switches_total"].as_u64().unwrap() > 0, "{k:#}");
        // Every interval: a second pod message follows.
        let again = next_json(&mut pods, "second pod").await;
        assert_eq!(again["pod"], "pusher");
    }
}
