//! `make bench-ebpf` (root): what the node agent costs the services on its node, per preset.
//!
//! In one run, with interleaved rounds (the order of the configurations rotates each round, and
//! every figure is taken against the no-agent run *of the same round*, so that load from other
//! processes cancels out as far as it can), on two workloads (`workload.rs`: a loopback HTTP
//! keep-alive server with 5.5 µs of CPU per request, and one doing about 50 µs of work per
//! request), the configurations are:
//!
//! - `none`: no agent;
//! - for each preset (`minimal` has no eBPF probe): the agent binary in standalone mode with
//!   that preset, tracing the workload's cgroup (`tracked`) or another cgroup with a sleeping
//!   process (`other`: the workload is a pod the agent does not trace).
//!
//! It prints per workload and configuration: requests/s and the ratio to `none`; the CPU each
//! request costs on top of `none` (the workload process's own CPU time per request: the eBPF
//! programs run in its context, so this is their cost plus what they do to the kernel's paths);
//! the runs per request of the agent's eBPF programs, from separate rounds with bpf_stats on (which
//! costs itself, so those rounds give no other figure); the agent's own CPU (% of a core, over
//! the workload's run) and RSS. Then the issue-15 goals with the figures measured.
//!
//! `PT_BENCH_SECONDS` (2), `PT_BENCH_ROUNDS` (5), `PT_BENCH_STATS_ROUNDS` (1),
//! `PT_BENCH_PRESETS` (all six, comma-separated), `PT_BENCH_WORKLOADS` (`loopback,cpu50`), and
//! `PT_BENCH_AGENTS` (`name=path[@VAR=value…]`, comma-separated; default
//! `agent=target/release/podtrace-agent`): several agent binaries (or one with different
//! settings) are measured in the same run, which is how a change is compared with what it
//! replaces.

mod agent;
mod cgroups;
mod report;
mod workload;

use anyhow::{Context, Result, bail};
use podtrace_api::presets::Preset;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent::{Agent, AgentSpec, Runs};
use cgroups::BenchCgroup;
use workload::Kind;

/// One configuration: no agent, or an agent binary with a preset tracing the workload or not.
#[derive(Clone, Debug)]
pub struct Config {
    /// Index into the agents; `None`: no agent.
    pub agent: Option<usize>,
    /// The preset.
    pub preset: Preset,
    /// Whether the agent traces the workload's cgroup (else an idle one).
    pub tracked: bool,
}

/// What one run of one configuration measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// Requests per second.
    pub rps: f64,
    /// The workload's CPU per request, ns.
    pub cpu_per_request: f64,
    /// The agent's CPU over the run, fraction of one core.
    pub agent_cpu: f64,
    /// The agent's RSS at the end of the run, bytes.
    pub agent_rss: u64,
}

/// Everything the run measured, for the report.
#[derive(Default)]
pub struct Results {
    /// Per (workload, configuration): each round's sample.
    pub samples: BTreeMap<(Kind, usize), Vec<Sample>>,
    /// Per (workload, configuration): each round's ratio of requests/s to `none`.
    pub ratios: BTreeMap<(Kind, usize), Vec<f64>>,
    /// Per (workload, configuration): each round's CPU per request minus `none`'s, ns.
    pub added: BTreeMap<(Kind, usize), Vec<f64>>,
    /// Per (workload, configuration): program runs (bpf_stats rounds) and the requests served.
    pub runs: BTreeMap<(Kind, usize), (BTreeMap<String, Runs>, u64)>,
}

struct Bench {
    seconds: f64,
    agents: Vec<AgentSpec>,
    configs: Vec<Config>,
    work: BenchCgroup,
    idle: BenchCgroup,
    config_dir: PathBuf,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--workload") {
        return workload::child(args[i + 1].parse()?, args[i + 2].parse()?);
    }
    if !podtrace_test_support::require_root("the eBPF overhead benchmark", "cgroups, eBPF") {
        return Ok(());
    }
    let rounds: usize = env_or("PT_BENCH_ROUNDS", 5);
    let stats_rounds: usize = env_or("PT_BENCH_STATS_ROUNDS", 1);
    let agents = match std::env::var("PT_BENCH_AGENTS") {
        Ok(list) => list.split(',').map(AgentSpec::parse).collect::<Result<Vec<_>>>()?,
        Err(_) => vec![AgentSpec::parse("agent=target/release/podtrace-agent")?],
    };
    let presets: Vec<Preset> = match std::env::var("PT_BENCH_PRESETS") {
        Ok(list) => list
            .split(',')
            .map(|p| Preset::from_name(p).with_context(|| format!("no preset {p}")))
            .collect::<Result<_>>()?,
        Err(_) => Preset::ALL.to_vec(),
    };
    let spin = workload::calibrate(Duration::from_micros(50));
    let kinds: Vec<Kind> = std::env::var("PT_BENCH_WORKLOADS")
        .unwrap_or_else(|_| "loopback,cpu50".into())
        .split(',')
        .map(|k| match k {
            "loopback" => Ok(Kind::Loopback),
            "cpu50" => Ok(Kind::Cpu50(spin)),
            other => bail!("no workload {other} (loopback, cpu50)"),
        })
        .collect::<Result<_>>()?;
    let mut configs = vec![Config { agent: None, preset: Preset::Minimal, tracked: false }];
    for agent in 0..agents.len() {
        for &preset in &presets {
            for tracked in [true, false] {
                configs.push(Config { agent: Some(agent), preset, tracked });
            }
        }
    }
    let (work, mut idle) = (BenchCgroup::new("work")?, BenchCgroup::new("idle")?);
    idle.add_sleeper()?;
    let config_dir =
        std::env::temp_dir().join(format!("podtrace-bench-ebpf-{}", std::process::id()));
    std::fs::create_dir_all(&config_dir)?;
    let bench =
        Bench { seconds: env_or("PT_BENCH_SECONDS", 2.0), agents, configs, work, idle, config_dir };
    let started = Instant::now();
    let load_before = load_average();
    let results = bench.run(&kinds, rounds, stats_rounds);
    let _ = std::fs::remove_dir_all(&bench.config_dir);
    let results = results?;
    report::print(&report::Context {
        agents: &bench.agents,
        configs: &bench.configs,
        kinds: &kinds,
        results: &results,
        rounds,
        seconds: bench.seconds,
        spin,
        load: (load_before, load_average()),
        took: started.elapsed(),
    });
    Ok(())
}

impl Bench {
    fn run(&self, kinds: &[Kind], rounds: usize, stats_rounds: usize) -> Result<Results> {
        let mut r = Results::default();
        for round in 0..rounds {
            for &kind in kinds {
                let mut this_round: BTreeMap<usize, Sample> = BTreeMap::new();
                for k in 0..self.configs.len() {
                    let c = (round + k) % self.configs.len(); // rotate the order per round
                    let (sample, _) = self.run_once(kind, c, false)?;
                    eprintln!(
                        "round {round} {:<9} {:<32} {:>9.0} req/s",
                        kind.name(),
                        self.name(c),
                        sample.rps
                    );
                    this_round.insert(c, sample);
                    r.samples.entry((kind, c)).or_default().push(sample);
                }
                let none = this_round[&0];
                for (c, s) in &this_round {
                    r.ratios.entry((kind, *c)).or_default().push(s.rps / none.rps);
                    let added = s.cpu_per_request - none.cpu_per_request;
                    r.added.entry((kind, *c)).or_default().push(added);
                }
            }
        }
        for _ in 0..stats_rounds {
            for &kind in kinds {
                for c in 1..self.configs.len() {
                    if self.configs[c].preset.spec().probes.include.is_empty() {
                        continue; // no eBPF program at all
                    }
                    let (sample, runs) = self.run_once(kind, c, true)?;
                    let requests = (sample.rps * self.seconds).round() as u64;
                    let entry = r.runs.entry((kind, c)).or_default();
                    for (program, runs) in runs.unwrap_or_default() {
                        let e = entry.0.entry(program).or_default();
                        e.count += runs.count;
                        e.ns += runs.ns;
                    }
                    entry.1 += requests;
                    eprintln!("stats {:<9} {:<32} done", kind.name(), self.name(c));
                }
            }
        }
        Ok(r)
    }

    fn name(&self, c: usize) -> String {
        report::config_name(&self.agents, &self.configs[c])
    }

    /// Runs the workload once under configuration `c`; with `stats`, the agent keeps bpf_stats
    /// on and its programs' runs over the workload's run are returned.
    fn run_once(
        &self,
        kind: Kind,
        c: usize,
        stats: bool,
    ) -> Result<(Sample, Option<BTreeMap<String, Runs>>)> {
        let config = &self.configs[c];
        let started = workload::start(kind, self.seconds, &self.work.dirs)?;
        let agent = match config.agent {
            Some(a) => {
                let file = self.config_file(config)?;
                let log = self.config_dir.join("agent.log");
                let probes: Vec<&str> =
                    config.preset.spec().probes.include.iter().map(|p| p.name()).collect();
                // One retry: on a busy machine an agent can lose its (picked, then released)
                // port to another process before it binds it.
                let mut agent = Agent::start(&self.agents[a], &file, stats, &log)?;
                if let Err(e) = agent.wait_ready(&probes) {
                    eprintln!("{}: {e:#}; starting it again", self.name(c));
                    drop(agent);
                    agent = Agent::start(&self.agents[a], &file, stats, &log)?;
                    agent.wait_ready(&probes)?;
                }
                // Past its start: its first collection and the loading of its programs.
                std::thread::sleep(Duration::from_millis(300));
                Some(agent)
            }
            None => None,
        };
        let runs_before = match (&agent, stats) {
            (Some(a), true) => Some(a.program_runs()?),
            _ => None,
        };
        let agent_cpu = agent.as_ref().map_or(0, Agent::cpu_ns);
        let t0 = Instant::now();
        let outcome = started.run()?;
        let wall = t0.elapsed().as_secs_f64();
        let mut sample = Sample {
            rps: outcome.requests as f64 / self.seconds,
            cpu_per_request: outcome.cpu_ns as f64 / outcome.requests.max(1) as f64,
            ..Sample::default()
        };
        let mut runs = None;
        if let Some(a) = &agent {
            sample.agent_cpu = (a.cpu_ns() - agent_cpu) as f64 / 1e9 / wall;
            sample.agent_rss = a.rss_bytes();
            if let Some(before) = runs_before {
                let after = a.program_runs()?;
                let delta = after
                    .into_iter()
                    .map(|(name, r)| {
                        let b = before.get(&name).copied().unwrap_or_default();
                        (name, Runs { count: r.count - b.count, ns: r.ns - b.ns })
                    })
                    .collect();
                runs = Some(delta);
            }
        }
        drop(agent);
        Ok((sample, runs))
    }

    /// The standalone config of a configuration: one PodTrace with its preset selecting the
    /// workload's cgroup (tracked) or the idle one.
    fn config_file(&self, config: &Config) -> Result<PathBuf> {
        let cgroup = if config.tracked { &self.work } else { &self.idle };
        let name = format!("{}-{}.yaml", config.preset.name(), config.tracked);
        let path = self.config_dir.join(name);
        if !path.exists() {
            let yaml = format!(
                "apiVersion: podtrace.dev/v1alpha1\nkind: PodTrace\nmetadata: {{name: bench, namespace: bench}}\nspec:\n  selector: {{matchLabels: {{podtrace.dev/cgroup: \"{}\"}}}}\n  profileRef: {{name: {}}}\n",
                cgroup.relative,
                config.preset.name()
            );
            std::fs::write(&path, yaml)?;
        }
        Ok(path)
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The 1-minute load average.
fn load_average() -> f64 {
    let text = std::fs::read_to_string(Path::new("/proc/loadavg")).unwrap_or_default();
    text.split_whitespace().next().and_then(|l| l.parse().ok()).unwrap_or(f64::NAN)
}
