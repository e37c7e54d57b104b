//! `cargo build --release -p podtrace-agent -p podtrace-bench-agent && target/release/agent-bench`
//! (as root): the node agent's costs against its targets, printed as ratios (≤ 1 meets the target).
//!
//! 1. `/metrics` encoding at 10k and 100k series, CPU ns per series (target ≤ 60), with the
//!    `prometheus` crate's `TextEncoder` encoding the same series as the peer (the median of
//!    interleaved rounds, the thread's own CPU time from `/proc/thread-self/schedstat`).
//! 2. Collector CPU per cgroup and cycle (resource + process sources, target ≤ 50 µs), over 100
//!    real cgroups with a sleeping process each; the thread's own CPU time.
//! 3. Agent RSS (the release binary, standalone mode) with 100 and 1,000 real cgroups with a
//!    sleeping process each, after the targets are attached and collected several times
//!    (targets ≤ 32 MiB and ≤ 64 MiB).

use podtrace_agent::{
    cgroup::CgroupLayout,
    engine::Engine,
    metrics::{
        Labels, Sample, Sources, Store, TargetKey, agent::AgentMetrics, catalog, sources::Source,
    },
    targets::Target,
};
use podtrace_api::MonitoringProfileSpec;
use std::{
    hint::black_box,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

const ROUNDS: usize = 15;
const RESOURCE_TYPES: [&str; 3] = ["memory", "cpu", "io"];

/// One series: its source, its sample, and the same as name, labels, value for the peer.
type Flat = (String, Vec<(&'static str, String)>, f64);

/// Realistic series: per container 4 resource families × 3 types plus 15 process families for
/// 3 processes.
fn fill(store: &Store, series: usize) -> Vec<Flat> {
    let mut flat = Vec::with_capacity(series);
    let mut t = 0;
    while flat.len() < series {
        let key =
            TargetKey::new(&format!("ns-{}", t % 20), &format!("pod-{t}-7f9c8d6b5-x2x4z"), "app");
        let base = || {
            vec![
                ("namespace", key.namespace.clone()),
                ("pod", key.pod.clone()),
                ("container", key.container.clone()),
            ]
        };
        let mut all: Vec<(Source, Sample, Flat)> = Vec::new();
        for family in [
            catalog::RESOURCE_LIMIT,
            catalog::RESOURCE_USAGE,
            catalog::RESOURCE_UTILIZATION,
            catalog::RESOURCE_ALERT,
        ] {
            for r in RESOURCE_TYPES {
                let mut l = Labels::default();
                l.push("resource_type", r).extend(&key.labels());
                let v = (t * 7919 + family) as f64 * 1.5;
                let mut labels = vec![("resource_type", r.to_owned())];
                labels.extend(base());
                all.push((
                    Source::Resource,
                    Sample::new(family, l, v),
                    (catalog::FAMILIES[family].name.to_owned(), labels, v),
                ));
            }
        }
        for pid in 0..3 {
            for family in catalog::PROCESS_CPU..=catalog::PROCESS_HISTORY_SAMPLES {
                let mut l = key.labels();
                l.push("pid", &(1000 + pid).to_string()).push("process_name", "server");
                let v = (t + pid + family) as f64 * 3.25;
                let mut labels = base();
                labels.extend([
                    ("pid", (1000 + pid).to_string()),
                    ("process_name", "server".to_owned()),
                ]);
                all.push((
                    Source::Process,
                    Sample::new(family, l, v),
                    (catalog::FAMILIES[family].name.to_owned(), labels, v),
                ));
            }
        }
        all.truncate(series - flat.len());
        for source in [Source::Resource, Source::Process] {
            let samples = all.iter().filter(|a| a.0 == source).map(|a| a.1.clone()).collect();
            store.replace(source, &key, samples, None);
        }
        flat.extend(all.into_iter().map(|a| a.2));
        t += 1;
    }
    flat
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn encoding(series: usize) -> (f64, f64) {
    let store = Store::default();
    let flat = fill(&store, series);
    assert_eq!(store.series(), series);
    // The peer: one GaugeVec per family with the same labels and values.
    let registry = prometheus::Registry::new();
    let mut vecs: std::collections::BTreeMap<String, prometheus::GaugeVec> = Default::default();
    for (name, labels, v) in &flat {
        let names: Vec<&str> = labels.iter().map(|(k, _)| *k).collect();
        let g = vecs.entry(name.clone()).or_insert_with(|| {
            let g = prometheus::GaugeVec::new(prometheus::Opts::new(name.clone(), "help"), &names)
                .unwrap();
            registry.register(Box::new(g.clone())).unwrap();
            g
        });
        let values: Vec<&str> = labels.iter().map(|(_, v)| v.as_str()).collect();
        g.with_label_values(&values).set(*v);
    }
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut out = String::with_capacity(series * 160);
    let mut buf = Vec::with_capacity(series * 160);
    // Enough repetitions per round for the scheduler's CPU-time accounting to resolve it.
    let reps = (1_000_000 / series).max(1);
    for _ in 0..ROUNDS {
        let t = thread_cpu();
        for _ in 0..reps {
            out.clear();
            store.encode(&mut out, |_| true).unwrap();
            black_box(&out);
        }
        ours.push((thread_cpu() - t).as_nanos() as f64 / (series * reps) as f64);
        let t = thread_cpu();
        for _ in 0..reps {
            buf.clear();
            prometheus::Encoder::encode(
                &prometheus::TextEncoder::new(),
                &registry.gather(),
                &mut buf,
            )
            .unwrap();
            black_box(&buf);
        }
        theirs.push((thread_cpu() - t).as_nanos() as f64 / (series * reps) as f64);
    }
    (median(ours), median(theirs))
}

fn thread_cpu() -> Duration {
    // /proc/thread-self/schedstat: on-CPU time in ns first.
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    Duration::from_nanos(s.split_whitespace().next().unwrap().parse().unwrap())
}

/// `n` cgroups under /podtrace-bench-<pid>/ in every hierarchy, each with a sleeping process.
struct Cgroups {
    relative: Vec<String>,
    dirs: Vec<PathBuf>,
    children: Vec<Child>,
}

impl Cgroups {
    fn new(layout: &CgroupLayout, n: usize) -> Self {
        let mut roots: Vec<PathBuf> = layout.v1.values().cloned().collect();
        roots.extend(layout.v2.clone());
        roots.sort();
        roots.dedup();
        let base = format!("podtrace-bench-{}", std::process::id());
        let mut me = Self { relative: Vec::new(), dirs: Vec::new(), children: Vec::new() };
        for i in 0..n {
            let rel = format!("/{base}/pod-{i}");
            let dirs: Vec<PathBuf> =
                roots.iter().map(|r| r.join(rel.trim_start_matches('/'))).collect();
            for d in &dirs {
                std::fs::create_dir_all(d).unwrap();
            }
            let child = podtrace_test_support::command_in_cgroups(&dirs, "sleep")
                .arg("3600")
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            me.children.push(child);
            me.relative.push(rel);
            me.dirs.extend(dirs);
        }
        me.dirs.extend(roots.iter().map(|r| r.join(&base)));
        // Wait until the last process is in.
        let last = me.dirs[me.dirs.len() - roots.len() - 1].join("cgroup.procs");
        while std::fs::read_to_string(&last).unwrap_or_default().trim().is_empty() {
            std::thread::sleep(Duration::from_millis(10));
        }
        me
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
        for d in &self.dirs {
            for _ in 0..100 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn collector_us_per_cgroup(layout: &CgroupLayout) -> f64 {
    let groups = Cgroups::new(layout, 100);
    let store = Arc::new(Store::default());
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = AgentMetrics::register(&mut registry);
    let sources = Arc::new(Sources::default());
    sources.apply(&podtrace_agent::metrics::sources::SourcesUpdate {
        sources: vec![(Source::Kernel, false)],
        ..Default::default()
    });
    let mut engine =
        Engine::new("/proc".into(), store.clone(), sources, metrics, Duration::from_secs(3600));
    let targets = groups
        .relative
        .iter()
        .enumerate()
        .map(|(i, rel)| Target {
            key: TargetKey::new("bench", &format!("pod-{i}"), "app"),
            uid: String::new(),
            cgroup: layout.resolve(rel).unwrap(),
            pids: None,
            profile: MonitoringProfileSpec::default(),
            pod_labels: Labels::default(),
        })
        .collect();
    engine.set_targets(targets, vec![]);
    let start = Instant::now();
    engine.tick(start); // warm-up: first readings, history allocation
    // The thread's CPU time advances in scheduler ticks on some kernels (4 ms here: one round of
    // 100 cgroups read as 40 or 80 µs per cgroup), so the mean over many rounds is reported.
    let rounds: usize =
        std::env::var("PT_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(4 * ROUNDS);
    let cpu = thread_cpu();
    for round in 1..=rounds {
        // The default profile's 10 s interval (limits are re-read every LIMITS_REFRESH).
        engine.tick(start + Duration::from_secs(10 * round as u64));
    }
    let per_cgroup = (thread_cpu() - cpu).as_nanos() as f64 / 1000.0 / (100 * rounds) as f64;
    assert!(store.series() >= 100 * 18, "collected {} series", store.series());
    per_cgroup
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn rss_mib(layout: &CgroupLayout, agent: &Path, n: usize) -> (f64, f64) {
    let groups = Cgroups::new(layout, n);
    let base = groups.relative[0].rsplit_once('/').unwrap().0.to_owned();
    let dir = std::env::temp_dir().join(format!("podtrace-bench-agent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("bench.yaml");
    std::fs::write(
        &config,
        format!("apiVersion: podtrace.dev/v1alpha1\nkind: PodTrace\nmetadata: {{name: bench}}\nspec:\n  selector: {{matchLabels: {{podtrace.dev/cgroup: \"{base}/*\"}}}}\n  profile: {{interval: 1s, probes: {{enabled: false}}, maxSeriesPerPod: 100000}}\n"),
    )
    .unwrap();
    let port = free_port();
    let mut child = Command::new(agent)
        .args([
            "standalone",
            "--config",
            config.to_str().unwrap(),
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .args([
            "--health-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--admin-addr",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let want = format!("podtrace_agent_targets{{state=\"attached\"}} {n}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the agent did not attach {n} targets");
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            write!(s, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
            let mut body = String::new();
            let _ = s.read_to_string(&mut body);
            if body.contains(&want) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_secs(5)); // five collections of every target
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse().ok())
            .unwrap()
    };
    let (rss, hwm) = (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
    (rss, hwm)
}

fn main() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("podtrace agent benchmark (ratio = measured / target; ≤ 1 meets the target)");
    println!(
        "load average {} on {} CPUs: absolute figures scale with it, the ratio to the peer does not\n",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    // `agent-bench collector` (or `encoding`, `rss`) runs only that part, e.g. under `perf`.
    let only: Vec<String> = std::env::args().skip(1).collect();
    let run = |part: &str| only.is_empty() || only.iter().any(|o| o == part);
    for series in [10_000, 100_000].into_iter().filter(|_| run("encoding")) {
        let (ours, peer) = encoding(series);
        println!(
            "/metrics encoding, {series:>6} series: {ours:6.1} ns/series (target 60: ratio {:.2}); prometheus crate {peer:6.1} ns/series (podtrace/prometheus {:.3})",
            ours / 60.0,
            ours / peer
        );
    }
    if !podtrace_test_support::require_root("the collector and RSS benchmarks", "real cgroups") {
        return;
    }
    let layout = CgroupLayout::detect().unwrap();
    if run("collector") {
        let us = collector_us_per_cgroup(&layout);
        println!(
            "collector CPU, resource + process, 100 cgroups: {us:6.1} µs per cgroup per cycle (target 50: ratio {:.2})",
            us / 50.0
        );
    }
    if !run("rss") {
        return;
    }
    let agent = std::env::current_exe().unwrap().with_file_name("podtrace-agent");
    if !agent.exists() {
        println!("RSS skipped: build the agent first (cargo build --release -p podtrace-agent)");
        return;
    }
    for (n, target) in [(100, 32.0), (1000, 64.0)] {
        let (rss, hwm) = rss_mib(&layout, &agent, n);
        println!(
            "agent RSS with {n:>4} cgroups: {rss:5.1} MiB (peak {hwm:5.1} MiB; target {target}: ratio {:.2})",
            rss / target
        );
    }
}
