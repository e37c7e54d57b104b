//! eBPF overhead benchmark (root): a loopback HTTP/1.1 keep-alive server and its clients run
//! in their own cgroup v2 for a fixed time, under four configurations, interleaved:
//!
//! - `none`: no probes loaded;
//! - `tracked`: every probe, the workload's cgroup tracked (cgroup_skb at the v2 root);
//! - `other`: every probe, a different (idle) cgroup tracked: the cost of the filter alone;
//! - `per-pod`: every probe, the workload tracked, cgroup_skb attached at the workload's cgroup;
//! - `no-fs`: every probe but fsLatency/fsBytes (whose sys_enter/sys_exit hooks put every
//!   syscall of the machine on the kernel's syscall-tracing slow path), the workload tracked.
//!
//! bpf_stats is off in those four (its clock reads would slow the workload too); a fifth run per
//! round, `stats`, repeats `tracked` with bpf_stats on for the per-program ns per run. It prints
//! requests/s per configuration, the median over rounds of the ratio to `none` *in the same
//! round* (paired, so that load from other processes cancels out), and the ns table.
//! Run with `make bench-ebpf` (bench/ebpf/run.sh).

use anyhow::{Context, Result, bail};
use podtrace_api::profile::Probe;
use podtrace_ebpf::{ProbeConfig, Probes, Snapshot, cgroup_id, default_cgroup2_root};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const REQUEST: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: pt-bench\r\n\r\n";
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nhello world\n";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--workload") {
        let secs: f64 = args[i + 1].parse()?;
        return workload(Duration::from_secs_f64(secs));
    }
    if !std::fs::read_to_string("/proc/self/status")?
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    {
        println!("SKIPPED: the eBPF benchmark needs root");
        return Ok(());
    }
    let seconds: f64 = env_or("PT_BENCH_SECONDS", 2.0);
    let rounds: usize = env_or("PT_BENCH_ROUNDS", 5);
    let root = default_cgroup2_root();
    let work = Cgroup::new(root.join(format!("podtrace-bench-work-{}", std::process::id())))?;
    let idle = Cgroup::new(root.join(format!("podtrace-bench-idle-{}", std::process::id())))?;

    let configs = ["none", "tracked", "other", "per-pod", "no-fs", "stats"];
    let mut rps: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut per_program: BTreeMap<(&str, String), (u64, Duration)> = BTreeMap::new();
    let mut ratios: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut total_requests: BTreeMap<&str, u64> = BTreeMap::new();
    for round in 0..rounds {
        let mut round_rps: BTreeMap<&str, f64> = BTreeMap::new();
        for k in 0..configs.len() {
            let config = configs[(round + k) % configs.len()]; // rotate the order per round
            let probes = match config {
                "none" => None,
                _ => {
                    let mut pc =
                        ProbeConfig { bpf_stats: config == "stats", ..ProbeConfig::default() };
                    if config == "per-pod" {
                        pc.cgroup_skb_root = work.path.clone();
                    }
                    let (mut p, _) = Probes::load(&pc)?;
                    if config == "no-fs" {
                        pc.probes.retain(|p| !matches!(p, Probe::FsLatency | Probe::FsBytes));
                    }
                    let target = if config == "other" { idle.id } else { work.id };
                    p.track(target, 0, Probe::ALL)?;
                    Some(p)
                }
            };
            let mut probes = probes;
            let before = match probes.as_mut() {
                Some(p) => Some(p.snapshot()?),
                None => None,
            };
            let requests = run_workload(&work, seconds)?;
            rps.entry(config).or_default().push(requests as f64 / seconds);
            *total_requests.entry(config).or_default() += requests;
            round_rps.insert(config, requests as f64 / seconds);
            if let (Some(p), Some(before)) = (probes.as_mut(), before) {
                accumulate(&mut per_program, config, &before, &p.snapshot()?);
            }
            eprintln!("round {round} {config:<8} {:>10.0} req/s", requests as f64 / seconds);
        }
        for (config, r) in &round_rps {
            ratios.entry(config).or_default().push(r / round_rps["none"]);
        }
    }
    report(&rps, &ratios, &per_program, seconds * rounds as f64);
    let stats_ns: u128 = per_program
        .iter()
        .filter(|((c, _), _)| *c == "stats")
        .map(|(_, (_, t))| t.as_nanos())
        .sum();
    println!(
        "\nBPF time per request (stats runs): {:.0} ns",
        stats_ns as f64 / total_requests["stats"].max(1) as f64
    );
    Ok(())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn accumulate(
    acc: &mut BTreeMap<(&'static str, String), (u64, Duration)>,
    config: &'static str,
    before: &Snapshot,
    after: &Snapshot,
) {
    for p in &after.programs {
        let b = before.programs.iter().find(|b| b.id == p.id);
        let runs = p.run_count - b.map_or(0, |b| b.run_count);
        let time = p.run_time - b.map_or(Duration::ZERO, |b| b.run_time);
        let e = acc.entry((config, p.program.to_string())).or_default();
        e.0 += runs;
        e.1 += time;
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(
    rps: &BTreeMap<&str, Vec<f64>>,
    ratios: &BTreeMap<&str, Vec<f64>>,
    per_program: &BTreeMap<(&str, String), (u64, Duration)>,
    total_seconds: f64,
) {
    println!("\n| configuration | requests/s (median) | ratio to none (median of paired rounds) |");
    println!("|---|---:|---:|");
    for config in ["none", "tracked", "other", "per-pod", "no-fs", "stats"] {
        let m = median(&rps[config]);
        println!("| {config} | {m:.0} | {:.3} |", median(&ratios[config]));
    }
    println!("\n| configuration | program | runs/s | ns per run |");
    println!("|---|---|---:|---:|");
    let mut cost: BTreeMap<&str, (u64, Duration)> = BTreeMap::new();
    for ((config, program), (runs, time)) in per_program {
        if *runs == 0 {
            continue;
        }
        let ns = time.as_nanos() as f64 / *runs as f64;
        println!("| {config} | {program} | {:.0} | {ns:.0} |", *runs as f64 / total_seconds);
        let c = cost.entry(config).or_default();
        c.0 += runs;
        c.1 += *time;
    }
    println!(
        "\n| configuration | BPF CPU (% of one core) | avg ns per run | % of a core at 100k runs/s |"
    );
    println!("|---|---:|---:|---:|");
    for (config, (runs, time)) in cost {
        let ns = time.as_nanos() as f64 / runs as f64;
        println!(
            "| {config} | {:.2} | {ns:.0} | {:.2} |",
            100.0 * time.as_secs_f64() / total_seconds,
            ns * 100_000.0 / 1e9 * 100.0
        );
    }
}

struct Cgroup {
    path: PathBuf,
    id: u64,
}

impl Cgroup {
    fn new(path: PathBuf) -> Result<Cgroup> {
        std::fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        let id = cgroup_id(&path)?;
        Ok(Cgroup { path, id })
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Starts this binary as the workload, moves it into the cgroup once it is ready, and
/// returns the requests it completed.
fn run_workload(cg: &Cgroup, seconds: f64) -> Result<u64> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--workload", &seconds.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    if line.trim() != "ready" {
        bail!("workload did not start: {line:?}");
    }
    std::fs::write(cg.path.join("cgroup.procs"), child.id().to_string())?;
    child.stdin.take().context("stdin")?.write_all(b"go\n")?;
    line.clear();
    out.read_line(&mut line)?;
    child.wait()?;
    Ok(line.trim().strip_prefix("requests=").context("requests")?.parse()?)
}

/// The workload: an HTTP keep-alive server (a thread per connection) and two clients.
fn workload(duration: Duration) -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    println!("ready");
    std::io::stdout().flush()?;
    let mut go = String::new();
    std::io::stdin().read_line(&mut go)?;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut req = vec![0u8; REQUEST.len()];
                while conn.read_exact(&mut req).is_ok() {
                    if conn.write_all(RESPONSE).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let deadline = Instant::now() + duration;
    let clients: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || -> u64 {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.set_nodelay(true).expect("nodelay");
                let mut resp = vec![0u8; RESPONSE.len()];
                let mut n = 0;
                while Instant::now() < deadline {
                    s.write_all(REQUEST).expect("request");
                    s.read_exact(&mut resp).expect("response");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = clients.into_iter().map(|c| c.join().unwrap_or(0)).sum();
    println!("requests={total}");
    Ok(())
}
