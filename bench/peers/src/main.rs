//! `make bench-peers` (root): the node agent side by side with the exporters a user would run
//! instead, on the same machine, in the same run, every figure a ratio podtrace / peer.
//!
//! - **cAdvisor** (per-container resource metrics; the kubelet embeds it), built from its Go
//!   module by `bench/peers/build-peers.sh`, restricted to the metrics podtrace's resource and
//!   process sources compare with (`-enable_metrics=cpu,memory,diskIO,process`) and to the
//!   bench's cgroups (`-docker_only -raw_cgroup_prefix_whitelist=/podtrace-peers-<pid>`), with
//!   the same fixed interval as the agent (`-housekeeping_interval=<interval>
//!   -allow_dynamic_housekeeping=false`: its default backs off to 60 s for containers whose
//!   stats do not change). For 100, 1,000 and 10,000 cgroups with a sleeping process each
//!   (`cgroups.rs`), and 100 with a busy one: RSS after warm-up (and after the scrapes), CPU
//!   per collection cycle per cgroup (the exporter's cgroup CPU time over whole cycles, without
//!   scrapes), `/metrics` bytes, scrape time (median) and series.
//! - **node_exporter** (the node's kernel counters), Debian's, with only the collectors of the
//!   node metrics podtrace exports (`stat`: `node_context_switches_total`; `entropy`:
//!   `node_entropy_available_bits`; `tcpstat`: the connections `node_network_connections_total`
//!   counts) and without its own Go metrics, against the agent with no target: CPU per interval
//!   with one scrape per interval (node_exporter reads the kernel when scraped, the agent every
//!   interval), RSS, scrape time.
//!
//! Both exporters of a comparison run at the same time on the same cgroups, so that other load
//! on the machine weighs on both alike; the load average is printed with the figures.
//!
//! `PT_PEERS_SIZES` (`100,1000,10000`), `PT_PEERS_BUSY` (`100`: sizes of the busy variant),
//! `PT_PEERS_INTERVAL` (`10`, seconds), `PT_PEERS_CYCLES` (`3`, cycles per CPU window),
//! `PT_PEERS_SCRAPES` (`5`), `PT_PEERS_PARTS` (`cadvisor,node`); the peers' binaries and
//! versions come from `PT_PEERS_CADVISOR`, `PT_PEERS_CADVISOR_VERSION`, `PT_PEERS_NODE_EXPORTER`
//! and `PT_PEERS_NODE_EXPORTER_VERSION` (the Makefile sets them from `build-peers.sh`).

mod cgroups;
mod exporter;

use anyhow::{Context, Result, bail};
use cgroups::{Fleet, Load};
use exporter::{Exporter, Scrape, free_port};
use rustix::process::{Resource, Rlimit, setrlimit};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: f64 = 1024.0 * 1024.0;
/// The metric sets of cAdvisor that cover what podtrace's resource and process sources export.
const CADVISOR_METRICS: &str = "cpu,memory,diskIO,process";
/// node_exporter's collectors for the node metrics podtrace exports.
const NODE_EXPORTER_COLLECTORS: [&str; 3] = ["stat", "entropy", "tcpstat"];

/// What the run measures and with what.
struct Settings {
    sizes: Vec<usize>,
    busy: Vec<usize>,
    interval: Duration,
    cycles: u32,
    scrapes: usize,
    parts: Vec<String>,
    agent: PathBuf,
    cadvisor: PathBuf,
    cadvisor_version: String,
    node_exporter: PathBuf,
    node_exporter_version: String,
}

fn env_list(name: &str, default: &str) -> Result<Vec<usize>> {
    let text = std::env::var(name).unwrap_or_else(|_| default.to_owned());
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().with_context(|| format!("{name}: {s:?} is not a number")))
        .collect()
}

fn env_number(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().with_context(|| format!("{name}: {v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

fn env_path(name: &str) -> Result<PathBuf> {
    let path = PathBuf::from(std::env::var(name).with_context(|| {
        format!("{name} is not set: run `make bench-peers`, which builds the peers and sets it")
    })?);
    if !path.exists() {
        bail!(
            "{name}: {} does not exist (bash bench/peers/build-peers.sh builds it)",
            path.display()
        );
    }
    Ok(path)
}

impl Settings {
    fn from_env() -> Result<Settings> {
        let agent = std::env::current_exe()?.with_file_name("podtrace-agent");
        if !agent.exists() {
            bail!(
                "{}: build the agent first (cargo build --release -p podtrace-agent)",
                agent.display()
            );
        }
        let parts = std::env::var("PT_PEERS_PARTS").unwrap_or_else(|_| "cadvisor,node".into());
        Ok(Settings {
            sizes: env_list("PT_PEERS_SIZES", "100,1000,10000")?,
            busy: env_list("PT_PEERS_BUSY", "100")?,
            interval: Duration::from_secs(env_number("PT_PEERS_INTERVAL", 10)?.max(1)),
            cycles: env_number("PT_PEERS_CYCLES", 3)?.max(1) as u32,
            scrapes: env_number("PT_PEERS_SCRAPES", 5)?.max(1) as usize,
            parts: parts.split(',').map(|p| p.trim().to_owned()).collect(),
            agent,
            cadvisor: env_path("PT_PEERS_CADVISOR")?,
            cadvisor_version: std::env::var("PT_PEERS_CADVISOR_VERSION").unwrap_or_default(),
            node_exporter: env_path("PT_PEERS_NODE_EXPORTER")?,
            node_exporter_version: std::env::var("PT_PEERS_NODE_EXPORTER_VERSION")
                .unwrap_or_default(),
        })
    }
}

/// The agent in standalone mode on `config`, at `interval`.
fn agent(settings: &Settings, config: &Path, empty: bool) -> Result<Exporter> {
    let port = free_port()?;
    let mut c = Command::new(&settings.agent);
    c.args(["standalone", "--config", &config.display().to_string()])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .args(["--health-addr", &format!("127.0.0.1:{}", free_port()?)])
        .args(["--admin-addr", &format!("127.0.0.1:{}", free_port()?)])
        .args(["--interval", &format!("{}s", settings.interval.as_secs())])
        .env("PODTRACE_LOG", "warn");
    if empty {
        c.arg("--allow-empty-config");
    }
    Exporter::start("podtrace", c, port)
}

/// The agent's configuration for `fleet`: one PodTrace per batch of cgroups (a pod's series are
/// capped at 100,000), the default profile's sources at the bench's interval, no eBPF probe.
fn agent_config(fleet: &Fleet, interval: Duration, path: &Path) -> Result<()> {
    let mut text = String::new();
    for b in 0..fleet.batches() {
        text.push_str(&format!(
            "---\napiVersion: podtrace.dev/v1alpha1\nkind: PodTrace\nmetadata: {{name: b{b:02}, namespace: peers}}\nspec:\n  selector: {{matchLabels: {{podtrace.dev/cgroup: \"{}/b{b:02}-*\"}}}}\n  profile: {{interval: {}s, probes: {{enabled: false}}, maxSeriesPerPod: 100000}}\n",
            fleet.top,
            interval.as_secs()
        ));
    }
    Ok(std::fs::write(path, text)?)
}

fn cadvisor(settings: &Settings, fleet: &Fleet) -> Result<Exporter> {
    let port = free_port()?;
    let mut c = Command::new(&settings.cadvisor);
    c.args(["-listen_ip", "127.0.0.1", "-port", &port.to_string()])
        .arg("-docker_only")
        .arg(format!("-raw_cgroup_prefix_whitelist={}", fleet.top))
        .arg(format!("-enable_metrics={CADVISOR_METRICS}"))
        .arg(format!("-housekeeping_interval={}s", settings.interval.as_secs()))
        .arg("-allow_dynamic_housekeeping=false")
        .args(["-logtostderr", "-v=0"]);
    Exporter::start("cadvisor", c, port)
}

fn node_exporter(settings: &Settings) -> Result<Exporter> {
    let port = free_port()?;
    let mut c = Command::new(&settings.node_exporter);
    c.arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--collector.disable-defaults")
        .arg("--web.disable-exporter-metrics")
        .args(NODE_EXPORTER_COLLECTORS.iter().map(|n| format!("--collector.{n}")));
    Exporter::start("node_exporter", c, port)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// One exporter's figures of one run.
#[derive(Clone, Debug, Default)]
struct Figures {
    /// RSS after warm-up and the CPU window, before any timed scrape, MiB.
    rss: f64,
    /// Its anonymous part, MiB.
    anon: f64,
    /// RSS after the timed scrapes, MiB.
    rss_scraped: f64,
    /// CPU per cycle (per cgroup when there are cgroups), µs.
    cpu_us: f64,
    /// Median scrape time.
    scrape: Duration,
    bytes: usize,
    series: usize,
    /// Series of the bench's cgroups.
    series_fleet: usize,
    /// Open file descriptors after the scrapes.
    open_files: usize,
    /// The agent's `podtrace_agent_errors_total` at the end (data it could not read).
    errors: f64,
}

/// Scrapes each exporter `n` times, alternating; the last body of each is kept for its counts.
fn scrapes(exporters: &mut [&mut Exporter], n: usize) -> Result<Vec<(Duration, Scrape)>> {
    let mut times = vec![Vec::new(); exporters.len()];
    let mut last = vec![Scrape::default(); exporters.len()];
    for _ in 0..n {
        for (i, e) in exporters.iter_mut().enumerate() {
            let s = e.scrape()?;
            times[i].push(s.time);
            last[i] = s;
        }
    }
    Ok(times.into_iter().map(median).zip(last).collect())
}

fn load() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// podtrace and cAdvisor on `n` cgroups doing `work`: their figures in that order.
fn versus_cadvisor(settings: &Settings, n: usize, work: Load) -> Result<Vec<Figures>> {
    let started = Instant::now();
    let fleet = Fleet::new(n, work)?;
    let dir = std::env::temp_dir().join(format!("peers-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("fleet.yaml");
    agent_config(&fleet, settings.interval, &config)?;
    let id = format!("id=\"{}/", fleet.top);
    // Each exporter, the start of the line of its memory usage series of one fleet cgroup, and
    // what marks a series of the fleet.
    let mut exporters: Vec<(Exporter, String, String)> = Vec::new();
    let prefix = "podtrace_resource_usage_bytes{resource_type=\"memory\",namespace=\"peers\"";
    let marker = "namespace=\"peers\"";
    exporters.push((agent(settings, &config, false)?, prefix.into(), marker.into()));
    let prefix = format!("container_memory_usage_bytes{{{id}");
    exporters.push((cadvisor(settings, &fleet)?, prefix, id.clone()));
    let timeout = Duration::from_secs(120 + n as u64 / 20);
    for (e, prefix, _) in exporters.iter_mut() {
        // Every cgroup known is not enough: its files must have been read (an agent short of
        // file descriptors attaches every cgroup and reads none).
        e.wait_until(timeout, &format!("memory usage of {n} cgroups"), |s| {
            s.body.lines().filter(|l| l.starts_with(prefix.as_str())).count() >= n
        })?;
    }
    eprintln!("  {n} cgroups ({work:?}): ready in {:.0?}", started.elapsed());
    // Warm-up: two whole cycles after every cgroup is known.
    std::thread::sleep(2 * settings.interval);
    let before: Vec<u64> = exporters.iter().map(|e| e.0.cpu_ns()).collect::<Result<_>>()?;
    std::thread::sleep(settings.cycles * settings.interval);
    let mut figures = Vec::new();
    for ((e, _, _), cpu0) in exporters.iter().zip(before) {
        let (rss, anon) = e.rss_bytes()?;
        figures.push(Figures {
            cpu_us: (e.cpu_ns()? - cpu0) as f64 / 1000.0 / settings.cycles as f64 / n as f64,
            rss: rss as f64 / MIB,
            anon: anon as f64 / MIB,
            ..Default::default()
        });
    }
    let mut refs: Vec<&mut Exporter> = exporters.iter_mut().map(|e| &mut e.0).collect();
    let measured = scrapes(&mut refs, settings.scrapes)?;
    for ((f, (e, _, marker)), (time, s)) in figures.iter_mut().zip(&exporters).zip(&measured) {
        f.rss_scraped = e.rss_bytes()?.0 as f64 / MIB;
        f.open_files = e.open_files()?;
        f.errors = s.sum("podtrace_agent_errors_total") + 0.0;
        f.scrape = *time;
        f.bytes = s.bytes;
        f.series = s.series();
        f.series_fleet = s.series_with(marker);
    }
    drop(exporters);
    let _ = std::fs::remove_dir_all(dir);
    Ok(figures)
}

/// The agent with no target against node_exporter: CPU per interval with one scrape each.
fn versus_node_exporter(settings: &Settings) -> Result<(Figures, Figures)> {
    let dir = std::env::temp_dir().join(format!("peers-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("empty.yaml");
    std::fs::write(&config, "")?;
    let mut ours = agent(settings, &config, true)?;
    let mut theirs = node_exporter(settings)?;
    let node = |s: &Scrape| {
        ["node_context_switches_total ", "node_entropy_available_bits "]
            .iter()
            .all(|m| s.body.lines().any(|l| l.starts_with(m)))
    };
    ours.wait_until(Duration::from_secs(60), "node metrics", node)?;
    theirs.wait_until(Duration::from_secs(60), "node metrics", node)?;
    std::thread::sleep(2 * settings.interval);
    let (a0, c0) = (ours.cpu_ns()?, theirs.cpu_ns()?);
    let mut times = [Vec::new(), Vec::new()];
    let mut last = [Scrape::default(), Scrape::default()];
    let start = Instant::now();
    for cycle in 0..settings.cycles {
        for (i, e) in [&mut ours, &mut theirs].into_iter().enumerate() {
            let s = e.scrape()?;
            times[i].push(s.time);
            last[i] = s;
        }
        let next = start + (cycle + 1) * settings.interval;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let (a1, c1) = (ours.cpu_ns()?, theirs.cpu_ns()?);
    let mut out = Vec::new();
    for (i, (e, d)) in [(&ours, a1 - a0), (&theirs, c1 - c0)].into_iter().enumerate() {
        let (rss, anon) = e.rss_bytes()?;
        out.push(Figures {
            rss: rss as f64 / MIB,
            anon: anon as f64 / MIB,
            rss_scraped: rss as f64 / MIB,
            cpu_us: d as f64 / 1000.0 / settings.cycles as f64,
            scrape: median(std::mem::take(&mut times[i])),
            bytes: last[i].bytes,
            series: last[i].series(),
            series_fleet: last[i].series_with("node_"),
            open_files: e.open_files()?,
            errors: last[i].sum("podtrace_agent_errors_total") + 0.0,
        });
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok((out.remove(0), out.remove(0)))
}

/// Raises this process's open-file limit (inherited by the exporters it starts) as far as it
/// may: to `fs.nr_open` with CAP_SYS_RESOURCE, else the soft limit to the hard one. The agent
/// keeps about ten files open per container (cgroup and `/proc` files re-read with `pread`), so
/// 10,000 cgroups need ~100,000 descriptors; cAdvisor opens and closes its files. Returns the
/// limit.
fn raise_file_limit() -> Result<u64> {
    // As root both limits can go up to the kernel's maximum, which the children inherit;
    // otherwise what the agent itself does at start (soft limit to the hard one).
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")?.trim().parse()?;
    let all = Rlimit { current: Some(nr_open), maximum: Some(nr_open) };
    if setrlimit(Resource::Nofile, all).is_ok() {
        return Ok(nr_open);
    }
    let raised = podtrace_agent::open_files::raise().context("raising RLIMIT_NOFILE")?;
    Ok(raised.now.unwrap_or(nr_open))
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 { format!("{:.2}", a / b) } else { "—".into() }
}

fn verdict(r: f64, goal: f64) -> &'static str {
    if r.is_nan() {
        "not measured"
    } else if r <= goal {
        "met"
    } else {
        "MISSED"
    }
}

fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("busy-child") {
        cgroups::busy_child();
    }
    #[allow(unsafe_code, reason = "geteuid(2) has no failure mode")]
    // SAFETY: a plain syscall without arguments.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench-peers needs root: it creates cgroups and reads other processes' /proc");
    }
    let settings = Settings::from_env()?;
    cgroups::clean_up_on_signals()?;
    cgroups::remove_left(false)?;
    let files = raise_file_limit()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "podtrace / peers benchmark: every ratio is podtrace / peer, measured in the same run"
    );
    println!(
        "load average {} on {cpus} CPUs at the start; interval {}s for both, CPU over {} cycles; open files {files} for both; cAdvisor {} ({CADVISOR_METRICS}), node_exporter {} ({})\n",
        load(),
        settings.interval.as_secs(),
        settings.cycles,
        settings.cadvisor_version,
        settings.node_exporter_version,
        NODE_EXPORTER_COLLECTORS.join(",")
    );
    let mut goals: Vec<(String, f64, f64)> = Vec::new();
    let mut rss_by_size: Vec<(usize, f64, f64)> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    if settings.parts.iter().any(|p| p == "cadvisor") {
        let mut runs: Vec<(usize, Load)> =
            settings.sizes.iter().map(|&n| (n, Load::Idle)).collect();
        runs.extend(settings.busy.iter().map(|&n| (n, Load::Busy)));
        println!(
            "| cgroups | RSS MiB podtrace / cAdvisor | ratio | anonymous MiB | ratio | RSS scraped MiB | ratio | CPU µs per cgroup per cycle | ratio | /metrics bytes | ratio | scrape ms | ratio | series (of the cgroups) | ratio | load |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for (n, work) in runs {
            let label = match work {
                Load::Idle => format!("{n}"),
                Load::Busy => format!("{n} busy"),
            };
            let figures = versus_cadvisor(&settings, n, work)?;
            let [a, c] = figures.as_slice() else { bail!("podtrace's and cAdvisor's figures") };
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            // About 13 per cgroup (cgroup and /proc files kept open) up to the agent's budget
            // under the open-file limit; past it the agent opens files for each read.
            let files_per_cgroup = a.open_files as f64 / n as f64;
            println!(
                "| {label} | {:.1} / {:.1} | {} | {:.1} / {:.1} | {} | {:.1} / {:.1} | {} | {:.1} / {:.1} | {} | {} / {} | {} | {:.1} / {:.1} | {} | {} ({}) / {} ({}) | {} | {} |",
                a.rss,
                c.rss,
                ratio(a.rss, c.rss),
                a.anon,
                c.anon,
                ratio(a.anon, c.anon),
                a.rss_scraped,
                c.rss_scraped,
                ratio(a.rss_scraped, c.rss_scraped),
                a.cpu_us,
                c.cpu_us,
                ratio(a.cpu_us, c.cpu_us),
                a.bytes,
                c.bytes,
                ratio(a.bytes as f64, c.bytes as f64),
                ms(a.scrape),
                ms(c.scrape),
                ratio(ms(a.scrape), ms(c.scrape)),
                a.series,
                a.series_fleet,
                c.series,
                c.series_fleet,
                ratio(a.series as f64, c.series as f64),
                load()
            );
            notes.push(format!(
                "{label} cgroups: podtrace held {} open files ({files_per_cgroup:.1} per cgroup) and counted {} collection errors; cAdvisor {} open files",
                a.open_files, a.errors, c.open_files
            ));
            goals.push((format!("RSS, {label} cgroups, ≤ 0.5× cAdvisor"), a.rss / c.rss, 0.5));
            goals.push((
                format!("(anonymous RSS, {label} cgroups, ≤ 0.5× cAdvisor)"),
                a.anon / c.anon,
                0.5,
            ));
            goals.push((
                format!("CPU per cgroup, {label} cgroups, ≤ 0.5× cAdvisor"),
                a.cpu_us / c.cpu_us,
                0.5,
            ));
            goals.push((
                format!("scrape time, {label} cgroups, ≤ 0.5× cAdvisor"),
                ms(a.scrape) / ms(c.scrape),
                0.5,
            ));
            if work == Load::Idle {
                rss_by_size.push((n, a.rss, a.anon));
            }
        }
        for note in &notes {
            println!("{note}");
        }
    }
    if settings.parts.iter().any(|p| p == "node") {
        let (a, c) = versus_node_exporter(&settings)?;
        println!(
            "\n| node metrics | RSS MiB | anonymous MiB | CPU ms per interval (one scrape) | /metrics bytes | scrape ms | series (node_*) | load |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for (name, f) in [("podtrace (no target)", &a), ("node_exporter", &c)] {
            println!(
                "| {name} | {:.1} | {:.1} | {:.2} | {} | {:.2} | {} ({}) | {} |",
                f.rss,
                f.anon,
                f.cpu_us / 1000.0,
                f.bytes,
                f.scrape.as_secs_f64() * 1000.0,
                f.series,
                f.series_fleet,
                load()
            );
        }
        println!(
            "| ratio | {} | {} | {} | {} | {} | {} | |",
            ratio(a.rss, c.rss),
            ratio(a.anon, c.anon),
            ratio(a.cpu_us, c.cpu_us),
            ratio(a.bytes as f64, c.bytes as f64),
            ratio(a.scrape.as_secs_f64(), c.scrape.as_secs_f64()),
            ratio(a.series as f64, c.series as f64)
        );
        goals.push(("RSS ≤ 1.0× node_exporter".into(), a.rss / c.rss, 1.0));
        goals.push(("(anonymous RSS ≤ 1.0× node_exporter)".into(), a.anon / c.anon, 1.0));
        goals.push(("CPU per interval ≤ 1.0× node_exporter".into(), a.cpu_us / c.cpu_us, 1.0));
        goals.push((
            "scrape time ≤ 1.0× node_exporter".into(),
            a.scrape.as_secs_f64() / c.scrape.as_secs_f64(),
            1.0,
        ));
    }
    if let Some(&(_, big, _)) = rss_by_size.iter().find(|(n, _, _)| *n == 10_000) {
        goals.push((
            "agent RSS with 10,000 cgroups ≤ 128 MiB (ratio to 128)".into(),
            big / 128.0,
            1.0,
        ));
    }
    for w in rss_by_size.windows(2) {
        let (n0, r0, _) = w[0];
        let (n1, r1, _) = w[1];
        let kib = (r1 - r0) * 1024.0 / (n1 - n0) as f64;
        println!("agent marginal memory {n0} → {n1} cgroups: {kib:.1} KiB per cgroup");
        goals.push((
            format!("agent marginal memory {n0} → {n1} ≤ 10 KiB per cgroup (ratio to 10)"),
            kib / 10.0,
            1.0,
        ));
    }
    println!("\ngoals (ratio ≤ goal):");
    for (name, r, goal) in &goals {
        println!("  {:<72} {r:6.2}  {}", name, verdict(*r, *goal));
    }
    println!("\nload average at the end: {}", load());
    Ok(())
}
