//! The whole path: the `podtrace-agent` binary in standalone mode measures a process in a cgroup
//! and pushes its samples to a real nats-server and a real InfluxDB, which receive them with the
//! right identity and values. Needs root (cgroups, eBPF); prints SKIPPED otherwise (fails under
//! CI).

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

    /// The cgroup directories of `relative` in every hierarchy the node mounts (v1 controllers
    /// and v2), created, with a memory limit where a memory controller is; with the guard that
    /// removes them and their parents when dropped, also when the test fails.
    fn cgroup_dirs(
        relative: &str,
        memory_limit: u64,
    ) -> (Vec<std::path::PathBuf>, podtrace_test_support::CgroupDirs) {
        let layout = podtrace_agent::cgroup::CgroupLayout::detect().unwrap();
        let mut roots: Vec<std::path::PathBuf> = layout.v1.values().cloned().collect();
        roots.extend(layout.v2.clone());
        roots.sort();
        roots.dedup();
        let mut dirs = Vec::new();
        let mut created = Vec::new();
        for root in roots {
            let dir = root.join(relative.trim_start_matches('/'));
            if layout.v1.is_empty() {
                // cgroup v2 only: the memory controller must be enabled down to the group.
                let mut d = root.clone();
                for part in relative.trim_start_matches('/').split('/') {
                    let _ = std::fs::write(d.join("cgroup.subtree_control"), "+memory");
                    d = d.join(part);
                    std::fs::create_dir_all(&d).unwrap();
                }
            }
            std::fs::create_dir_all(&dir).unwrap();
            let mut parent = dir.parent();
            while let Some(p) = parent.filter(|p| *p != root) {
                created.push(p.to_path_buf());
                parent = p.parent();
            }
            for limit in ["memory.limit_in_bytes", "memory.max"] {
                if dir.join(limit).exists() {
                    std::fs::write(dir.join(limit), memory_limit.to_string()).unwrap();
                }
            }
            created.push(dir.clone());
            dirs.push(dir);
        }
        // Outer before inner: the guard removes them in reverse.
        created.sort_by_key(|d| d.components().count());
        created.dedup();
        (dirs, podtrace_test_support::CgroupDirs(created))
    }

    /// A profile that leaves `export` alone (the presets' defaults) pushes its pods to every
    /// exporter the agent has a URL for: the README's exporter example gives pod data. The
    /// messages carry the /proc metrics, the cgroup resources with utilization and alert level,
    /// and the eBPF series; the kernel counters go once per node interval.
    #[tokio::test]
    async fn the_agent_pushes_its_targets_and_the_kernel_to_nats_and_influx_every_interval() {
        if !podtrace_test_support::require_root(
            "the_agent_pushes_its_targets_and_the_kernel_to_nats_and_influx_every_interval",
            "cgroups and eBPF",
        ) {
            return;
        }
        let broker = Broker::nats();
        let url = format!("nats://127.0.0.1:{}", broker.port);
        let client = async_nats::connect(&url).await.unwrap();
        let mut pods = client.subscribe("podtrace.pod.metrics").await.unwrap();
        let mut kernel = client.subscribe("node.kernel.metrics").await.unwrap();
        let influx = Broker::influx();
        influx_query(influx.port, "CREATE DATABASE podtrace").await;

        // A cgroup with a 64 MiB memory limit and a shell in it appending to a file.
        let group = format!("podtrace-push-{}", std::process::id());
        // Declared before the writer, so dropped after it: the cgroups go once it is gone.
        let (dirs, _cgroups) = cgroup_dirs(&format!("/{group}/worker"), 64 << 20);
        let tmp = TempDir::new("agent-push");
        let out = tmp.0.join("written");
        let script = format!("while true; do echo podtrace >> {}; sleep 0.1; done", out.display());
        let writer = Process(
            podtrace_test_support::command_in_cgroups(&dirs, "sh")
                .args(["-c", &script])
                .spawn()
                .unwrap(),
        );
        // The shell moves itself in before it execs: under load the agent could otherwise find
        // the cgroup still empty at its first collection.
        let procs = dirs[0].join("cgroup.procs");
        while std::fs::read_to_string(&procs).unwrap().trim().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }

        let config = tmp.0.join("agent.yaml");
        std::fs::write(
            &config,
            format!(
                "apiVersion: podtrace.dev/v1alpha1\nkind: PodTrace\nmetadata: {{name: pusher, namespace: e2e}}\nspec:\n  selector:\n    matchLabels: {{podtrace.dev/cgroup: \"/{group}/*\"}}\n  profile: {{interval: 1s, probes: {{include: [fsBytes]}}}}\n"
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
                .args(["--nats-url", &url, "--node-name", "push-node", "--interval", "3"])
                .args([
                    "--influx-url",
                    &format!("http://127.0.0.1:{}/write?db=podtrace", influx.port),
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
        assert!(pod["metrics"]["memory_usage_bytes"].as_u64().unwrap() > 0, "{pod:#}");
        assert!(pod["aggregated"]["sample_count"].as_u64().unwrap() >= 1, "{pod:#}");
        let memory = &pod["resources"]["memory"];
        assert_eq!(memory["limit"], (64u64 << 20) as f64, "{pod:#}");
        let (usage, utilization) =
            (memory["usage"].as_f64().unwrap(), memory["utilization_percent"].as_f64().unwrap());
        assert!((utilization - usage / (64u64 << 20) as f64 * 100.0).abs() < 1e-6, "{pod:#}");
        assert_eq!(memory["alert_level"], 0, "a shell is far below 80 % of 64 MiB: {pod:#}");
        // The eBPF file-system bytes of the shell's appends: every message from when the probe
        // saw the first write on (waited for with a deadline: the first interval may precede it).
        let written = |pod: &Value| {
            let bytes = pod["ebpf"]["bytes"].as_array().cloned().unwrap_or_default();
            let write = bytes.into_iter().find(|b| b["operation"] == "write");
            write.filter(|b| b["probe"] == "fsBytes").and_then(|b| b["bytes"].as_u64())
        };
        let mut pod = pod;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while written(&pod).unwrap_or(0) == 0 {
            assert!(std::time::Instant::now() < deadline, "no eBPF write bytes pushed: {pod:#}");
            pod = next_json(&mut pods, "pod").await;
        }

        // The kernel counters: one message per node interval (3 s), not one per pod interval.
        let k = next_json(&mut kernel, "kernel").await;
        assert_eq!(k["node"], "push-node");
        assert!(k["node_context_switches_total"].as_u64().unwrap() > 0, "{k:#}");
        let started = std::time::Instant::now();
        let _ = next_json(&mut kernel, "second kernel").await;
        assert!(
            started.elapsed() > Duration::from_millis(1500),
            "kernel messages every pod interval"
        );

        // The same pod in Influx, with its memory alert level.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let q = "SELECT alert_level, utilization_percent FROM podtrace_resource WHERE pod = 'pusher' AND resource_type = 'memory'";
            let answer = influx_query(influx.port, q).await;
            if answer["results"][0]["series"][0]["values"].as_array().is_some_and(|v| !v.is_empty())
            {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no podtrace_resource points: {answer}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        drop(writer);
    }

    /// An InfluxQL query on database `podtrace` (or a statement without one).
    async fn influx_query(port: u16, q: &str) -> Value {
        let url = format!("http://127.0.0.1:{port}/query?db=podtrace");
        let r = reqwest::Client::new().post(url).form(&[("q", q)]).send().await.unwrap();
        serde_json::from_str(&r.text().await.unwrap()).unwrap()
    }
}
