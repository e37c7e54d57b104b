//! Debian's Prometheus scrapes a real agent (standalone mode) while a workload in a traced cgroup
//! makes TCP traffic, file I/O with fsync, DNS queries, sleeps and burns its CPU quota: every
//! PromQL example of the reference and every panel query of the shipped dashboard must return
//! data with plausible values. Needs root (cgroups, eBPF); prints SKIPPED otherwise.

use podtrace_e2e::{
    binary, free_port,
    prometheus::Prometheus,
    promql::{dashboard_queries, plausible, reference_queries},
    repo_root,
};
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A cgroup in every hierarchy the machine mounts (v2 and the v1 memory/cpu/cpuacct/blkio
/// controllers, as a kubelet lays them out), with a memory limit and a CPU quota. Its
/// processes are killed and its directories removed on drop.
struct TestCgroup {
    dirs: Vec<PathBuf>,
    children: Vec<Child>,
}

impl TestCgroup {
    fn create(relative: &str, memory_bytes: u64, cpu_quota_us: u64) -> Self {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mut dirs = Vec::new();
        let mut v1_memory = None;
        let mut v1_cpu = None;
        let mut v2 = None;
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else { continue };
            let mount = left.split_whitespace().nth(4).unwrap();
            let mut right = right.split_whitespace();
            let (fstype, options) = (right.next().unwrap(), right.nth(1).unwrap_or(""));
            let controllers: Vec<&str> = options.split(',').collect();
            let wanted = fstype == "cgroup2"
                || (fstype == "cgroup"
                    && ["memory", "cpu", "cpuacct", "blkio"]
                        .iter()
                        .any(|c| controllers.contains(c)));
            if !wanted {
                continue;
            }
            let dir = PathBuf::from(mount).join(relative.trim_start_matches('/'));
            std::fs::create_dir_all(&dir).unwrap();
            if fstype == "cgroup2" {
                v2 = Some(dir.clone());
            } else if controllers.contains(&"memory") {
                v1_memory = Some(dir.clone());
            } else if controllers.contains(&"cpu") {
                v1_cpu = Some(dir.clone());
            }
            dirs.push(dir);
        }
        let write = |dir: &PathBuf, file: &str, value: String| {
            std::fs::write(dir.join(file), value)
                .unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()))
        };
        match (&v1_memory, &v2) {
            (Some(m), _) => write(m, "memory.limit_in_bytes", memory_bytes.to_string()),
            (None, Some(v2)) => write(v2, "memory.max", memory_bytes.to_string()),
            _ => panic!("no memory controller"),
        }
        match (&v1_cpu, &v2) {
            (Some(c), _) => {
                write(c, "cpu.cfs_period_us", "100000".into());
                write(c, "cpu.cfs_quota_us", cpu_quota_us.to_string());
            }
            (None, Some(v2)) => write(v2, "cpu.max", format!("{cpu_quota_us} 100000")),
            _ => panic!("no cpu controller"),
        }
        Self { dirs, children: Vec::new() }
    }

    /// Starts `program args…` inside the cgroup (every hierarchy).
    fn spawn(&mut self, program: &str, args: &[&str]) {
        let child = podtrace_test_support::command_in_cgroups(&self.dirs, program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(child);
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for dir in &self.dirs {
            // Every process of the cgroup, the workload's forked burner included.
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.lines() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
        // The leaves, then the test's own parents (`/podtrace-e2e-scrape-<pid>`). The kernel
        // removes a cgroup asynchronously: its parent refuses rmdir (EBUSY) while it is dying.
        let parents: Vec<PathBuf> =
            self.dirs.iter().filter_map(|d| d.parent()).map(PathBuf::from).collect();
        for dir in self.dirs.iter().chain(&parents) {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A child process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn reference_examples_match_the_reference_document() {
    let reference = repo_root().join("../shared/reference/podtrace-metrics.md");
    let Ok(doc) = std::fs::read_to_string(&reference) else {
        println!("SKIPPED: {} is not beside the repository", reference.display());
        return;
    };
    let squash =
        |s: &str| s.split_whitespace().collect::<String>().replace("(", "").replace(")", "");
    let doc = squash(&doc);
    let queries = reference_queries();
    assert_eq!(queries.len(), 21);
    for q in queries {
        assert!(doc.contains(&squash(&q)), "not in the reference: {q}");
    }
}

#[test]
fn prometheus_gets_data_for_every_reference_example_and_dashboard_panel() {
    if !podtrace_test_support::require_root(
        "prometheus_gets_data_for_every_reference_example_and_dashboard_panel",
        "cgroups and eBPF",
    ) {
        return;
    }
    let name = format!("podtrace-e2e-scrape-{}", std::process::id());
    // 64 MiB memory, 20 % of a CPU: the workload's burner uses up the quota (alert level 3).
    let mut cgroup = TestCgroup::create(&format!("/{name}/app"), 64 << 20, 20_000);
    let dns_port = free_port().to_string();
    cgroup.spawn(
        "python3",
        &[repo_root().join("e2e/workload/traffic.py").to_str().unwrap(), &dns_port],
    );

    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "apiVersion: podtrace.dev/v1alpha1\nkind: PodTrace\nmetadata: {{name: web, namespace: shop}}\nspec:\n  selector:\n    matchLabels: {{podtrace.dev/cgroup: \"/{name}/*\"}}\n  profile: {{interval: 1s}}\n"
    );
    std::fs::write(dir.join("agent.yaml"), config).unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let _agent = Process(
        Command::new(binary("podtrace-agent"))
            .args(["standalone", "--config"])
            .arg(dir.join("agent.yaml"))
            .args(["--metrics-addr", &metrics, "--dns-port", &dns_port])
            .args(["--health-addr", &format!("127.0.0.1:{}", free_port())])
            .args(["--admin-addr", &format!("127.0.0.1:{}", free_port())])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let prometheus = Prometheus::start("podtrace", &[metrics]).unwrap();

    let mut queries: Vec<(String, String)> =
        reference_queries().into_iter().map(|q| ("reference".to_owned(), q)).collect();
    queries.extend(dashboard_queries());
    // `> 100` lists resources over their limit. The kernel keeps memory and CPU usage at their
    // limits, so that example is only required to evaluate, not to return data.
    let may_be_empty = |q: &str| q.ends_with("> 100");

    let deadline = Instant::now() + Duration::from_secs(90);
    let mut failures;
    loop {
        std::thread::sleep(Duration::from_secs(3));
        failures = Vec::new();
        for (origin, q) in &queries {
            match prometheus.query(q) {
                Ok(samples) if samples.is_empty() && may_be_empty(q) => {}
                Ok(samples) => {
                    if let Err(e) = plausible(q, &samples) {
                        failures.push(format!("[{origin}] {q}: {e}"));
                    }
                }
                Err(e) => failures.push(format!("[{origin}] {q}: {e}")),
            }
        }
        if failures.is_empty() || Instant::now() > deadline {
            break;
        }
    }
    let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
    assert!(
        failures.is_empty(),
        "{} of {} queries failed:\n{}\nagent log tail:\n{}",
        failures.len(),
        queries.len(),
        failures.join("\n"),
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    // The workload's own values are in the results: its pod, the DNS delay of 10 ms.
    let dns = prometheus
        .query("histogram_quantile(0.5, sum by (le) (rate(podtrace_dns_latency_seconds_histogram_bucket{pod=\"web\"}[1m])))")
        .unwrap();
    assert!(
        (0.0064..=0.0256).contains(&dns[0].value),
        "DNS p50 {} is not near the responder's 10 ms",
        dns[0].value
    );
    let alert = prometheus
        .query("max(podtrace_resource_alert_level{pod=\"web\",resource_type=\"cpu\"})")
        .unwrap();
    assert_eq!(alert[0].value, 3.0, "the burner uses up the CPU quota");
    let _ = std::fs::remove_dir_all(dir);
}
