//! Root tests with real cgroups and real processes: the collectors' values against the kernel's
//! own files, and the admin channel against a running agent. Skipped (with a message) when not
//! root.

use podtrace_agent::{
    cgroup::CgroupLayout,
    collectors::ebpf::EbpfSource,
    engine::Engine,
    metrics::{Labels, Sources, Store, TargetKey, agent::AgentMetrics},
    targets::Target,
};
use podtrace_api::{MonitoringProfileSpec, profile::Probe, top::parse_line};
use std::{
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

/// Returns from the test unless it runs as root (SKIPPED, or a failure under CI).
macro_rules! require_root {
    () => {{
        fn here() {}
        let test = std::any::type_name_of_val(&here).trim_end_matches("::here");
        if !podtrace_test_support::require_root(test, "real cgroups") {
            return;
        }
    }};
}

/// A cgroup of its own in every hierarchy the node mounts, removed on drop (its processes
/// killed first).
struct TestCgroup {
    relative: String,
    dirs: Vec<PathBuf>,
    layout: CgroupLayout,
    children: Vec<Child>,
}

impl TestCgroup {
    fn new(name: &str) -> Self {
        let layout = CgroupLayout::detect().unwrap();
        let relative = format!("/podtrace-test-{}-{name}", std::process::id());
        let mut dirs = Vec::new();
        let mut roots: Vec<PathBuf> = layout.v1.values().cloned().collect();
        roots.extend(layout.v2.clone());
        roots.sort();
        roots.dedup();
        for root in roots {
            if layout.v1.is_empty() {
                // cgroup v2 only: the controllers must be enabled for the children of the root.
                let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory +cpu +io");
            }
            let dir = root.join(relative.trim_start_matches('/'));
            std::fs::create_dir_all(&dir).unwrap();
            dirs.push(dir);
        }
        Self { relative, dirs, layout, children: Vec::new() }
    }

    fn set_limits(&self, memory: u64, cpu_quota_us: u64) {
        let g = self.layout.resolve(&self.relative).unwrap();
        match (&g.memory, &g.cpu) {
            (Some(m), Some(c)) => {
                std::fs::write(m.join("memory.limit_in_bytes"), memory.to_string()).unwrap();
                std::fs::write(c.join("cpu.cfs_period_us"), "100000").unwrap();
                std::fs::write(c.join("cpu.cfs_quota_us"), cpu_quota_us.to_string()).unwrap();
            }
            _ => {
                let d = g.v2.unwrap();
                std::fs::write(d.join("memory.max"), memory.to_string()).unwrap();
                std::fs::write(d.join("cpu.max"), format!("{cpu_quota_us} 100000")).unwrap();
            }
        }
    }

    /// Starts `python3 -c script` inside the group and waits for its first output line.
    fn spawn(&mut self, script: &str) -> u32 {
        let mut child = podtrace_test_support::command_in_cgroups(&self.dirs, "python3")
            .args(["-u", "-c", script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the workload did not start");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    fn file(&self, name: &str) -> u64 {
        self.dirs
            .iter()
            .find_map(|d| std::fs::read_to_string(d.join(name)).ok())
            .unwrap_or_else(|| panic!("{name} not found"))
            .trim()
            .parse()
            .unwrap()
    }

    fn target(&self, profile: MonitoringProfileSpec) -> Target {
        Target {
            key: TargetKey::new("root-test", "pod", "main"),
            uid: String::new(),
            cgroup: self.layout.resolve(&self.relative).unwrap(),
            pids: None,
            profile,
            pod_labels: Labels::default(),
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for d in self.dirs.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Allocates and touches `mib` MiB, opens 7 extra fds, starts 3 sleeping threads, says "ready".
fn workload(mib: u64, busy: bool) -> String {
    format!(
        "import threading, time, os\n\
         b = bytearray({mib} << 20)\n\
         for i in range(0, len(b), 4096): b[i] = 1\n\
         fds = [open('/dev/null') for _ in range(7)]\n\
         for _ in range(3): threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n\
         print('ready', flush=True)\n\
         while True:\n    \
             {}\n",
        if busy { "sum(range(10000))" } else { "time.sleep(1)" }
    )
}

fn series(store: &Store) -> Vec<(String, std::collections::BTreeMap<String, String>, f64)> {
    let mut text = String::new();
    store.encode(&mut text, |_| true).unwrap();
    text.lines()
        .filter_map(parse_line)
        .map(|(n, l, v)| (n.to_owned(), l.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(), v))
        .collect()
}

fn value(
    s: &[(String, std::collections::BTreeMap<String, String>, f64)],
    name: &str,
    resource: Option<&str>,
) -> f64 {
    s.iter()
        .find(|(n, l, _)| {
            n == name
                && resource.is_none_or(|r| l.get("resource_type").map(String::as_str) == Some(r))
        })
        .unwrap_or_else(|| panic!("{name} {resource:?} missing"))
        .2
}

fn engine() -> (Engine, Arc<Store>) {
    let store = Arc::new(Store::default());
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = AgentMetrics::register(&mut registry);
    (
        Engine::new(
            "/proc".into(),
            store.clone(),
            Arc::new(Sources::default()),
            metrics,
            Duration::from_secs(10),
        ),
        store,
    )
}

#[test]
fn memory_usage_utilization_and_alert_level_match_the_cgroup_files() {
    require_root!();
    let mut g = TestCgroup::new("memory");
    g.set_limits(64 << 20, 50_000);
    g.spawn(&workload(52, false));
    // Thresholds around the expected ~85 % so the level is decided by the measurement.
    let mut profile = MonitoringProfileSpec::default();
    profile.resource_limits.warning_percent = 50;
    profile.resource_limits.critical_percent = 70;
    profile.resource_limits.emergency_percent = 99;
    let (mut engine, store) = engine();
    engine.set_targets(vec![g.target(profile)], vec![]);
    let usage_file =
        if g.layout.v1.contains_key("memory") { "memory.usage_in_bytes" } else { "memory.current" };
    let before = g.file(usage_file);
    engine.tick(Instant::now());
    let after = g.file(usage_file);
    let s = series(&store);
    let usage = value(&s, "podtrace_resource_usage_bytes", Some("memory"));
    let limit = value(&s, "podtrace_resource_limit_bytes", Some("memory"));
    let util = value(&s, "podtrace_resource_utilization_percent", Some("memory"));
    let level = value(&s, "podtrace_resource_alert_level", Some("memory"));
    assert_eq!(limit, (64 << 20) as f64);
    let (lo, hi) = (before.min(after) as f64 * 0.99, before.max(after) as f64 * 1.01);
    assert!((lo..=hi).contains(&usage), "usage {usage} vs the file's {before}..{after}");
    assert!(usage > (52 << 20) as f64, "the workload's 52 MiB are not in {usage}");
    assert!((util - usage / limit * 100.0).abs() < 1e-9);
    let expected = match util {
        u if u >= 99.0 => 3.0,
        u if u >= 70.0 => 2.0,
        u if u >= 50.0 => 1.0,
        _ => 0.0,
    };
    assert_eq!(level, expected, "utilization {util}");
    assert!(level >= 2.0, "52 MiB of 64 MiB is over the 70 % threshold ({util})");
}

#[test]
fn a_resized_limit_shows_after_the_limits_refresh_while_usage_is_read_every_time() {
    require_root!();
    let mut g = TestCgroup::new("resize");
    g.set_limits(64 << 20, 50_000);
    g.spawn(&workload(8, false));
    let (mut engine, store) = engine();
    let profile = MonitoringProfileSpec { interval: "1s".into(), ..Default::default() };
    engine.set_targets(vec![g.target(profile)], vec![]);
    let limit =
        |store: &Store| value(&series(store), "podtrace_resource_limit_bytes", Some("memory"));
    let usage =
        |store: &Store| value(&series(store), "podtrace_resource_usage_bytes", Some("memory"));
    let start = Instant::now();
    engine.tick(start);
    assert_eq!(limit(&store), (64 << 20) as f64);
    let first_usage = usage(&store);
    // An in-place resize, and more memory used.
    g.set_limits(96 << 20, 50_000);
    g.spawn(&workload(16, false));
    std::thread::sleep(Duration::from_millis(500));
    engine.tick(start + Duration::from_secs(2));
    assert_eq!(limit(&store), (64 << 20) as f64, "limits are reused within LIMITS_REFRESH");
    assert!(usage(&store) > first_usage + (12 << 20) as f64, "usage is read every collection");
    engine.tick(
        start + podtrace_agent::collectors::resource::LIMITS_REFRESH + Duration::from_secs(1),
    );
    assert_eq!(limit(&store), (96 << 20) as f64, "the resize shows after LIMITS_REFRESH");
}

/// The CPU time the kernel accounted to the group, in microseconds (`cpuacct.usage` in ns on
/// v1, `usage_usec` of `cpu.stat` on v2).
fn cpu_usage_us(g: &TestCgroup) -> f64 {
    for d in &g.dirs {
        if let Ok(ns) = std::fs::read_to_string(d.join("cpuacct.usage")) {
            return ns.trim().parse::<f64>().unwrap() / 1000.0;
        }
        if let Ok(stat) = std::fs::read_to_string(d.join("cpu.stat"))
            && let Some(line) = stat.lines().find(|l| l.starts_with("usage_usec "))
        {
            return line[11..].trim().parse().unwrap();
        }
    }
    panic!("no CPU usage file in {:?}", g.dirs)
}

/// Utilization is the CPU time the cgroup's own files show over the interval, against the
/// quota: checked against readings taken around each collection, so that the test does not
/// depend on how much CPU a loaded machine gives the workload. That the busy loop reaches its
/// quota is waited for, with a deadline.
#[test]
fn cpu_quota_and_utilization_follow_cfs_and_cpuacct() {
    require_root!();
    let mut g = TestCgroup::new("cpu");
    g.set_limits(256 << 20, 20_000);
    g.spawn(&workload(1, true));
    let (mut engine, store) = engine();
    let profile = MonitoringProfileSpec { interval: "1s".into(), ..Default::default() };
    engine.set_targets(vec![g.target(profile)], vec![]);
    let quota_us_per_s = 200_000.0;
    let start = Instant::now();
    let mut at = start;
    let (mut before, _) = (cpu_usage_us(&g), engine.tick(at));
    let mut after_previous = cpu_usage_us(&g);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        std::thread::sleep(Duration::from_millis(1500));
        at += Duration::from_millis(1500);
        let lo = cpu_usage_us(&g);
        engine.tick(at);
        let hi = cpu_usage_us(&g);
        let s = series(&store);
        assert_eq!(value(&s, "podtrace_resource_limit_bytes", Some("cpu")), 20_000.0);
        let util = value(&s, "podtrace_resource_utilization_percent", Some("cpu"));
        // The engine read the file between `before`..`after_previous` and `lo`..`hi`, 1.5 s
        // apart by the clock it was given.
        let (min, max) = ((lo - after_previous) / 1.5, (hi - before) / 1.5);
        let (min, max) = (min / quota_us_per_s * 100.0, max / quota_us_per_s * 100.0);
        assert!(
            (min - 0.01..=max + 0.01).contains(&util),
            "utilization {util} not in {min}..{max}"
        );
        let level = value(&s, "podtrace_resource_alert_level", Some("cpu"));
        let expected = match util {
            u if u >= 95.0 => 3.0,
            u if u >= 90.0 => 2.0,
            u if u >= 80.0 => 1.0,
            _ => 0.0,
        };
        assert_eq!(level, expected, "utilization {util}");
        // The process's own CPU percent (of one CPU) is the same time, from /proc/<pid>/stat
        // in clock ticks: a fifth of the group's utilization, within a tick or two per interval.
        let process_cpu = value(&s, "podtrace_process_cpu_usage_percent", None);
        assert!(
            (process_cpu - util * 0.2).abs() <= 2.0,
            "process cpu {process_cpu}% of one CPU vs {util}% of a 0.2-CPU quota"
        );
        if util >= 80.0 {
            break; // a busy loop under a 0.2-CPU quota uses it up
        }
        assert!(Instant::now() < deadline, "the busy loop never reached its quota: {util}%");
        (before, after_previous) = (lo, hi);
    }
}

#[test]
fn thread_and_fd_counts_match_proc() {
    require_root!();
    let mut g = TestCgroup::new("proc");
    let pid = g.spawn(&workload(1, false));
    let (mut engine, store) = engine();
    engine.set_targets(vec![g.target(MonitoringProfileSpec::default())], vec![]);
    engine.tick(Instant::now());
    let s = series(&store);
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().count() as f64;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count() as f64;
    let row = |name: &str| {
        s.iter()
            .find(|(n, l, _)| n == name && l.get("pid") == Some(&pid.to_string()))
            .unwrap_or_else(|| panic!("{name} for pid {pid} missing"))
            .2
    };
    assert_eq!(row("podtrace_process_threads"), tasks);
    assert_eq!(tasks, 4.0, "python's main thread plus the 3 started");
    assert_eq!(row("podtrace_process_open_fds"), fds);
    assert!(fds >= 10.0, "stdin/out/err plus 7 opened: {fds}");
    let name = s.iter().find(|(n, _, _)| n == "podtrace_process_threads").unwrap();
    assert_eq!(name.1["process_name"], "python3");
    assert_eq!(name.1["container"], "main");
}

#[test]
fn processes_beyond_the_bound_are_summed_as_other_and_the_sums_stay_exact() {
    require_root!();
    let mut g = TestCgroup::new("many");
    let pids: Vec<u32> = (0..5).map(|_| g.spawn(&workload(1, false))).collect();
    let (mut engine, store) = engine();
    engine.set_max_processes(2);
    engine.set_targets(vec![g.target(MonitoringProfileSpec::default())], vec![]);
    engine.tick(Instant::now());
    let s = series(&store);
    let threads: Vec<(&String, f64)> = s
        .iter()
        .filter(|(n, _, _)| n == "podtrace_process_threads")
        .map(|(_, l, v)| (&l["pid"], *v))
        .collect();
    assert_eq!(threads.len(), 3, "two processes of their own plus other: {threads:?}");
    let other = threads.iter().find(|(p, _)| *p == "other").expect("an other series");
    let truth: f64 = pids
        .iter()
        .map(|p| std::fs::read_dir(format!("/proc/{p}/task")).unwrap().count() as f64)
        .sum();
    assert_eq!(threads.iter().map(|(_, v)| v).sum::<f64>(), truth, "the sum over pids is exact");
    assert_eq!(other.1, 12.0, "three processes of 4 threads each");
    let named = s.iter().find(|(n, l, _)| n == "podtrace_process_threads" && l["pid"] == "other");
    assert_eq!(named.unwrap().1["process_name"], "other");
}

#[test]
fn series_of_a_target_that_went_away_are_removed() {
    require_root!();
    let mut g = TestCgroup::new("gone");
    g.spawn(&workload(1, false));
    let (mut engine, store) = engine();
    engine.set_targets(vec![g.target(MonitoringProfileSpec::default())], vec![]);
    engine.tick(Instant::now());
    assert!(store.series_of_pod("root-test", "pod") > 10);
    engine.set_targets(vec![], vec![]);
    assert_eq!(store.series_of_pod("root-test", "pod"), 0);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn admin(port: u16, line: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    writeln!(s, "{line}").unwrap();
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).unwrap();
    answer.trim().to_owned()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The agent binary in standalone mode on free loopback ports, killed on drop.
struct Agent {
    child: Child,
    metrics: u16,
    health: u16,
    admin: u16,
}

impl Agent {
    fn standalone(config: &Path) -> Agent {
        let (metrics, health, admin) = (free_port(), free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_podtrace-agent"))
            .args(["standalone", "--config", config.to_str().unwrap()])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
            .args(["--health-addr", &format!("127.0.0.1:{health}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Agent { child, metrics, health, admin }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn standalone_agent_serves_the_cgroup_and_the_admin_channel_switches_a_source_off() {
    require_root!();
    let mut g = TestCgroup::new("admin");
    g.set_limits(128 << 20, 100_000);
    g.spawn(&workload(8, false));
    let dir = std::env::temp_dir().join(format!("podtrace-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: podtrace.dev/v1alpha1\nkind: PodTrace\nmetadata: {{name: admin, namespace: t}}\nspec:\n  selector: {{matchLabels: {{podtrace.dev/cgroup: \"{}\"}}}}\n  profile: {{interval: 1s, probes: {{enabled: false}}}}\n",
            g.relative
        ),
    )
    .unwrap();
    let agent = Agent::standalone(&config);
    let (metrics, health, admin_port) = (agent.metrics, agent.health, agent.admin);
    let resource = format!(
        "podtrace_resource_usage_bytes{{resource_type=\"memory\",namespace=\"t\",pod=\"admin\",container=\"{}\"}}",
        g.relative.trim_start_matches('/')
    );
    wait_for("the resource series", || {
        std::net::TcpStream::connect(("127.0.0.1", metrics)).is_ok()
            && get(metrics, "/metrics").contains(&resource)
    });
    assert_eq!(admin(admin_port, "Mresource:disable"), "ok");
    let body = get(metrics, "/metrics");
    assert!(!body.contains("podtrace_resource_"), "resource series still served");
    assert!(body.contains("podtrace_process_threads{"), "other sources must stay");
    assert_eq!(admin(admin_port, "mresource"), "resource:disable");
    assert_eq!(admin(admin_port, "Mresource:enable"), "ok");
    wait_for("the resource series to come back", || get(metrics, "/metrics").contains(&resource));
    assert!(admin(admin_port, "Mnope:enable").starts_with("error: "));
    // A bad file keeps the previous configuration running, and health says Degraded.
    std::fs::write(&config, "not: [valid").unwrap();
    let health_live = || {
        Command::new(env!("CARGO_BIN_EXE_podtrace-agent"))
            .args(["health", "live", "--endpoint", &format!("127.0.0.1:{health}")])
            .output()
            .unwrap()
    };
    wait_for("health Degraded", || health_live().status.code() == Some(1));
    assert!(String::from_utf8_lossy(&health_live().stdout).starts_with("Degraded"));
    assert!(get(metrics, "/metrics").contains(&resource));
    let _ = std::fs::remove_dir_all(dir);
}

/// Waits for `go`, writes `n` bytes to `out` (a regular file), creates `done`, then sleeps.
fn file_writer(go: &Path, out: &Path, n: u64, done: &Path) -> String {
    format!(
        "import os, time\n\
         print('ready', flush=True)\n\
         while not os.path.exists({go:?}): time.sleep(0.01)\n\
         fd = os.open({out:?}, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)\n\
         os.write(fd, b'w' * {n})\n\
         os.close(fd)\n\
         open({done:?}, 'w').close()\n\
         while True: time.sleep(1)\n"
    )
}

fn wait_file(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_process_filter_measures_the_containers_processes_listed_every_interval() {
    require_root!();
    let mut g = TestCgroup::new("pfilter");
    let dir = std::env::temp_dir().join(format!("podtrace-agent-pf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = |name: &str| dir.join(name);
    let (n, m) = (40_000u64, 7_000u64);
    g.spawn(&file_writer(&f("go-a"), &f("a"), n, &f("done-a")));

    let (mut engine, store) = engine();
    let mut registry = prometheus_client::registry::Registry::default();
    let config =
        podtrace_ebpf::ProbeConfig { filter: podtrace_ebpf::Filter::Process, ..Default::default() };
    engine.set_ebpf(EbpfSource::load(config, &mut registry));
    let mut profile = MonitoringProfileSpec::default();
    profile.probes.include = [Probe::FsBytes].into_iter().collect();
    engine.set_targets(vec![g.target(profile)], vec![]);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let info = "podtrace_agent_ebpf_filter_info{filter=\"process\",forks=\"tp_btf\"} 1";
    assert!(text.contains(info), "{text}");

    // Listed at set_targets: A's writes count; a control outside the cgroup writes more.
    std::fs::write(f("go-a"), "").unwrap();
    wait_file(&f("done-a"));
    let control = Command::new("python3")
        .arg("-c")
        .arg(format!("open({:?}, 'wb').write(b'c' * 900000)", f("control")))
        .status()
        .unwrap();
    assert!(control.success());
    let written = |store: &Store| {
        series(store)
            .into_iter()
            .filter(|(name, l, _)| {
                name == "podtrace_filesystem_bytes_total"
                    && l.get("operation").map(String::as_str) == Some("write")
                    && l.get("pod").map(String::as_str) == Some("pod")
                    && l.get("container").map(String::as_str) == Some("main")
            })
            .map(|(_, _, v)| v)
            .sum::<f64>()
    };
    let mut now = Instant::now();
    engine.tick(now);
    assert_eq!(written(&store), n as f64, "A's bytes, none of the control's");

    // B starts after the listing: measured from the next interval's listing on.
    g.spawn(&file_writer(&f("go-b"), &f("b"), m, &f("done-b")));
    now += Duration::from_secs(3600);
    engine.tick(now);
    std::fs::write(f("go-b"), "").unwrap();
    wait_file(&f("done-b"));
    now += Duration::from_secs(3600);
    engine.tick(now);
    assert_eq!(written(&store), (n + m) as f64);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--bpf-stats`: on, the per-program counters count the runs of the tracked workload's file
/// writes and the agent reports bpf_stats on; off (the default), with the first agent's probes
/// dropped, the kernel counts nothing (a leaked BPF_ENABLE_STATS fd would count the second
/// writer's runs), no program series is made up and the gauge says why. bpf_stats is
/// node-wide, so the "off" half is only checked when the sysctl is off.
#[test]
fn bpf_program_counters_follow_the_bpf_stats_flag() {
    require_root!();
    let sysctl_on = podtrace_ebpf::bpf_stats_sysctl();
    let mut g = TestCgroup::new("bpfstats");
    let dir = std::env::temp_dir().join(format!("podtrace-agent-bpfstats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = |name: &str| dir.join(name);
    for bpf_stats in [true, false] {
        let (go, done) = (f(&format!("go-{bpf_stats}")), f(&format!("done-{bpf_stats}")));
        g.spawn(&file_writer(&go, &f("out"), 10_000, &done));
        let (mut engine, _store) = engine();
        let mut registry = prometheus_client::registry::Registry::default();
        let config = podtrace_ebpf::ProbeConfig { bpf_stats, ..Default::default() };
        engine.set_ebpf(EbpfSource::load(config, &mut registry));
        let mut profile = MonitoringProfileSpec::default();
        profile.probes.include = [Probe::FsBytes].into_iter().collect();
        engine.set_targets(vec![g.target(profile)], vec![]);
        std::fs::write(&go, "").unwrap();
        wait_file(&done);
        engine.tick(Instant::now());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        // The fs family's entry programs, on whichever rung it took: pt_fs_enter_btf on
        // sys_enter, or pt_fs_enter_<syscall> where tracefs is mounted.
        let runs: f64 = text
            .lines()
            .filter(|l| {
                // Whichever rung attached (tp_btf without tracefs, the syscall tracepoints
                // with it): every program of the fs family.
                l.starts_with("podtrace_agent_bpf_program_runs_total{")
                    && l.contains("family=\"fs\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if bpf_stats {
            // The writer's open, write and close, at least, ran the fs programs while it was
            // tracked.
            assert!(runs >= 3.0, "runs {runs}\n{text}");
            assert!(text.contains("podtrace_agent_bpf_stats_enabled 1"), "{text}");
        } else if !sysctl_on {
            assert!(!text.contains("podtrace_agent_bpf_program_runs_total{"), "{text}");
            assert!(text.contains("podtrace_agent_bpf_stats_enabled 0"), "{text}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The agent binary mounts tracefs, when the node has not, in a mount namespace of its own: the
/// fs probes then run on the per-syscall tracepoints (only the eight file syscalls run a
/// program), measure a file write exactly, and the node's mounts are unchanged.
#[test]
fn the_agent_binary_mounts_tracefs_for_itself_and_fs_probes_use_the_syscall_tracepoints() {
    require_root!();
    let node_tracefs = podtrace_ebpf::tracefs::tracefs_path();
    let mut g = TestCgroup::new("tracefs");
    let dir = std::env::temp_dir().join(format!("podtrace-agent-tracefs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = |name: &str| dir.join(name);
    let n = 123_457u64;
    g.spawn(&file_writer(&f("go"), &f("out"), n, &f("done")));
    let config = f("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: podtrace.dev/v1alpha1\nkind: PodTrace\nmetadata: {{name: fs, namespace: t}}\nspec:\n  selector: {{matchLabels: {{podtrace.dev/cgroup: \"{}\"}}}}\n  profile: {{interval: 1s, probes: {{enabled: true, include: [fsBytes]}}}}\n",
            g.relative
        ),
    )
    .unwrap();
    let agent = Agent::standalone(&config);
    let metrics = agent.metrics;
    let info = "podtrace_agent_probe_info{probe=\"fsBytes\",method=\"tracepoint\"} 1";
    wait_for("fsBytes on the per-syscall tracepoints", || {
        std::net::TcpStream::connect(("127.0.0.1", metrics)).is_ok()
            && get(metrics, "/metrics").contains(info)
    });
    std::fs::write(f("go"), "").unwrap();
    wait_file(&f("done"));
    let written = || -> f64 {
        get(metrics, "/metrics")
            .lines()
            .filter(|l| {
                l.starts_with("podtrace_filesystem_bytes_total{")
                    && l.contains("pod=\"fs\"")
                    && l.contains("operation=\"write\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    wait_for("the written bytes", || written() > 0.0);
    assert_eq!(written(), n as f64, "exactly the bytes written");
    assert_eq!(podtrace_ebpf::tracefs::tracefs_path(), node_tracefs, "the node's mounts changed");
    let _ = std::fs::remove_dir_all(&dir);
}
