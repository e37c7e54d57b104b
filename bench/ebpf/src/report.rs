//! The tables the bench prints (Markdown, as docs/benchmarks.md shows them): per workload and
//! configuration, then the runs per program, then the issue-15 goals against the figures.

use podtrace_api::presets::Preset;
use std::time::Duration;

use crate::agent::{AgentSpec, Runs};
use crate::workload::Kind;
use crate::{Config, Results};

/// What the report needs.
pub struct Context<'a> {
    pub agents: &'a [AgentSpec],
    pub configs: &'a [Config],
    pub kinds: &'a [Kind],
    pub results: &'a Results,
    pub rounds: usize,
    pub seconds: f64,
    pub spin: u64,
    pub load: (f64, f64),
    pub took: Duration,
}

/// A configuration's name: `none`, `standard tracked`, or `name: standard other` when several
/// agents are compared.
pub fn config_name(agents: &[AgentSpec], c: &Config) -> String {
    let Some(a) = c.agent else { return "none".into() };
    let tracked = if c.tracked { "tracked" } else { "other" };
    if agents.len() > 1 {
        format!("{}: {} {tracked}", agents[a].name, c.preset.name())
    } else {
        format!("{} {tracked}", c.preset.name())
    }
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 }
}

/// Runs per request of a configuration (bpf_stats rounds), if measured: `None` as well when
/// not one run was counted (bpf_stats did not count, so 0 would be a false figure).
fn runs_per_request(ctx: &Context<'_>, kind: Kind, c: usize) -> Option<f64> {
    let (runs, requests) = ctx.results.runs.get(&(kind, c))?;
    let total: u64 = runs.values().map(|r| r.count).sum();
    (total > 0).then(|| total as f64 / (*requests).max(1) as f64)
}

/// Prints every table.
pub fn print(ctx: &Context<'_>) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "\nkernel {}, {cpus} CPUs; {} rounds of {} s per configuration; cpu50 spins {} iterations per request; load average {:.2} before, {:.2} after; took {:.0} s",
        kernel.trim(),
        ctx.rounds,
        ctx.seconds,
        ctx.spin,
        ctx.load.0,
        ctx.load.1,
        ctx.took.as_secs_f64()
    );
    for &kind in ctx.kinds {
        println!("\n### {}\n", kind.name());
        println!(
            "| configuration | requests/s | ratio to no agent | CPU per request, ns | added per request, ns | eBPF program runs per request | agent CPU, % of a core | agent RSS, MiB |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for (c, config) in ctx.configs.iter().enumerate() {
            let key = (kind, c);
            let samples = &ctx.results.samples[&key];
            let m =
                |f: fn(&crate::Sample) -> f64| median(&samples.iter().map(f).collect::<Vec<_>>());
            let runs = match runs_per_request(ctx, kind, c) {
                Some(r) => format!("{r:.1}"),
                None if c == 0 || config.preset.spec().probes.include.is_empty() => "0".into(),
                None => "-".into(),
            };
            let (cpu, rss) = if config.agent.is_some() {
                (
                    format!("{:.2}", 100.0 * m(|s| s.agent_cpu)),
                    format!("{:.1}", m(|s| s.agent_rss as f64) / (1 << 20) as f64),
                )
            } else {
                ("-".into(), "-".into())
            };
            println!(
                "| {} | {:.0} | {:.3} | {:.0} | {:+.0} | {runs} | {cpu} | {rss} |",
                config_name(ctx.agents, config),
                m(|s| s.rps),
                median(&ctx.results.ratios[&key]),
                m(|s| s.cpu_per_request),
                median(&ctx.results.added[&key]),
            );
        }
        print_programs(ctx, kind);
    }
    print_goals(ctx);
}

/// Runs per request and ns per run of each program, per configuration measured with bpf_stats.
fn print_programs(ctx: &Context<'_>, kind: Kind) {
    let measured: Vec<usize> =
        (0..ctx.configs.len()).filter(|c| ctx.results.runs.contains_key(&(kind, *c))).collect();
    if measured.is_empty() {
        return;
    }
    println!("\nRuns per request (ns per run, bpf_stats on) of each program, {}:\n", kind.name());
    println!("| configuration | programs |");
    println!("|---|---|");
    for c in measured {
        let (runs, requests) = &ctx.results.runs[&(kind, c)];
        let mut list: Vec<(&String, &Runs)> = runs.iter().filter(|(_, r)| r.count > 0).collect();
        list.sort_by_key(|(_, r)| std::cmp::Reverse(r.count));
        let cells: Vec<String> = list
            .iter()
            .map(|(name, r)| {
                let per = r.count as f64 / (*requests).max(1) as f64;
                format!("`{name}` {per:.2} ({:.0})", r.ns as f64 / r.count as f64)
            })
            .collect();
        println!("| {} | {} |", config_name(ctx.agents, &ctx.configs[c]), cells.join(", "));
    }
}

/// The goals of issue 15 with the first agent's figures.
fn print_goals(ctx: &Context<'_>) {
    let find = |preset: Preset, tracked: bool| {
        ctx.configs
            .iter()
            .position(|c| c.agent == Some(0) && c.preset == preset && c.tracked == tracked)
    };
    let kind = |name: &str| ctx.kinds.iter().copied().find(|k| k.name() == name);
    let ratio = |k: Option<Kind>, c: Option<usize>| -> Option<f64> {
        Some(median(ctx.results.ratios.get(&(k?, c?))?))
    };
    let runs = |k: Option<Kind>, c: Option<usize>| runs_per_request(ctx, k?, c?);
    let (loopback, cpu50) = (kind("loopback"), kind("cpu50"));
    let (standard, standard_other) = (find(Preset::Standard, true), find(Preset::Standard, false));
    let rows: [(&str, Option<f64>, &str, bool); 6] = [
        (
            "program runs per request, loopback, `standard` tracked",
            runs(loopback, standard),
            "≤ 10",
            false,
        ),
        (
            "program runs per request, loopback, `standard` not tracked",
            runs(loopback, standard_other),
            "≤ 4",
            false,
        ),
        (
            "requests/s ratio, loopback, `standard` tracked",
            ratio(loopback, standard),
            "≥ 0.90",
            true,
        ),
        (
            "requests/s ratio, loopback, `standard` not tracked",
            ratio(loopback, standard_other),
            "≥ 0.96",
            true,
        ),
        ("requests/s ratio, cpu50, `standard` tracked", ratio(cpu50, standard), "≥ 0.98", true),
        (
            "requests/s ratio, loopback, `minimal` tracked (no eBPF)",
            ratio(loopback, find(Preset::Minimal, true)),
            "≥ 0.995",
            true,
        ),
    ];
    println!("\n| goal (issue 15) | measured | target | met |");
    println!("|---|---:|---:|---|");
    for (what, value, target, at_least) in rows {
        let Some(v) = value else { continue };
        let bound: f64 = target.trim_start_matches(['≤', '≥', ' ']).parse().unwrap_or(f64::NAN);
        let met = if at_least { v >= bound } else { v <= bound };
        let v = if at_least { format!("{v:.3}") } else { format!("{v:.1}") };
        println!("| {what} | {v} | {target} | {} |", if met { "yes" } else { "**no**" });
    }
}
