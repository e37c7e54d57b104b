//! eBPF overhead benchmark (root): a loopback HTTP/1.1 keep-alive server and its clients run
//! in their own cgroup v2 for a fixed time, under four configurations, interleaved:
//!
//! - `none`: no probes loaded;
//! - `tracked`: every probe, the workload's cgroup tracked (cgroup_skb at the v2 root);
//! - `other`: every probe, a different (idle) cgroup tracked: the cost of the filter alone;
//! - `per-pod`: every probe, the workload tracked, cgroup_skb attached at the workload's cgroup;
//! - `per-pod-other`: `other` with cgroup_skb attached at the idle cgroup, so that the
//!   workload's packets run no packet program at all;
//! - `no-fs`: every probe but fsLatency/fsBytes (whose sys_enter/sys_exit hooks put every
//!   syscall of the machine on the kernel's syscall-tracing slow path), the workload tracked.
//!
//! - `floor`: no probe, only an empty program on every hook the probes use (`floor.bpf.c`):
//!   what any program on these hooks costs the workload, whatever it does;
//! - `tracked-stats`: `tracked` with bpf_stats on, as the agent runs by default
//!   (`--bpf-stats`): the price of the per-program self-metrics.
//!
//! bpf_stats is off in the others (its clock reads would slow the workload too); `stats` repeats
//! `tracked` and `stats-other` repeats `other` with bpf_stats on, for the per-program ns per run.
//! bpf_stats' own clock reads are part of every run's time, so those two runs also attach an
//! empty program to every hook (`floor.bpf.c`): each program's ns per run is printed gross and
//! net of the floor of its hook, measured in the same run. It prints requests/s per
//! configuration, the median over rounds of the ratio to `none` *in the same round* (paired, so
//! that load from other processes cancels out), and the ns tables.
//! `stats-process` and `stats-process-other` repeat `stats` and `stats-other` with the process
//! filter (`Filter::Process`: the workload's tgid, or none of it, in the tracked-process map;
//! networkBytes on tp_btf, no dns). They are not in the default set: add them with
//! `PT_BENCH_CONFIGS`.
//! `PT_BENCH_CONFIGS` (comma-separated) runs a subset, e.g. `none,stats,stats-other`.
//! Run with `make bench-ebpf` (bench/ebpf/run.sh).

use anyhow::{Context, Result, bail};
use aya::programs::{BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType};
use podtrace_ebpf::{
    Filter, Probe, ProbeConfig, Probes, Snapshot, cgroup_id, default_cgroup2_root,
};
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
    if !podtrace_test_support::is_root() {
        println!("SKIPPED: the eBPF benchmark needs root");
        return Ok(());
    }
    let seconds: f64 = env_or("PT_BENCH_SECONDS", 2.0);
    let rounds: usize = env_or("PT_BENCH_ROUNDS", 5);
    let root = default_cgroup2_root();
    let work = Cgroup::new(root.join(format!("podtrace-bench-work-{}", std::process::id())))?;
    let idle = Cgroup::new(root.join(format!("podtrace-bench-idle-{}", std::process::id())))?;

    let all = [
        "none",
        "tracked",
        "other",
        "per-pod",
        "per-pod-other",
        "no-fs",
        "floor",
        "tracked-stats",
        "stats",
        "stats-other",
    ];
    let process = ["stats-process", "stats-process-other"];
    let configs: Vec<&'static str> = match std::env::var("PT_BENCH_CONFIGS") {
        Ok(list) => {
            all.into_iter().chain(process).filter(|c| list.split(',').any(|l| l == *c)).collect()
        }
        Err(_) => all.to_vec(),
    };
    if !configs.contains(&"none") {
        bail!("PT_BENCH_CONFIGS must include none (the ratios are relative to it)");
    }
    let mut rps: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut per_program: BTreeMap<(&'static str, String), (u64, Duration)> = BTreeMap::new();
    let mut ratios: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut total_requests: BTreeMap<&str, u64> = BTreeMap::new();
    for round in 0..rounds {
        let mut round_rps: BTreeMap<&str, f64> = BTreeMap::new();
        for k in 0..configs.len() {
            let config = configs[(round + k) % configs.len()]; // rotate the order per round
            let probes = match config {
                "none" | "floor" => None,
                _ => {
                    let stats = config.starts_with("stats") || config == "tracked-stats";
                    let mut pc = ProbeConfig { bpf_stats: stats, ..ProbeConfig::default() };
                    // per-pod*: the packet programs at each tracked cgroup (the default); the
                    // others at the cgroup v2 root, as before December 2026.
                    pc.cgroup_skb_at_root = !config.starts_with("per-pod");
                    if config == "no-fs" {
                        pc.probes.retain(|p| !matches!(p, Probe::FsLatency | Probe::FsBytes));
                    }
                    if config.starts_with("stats-process") {
                        pc.filter = Filter::Process;
                    }
                    let (mut p, _) = Probes::load(&pc)?;
                    let other = config.ends_with("other");
                    let target = if other { &idle.path } else { &work.path };
                    p.track(target, Probe::ALL)?;
                    Some(p)
                }
            };
            let mut probes = probes;
            let with_floor = config.starts_with("stats") || config == "floor";
            let mut floor = if with_floor { Some(Floor::load(&root)?) } else { None };
            let before = match probes.as_mut() {
                Some(p) => Some(p.snapshot()?),
                None => None,
            };
            let floor_before = floor.as_mut().map(Floor::stats).transpose()?;
            let requests = run_workload(&work, seconds, |pid| {
                // The process filter: the workload's tgid listed under its key, as the agent
                // lists cgroup.procs; for "-other", the idle key lists this (waiting) process
                // and the workload is not listed.
                match probes.as_mut().filter(|_| config.starts_with("stats-process")) {
                    Some(p) if config.ends_with("other") => {
                        Ok(p.set_processes(idle.id, &[std::process::id()].into())?)
                    }
                    Some(p) => Ok(p.set_processes(work.id, &[pid].into())?),
                    None => Ok(()),
                }
            })?;
            if let (Some(f), Some(before)) = (floor.as_mut(), floor_before) {
                for (program, runs, time) in f.stats()? {
                    let b = before
                        .iter()
                        .find(|b| b.0 == program)
                        .map_or((0, Duration::ZERO), |b| (b.1, b.2));
                    let e = per_program.entry((config, program.to_string())).or_default();
                    e.0 += runs - b.0;
                    e.1 += time - b.1;
                }
            }
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
    report(&configs, &rps, &ratios, &per_program, seconds * rounds as f64);
    let stats_ns: u128 = per_program
        .iter()
        .filter(|((c, p), _)| *c == "stats" && !p.starts_with("pt_floor_"))
        .map(|(_, (_, t))| t.as_nanos())
        .sum();
    if let Some(requests) = total_requests.get("stats") {
        println!(
            "\nBPF time per request (stats runs, gross): {:.0} ns",
            stats_ns as f64 / (*requests).max(1) as f64
        );
    }
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
    configs: &[&str],
    rps: &BTreeMap<&str, Vec<f64>>,
    ratios: &BTreeMap<&str, Vec<f64>>,
    per_program: &BTreeMap<(&str, String), (u64, Duration)>,
    total_seconds: f64,
) {
    println!("\n| configuration | requests/s (median) | ratio to none (median of paired rounds) |");
    println!("|---|---:|---:|");
    for config in configs {
        let m = median(&rps[config]);
        println!("| {config} | {m:.0} | {:.3} |", median(&ratios[config]));
    }
    let ns_of = |config: &str, program: &str| -> Option<f64> {
        let (runs, time) = per_program.get(&(config, program.to_string()))?;
        (*runs > 0).then(|| time.as_nanos() as f64 / *runs as f64)
    };
    println!(
        "\n| configuration | program | runs/s | ns per run (gross) | floor of the hook | net of the floor |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    let mut cost: BTreeMap<&str, (u64, Duration, f64)> = BTreeMap::new();
    for ((config, program), (runs, time)) in per_program {
        if *runs == 0 {
            continue;
        }
        let ns = time.as_nanos() as f64 / *runs as f64;
        let floor = floor_of(program).and_then(|f| ns_of(config, f));
        let (floor_s, net_s) = match floor {
            Some(f) => (format!("{f:.0}"), format!("{:.0}", ns - f)),
            None => ("-".into(), "-".into()),
        };
        println!(
            "| {config} | {program} | {:.0} | {ns:.0} | {floor_s} | {net_s} |",
            *runs as f64 / total_seconds
        );
        if program.starts_with("pt_floor_") {
            continue;
        }
        let c = cost.entry(config).or_default();
        c.0 += runs;
        c.1 += *time;
        c.2 += floor.map_or(0.0, |f| f * *runs as f64);
    }
    println!(
        "\n| configuration | BPF CPU (% of one core, gross) | avg ns per run (gross) | avg net of floor | % of a core at 100k runs/s (gross / net) |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (config, (runs, time, floor_ns)) in cost {
        let ns = time.as_nanos() as f64 / runs as f64;
        let net = ns - floor_ns / runs as f64;
        println!(
            "| {config} | {:.2} | {ns:.0} | {net:.0} | {:.2} / {:.2} |",
            100.0 * time.as_secs_f64() / total_seconds,
            ns * 100_000.0 / 1e9 * 100.0,
            net * 100_000.0 / 1e9 * 100.0
        );
    }
}

/// The empty program on the hook of a probe's program (tp_btf and cgroup_skb rungs).
fn floor_of(program: &str) -> Option<&'static str> {
    Some(match program {
        "pt_fs_enter_btf" => "pt_floor_sys_enter",
        "pt_fs_exit_btf" => "pt_floor_sys_exit",
        "pt_switch_btf" => "pt_floor_sched_switch",
        "pt_wakeup_btf" => "pt_floor_sched_wakeup",
        "pt_rtt_send_btf" => "pt_floor_sock_send_length",
        "pt_rtt_recv_btf" => "pt_floor_sock_recv_length",
        "pt_connect_btf" => "pt_floor_inet_sock_set_state",
        "pt_net_egress" | "pt_dns_egress" => "pt_floor_skb_egress",
        "pt_net_ingress" | "pt_dns_ingress" => "pt_floor_skb_ingress",
        "pt_net_send_btf" => "pt_floor_sock_send_length",
        "pt_net_recv_btf" => "pt_floor_sock_recv_length",
        _ => return None,
    })
}

/// The empty programs of `floor.bpf.c`, attached to every hook the probes use.
struct Floor {
    ebpf: aya::Ebpf,
}

const FLOOR_BTF: &[(&str, &str)] = &[
    ("pt_floor_sys_enter", "sys_enter"),
    ("pt_floor_sys_exit", "sys_exit"),
    ("pt_floor_sched_switch", "sched_switch"),
    ("pt_floor_sched_wakeup", "sched_wakeup"),
    ("pt_floor_sock_send_length", "sock_send_length"),
    ("pt_floor_sock_recv_length", "sock_recv_length"),
    ("pt_floor_inet_sock_set_state", "inet_sock_set_state"),
];
const FLOOR_SKB: &[(&str, CgroupSkbAttachType)] = &[
    ("pt_floor_skb_egress", CgroupSkbAttachType::Egress),
    ("pt_floor_skb_ingress", CgroupSkbAttachType::Ingress),
];

impl Floor {
    fn load(cgroup_root: &std::path::Path) -> Result<Floor> {
        let object = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor.bpf.o"));
        let mut ebpf = aya::Ebpf::load(object)?;
        let btf = aya::Btf::from_sys_fs()?;
        for (name, hook) in FLOOR_BTF {
            let p: &mut BtfTracePoint =
                ebpf.program_mut(name).context("floor program")?.try_into()?;
            p.load(hook, &btf)?;
            p.attach()?;
        }
        for (name, direction) in FLOOR_SKB {
            let p: &mut CgroupSkb = ebpf.program_mut(name).context("floor program")?.try_into()?;
            p.load()?;
            p.attach(std::fs::File::open(cgroup_root)?, *direction, CgroupAttachMode::Single)?;
        }
        Ok(Floor { ebpf })
    }

    fn stats(&mut self) -> Result<Vec<(&'static str, u64, Duration)>> {
        let names = FLOOR_BTF.iter().map(|(n, _)| *n).chain(FLOOR_SKB.iter().map(|(n, _)| *n));
        let mut out = Vec::new();
        for name in names {
            let info = self.ebpf.program(name).context("floor program")?.info()?;
            out.push((name, info.run_count(), info.run_time()));
        }
        Ok(out)
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

/// Starts this binary as the workload, moves it into the cgroup once it is ready, calls
/// `moved` with its pid, and returns the requests it completed.
fn run_workload(cg: &Cgroup, seconds: f64, moved: impl FnOnce(u32) -> Result<()>) -> Result<u64> {
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
    moved(child.id())?;
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
