//! `operator-bench`: the podtrace operator against a real kube-apiserver + etcd (the e2e
//! harness), run as a process like in production, at 1,000 nodes, 1,000 PodTraces and 100,000
//! pods (`--quick`: 100 nodes, 100 PodTraces, 10,000 pods), with a stand-in agent per node
//! (`agents.rs`: the watches and the first status report of a real agent).
//!
//! It prints each figure beside its goal:
//! - API writes per PodTrace edit and per MonitoringProfile edit (NodeTraces,
//!   PodTraceProfiles, PodTrace statuses), and the API server's CPU per edit, less what it
//!   spends idle in as much time (measured for 20 s in the same run);
//! - edit → every agent's watch delivered the new settings, p50/p99 over the edits;
//! - operator RSS with no pods and with every pod indexed (median of three processes);
//! - initial sync (start → `/readyz`) as a ratio to a raw paginated LIST of the pods;
//! - pod churn: traced pods created and deleted at a steady rate, the NodeTrace writes it
//!   caused and the time from its end until every NodeTrace lists exactly the existing pods.
//!
//! Usage: `cargo build --release -p podtrace-operator -p podtrace-bench-operator &&
//! target/release/operator-bench [--quick]` (`make bench-operator`, `make
//! bench-operator-quick`).

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::StreamExt;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use podtrace_api::{MonitoringProfile, NodeTrace, PodTrace};
use serde_json::json;
use std::time::{Duration, Instant};

mod agents;
mod churn;
mod cluster;
mod cpu;
mod operator;

use agents::{Agents, Wanted};
use cluster::Cluster;
use cpu::Cpu;
use operator::Operator;

/// The operator's heap in use (jemalloc), beside the RSS.
const HEAP: &str = "podtrace_operator_heap_allocated_bytes";
const MIB: f64 = 1024.0 * 1024.0;

/// The podtrace operator at cluster scale against a real API server.
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// The quick run: 100 nodes, 100 PodTraces, 10 MonitoringProfiles, 10,000 pods, 20 s of churn.
    #[arg(long, env = "PT_BENCH_QUICK")]
    quick: bool,
    /// Nodes (default 1,000; quick 100).
    #[arg(long, env = "PT_BENCH_NODES")]
    nodes: Option<usize>,
    /// PodTraces (default 1,000; quick 100).
    #[arg(long, env = "PT_BENCH_PODTRACES")]
    podtraces: Option<usize>,
    /// Pods per PodTrace (default 100).
    #[arg(long, env = "PT_BENCH_PODS_PER_PODTRACE")]
    pods_per_podtrace: Option<usize>,
    /// MonitoringProfiles the PodTraces refer to, round robin (default 100; quick 10).
    #[arg(long, env = "PT_BENCH_PROFILES")]
    profiles: Option<usize>,
    /// PodTrace edits measured.
    #[arg(long, env = "PT_BENCH_CHANGES", default_value_t = 50)]
    changes: usize,
    /// MonitoringProfile edits measured.
    #[arg(long, env = "PT_BENCH_PROFILE_CHANGES", default_value_t = 20)]
    profile_changes: usize,
    /// Churned pods created (and as many deleted) per second.
    #[arg(long, env = "PT_BENCH_CHURN_RATE", default_value_t = 1000)]
    churn_rate: usize,
    /// Seconds of churn (default 60; quick 20).
    #[arg(long, env = "PT_BENCH_CHURN_SECONDS")]
    churn_seconds: Option<u64>,
}

/// The sizes of a run.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    /// Nodes, each with an agent.
    pub nodes: usize,
    /// PodTraces.
    pub podtraces: usize,
    /// Pods per PodTrace.
    pub pods_per_podtrace: usize,
    /// MonitoringProfiles.
    pub profiles: usize,
}

impl Scale {
    /// Every pod.
    pub fn pods(&self) -> usize {
        self.podtraces * self.pods_per_podtrace
    }
}

/// The operator's write counters.
#[derive(Clone, Copy, Debug, Default)]
struct Writes {
    nodetraces: f64,
    profiles: f64,
    statuses: f64,
}

impl Writes {
    async fn of(op: &Operator) -> Result<Self> {
        Ok(Self {
            nodetraces: op.metric("podtrace_operator_nodetrace_writes_total").await?,
            profiles: op.metric("podtrace_operator_podtraceprofile_writes_total").await?,
            statuses: op.metric("podtrace_operator_status_writes_total").await?,
        })
    }

    fn per(&self, before: &Self, n: usize) -> String {
        let n = n as f64;
        format!(
            "{:.1} NodeTrace + {:.1} PodTraceProfile (+ {:.1} PodTrace status)",
            (self.nodetraces - before.nodetraces) / n,
            (self.profiles - before.profiles) / n,
            (self.statuses - before.statuses) / n
        )
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let full = !args.quick;
    let scale = Scale {
        nodes: args.nodes.unwrap_or(if full { 1000 } else { 100 }),
        podtraces: args.podtraces.unwrap_or(if full { 1000 } else { 100 }),
        pods_per_podtrace: args.pods_per_podtrace.unwrap_or(100),
        profiles: args.profiles.unwrap_or(if full { 100 } else { 10 }),
    };
    let churn_seconds = args.churn_seconds.unwrap_or(if full { 60 } else { 20 });
    let cp = podtrace_e2e::with_crds();
    let client = cp.client().await?;
    let ns = cp.namespace(&client, "bench").await?.name.clone();
    let cluster = Cluster { client: client.clone(), ns: ns.clone(), scale };
    let scope = cluster.scope();
    let (load, _, _) = load_average();
    println!(
        "operator-bench: {} pods, {} nodes (one stand-in agent each), {} PodTraces over {} MonitoringProfiles; load average {load:.2}",
        scale.pods(),
        scale.nodes,
        scale.podtraces,
        scale.profiles
    );
    cluster.create_nodes_profiles_and_podtraces().await?;

    // The operator with nodes and PodTraces but no pods.
    let mut empty = Samples::default();
    for i in 0..3 {
        let mut op = Operator::start(cp, &ns, &scope, &format!("empty-{i}"))?;
        op.wait_ready(Duration::from_secs(60)).await?;
        empty.take(&op).await?;
        op.stop();
    }
    empty.print("no pods");

    let started = Instant::now();
    cluster.create_pods(0..scale.pods_per_podtrace).await?;
    println!("created {} pods (with container IDs) in {:.1?}", scale.pods(), started.elapsed());
    let mut lists = Vec::new();
    for _ in 0..3 {
        lists.push(cluster.raw_list().await?);
    }
    lists.sort();
    let list = lists[1];

    let agents =
        Agents::start(&client, (0..scale.nodes).map(|n| cluster.node(n)).collect()).await?;
    println!("{} stand-in agents watching", scale.nodes);
    let (store, writer) = reflector::store::<NodeTrace>();
    let watch =
        watcher(Api::<NodeTrace>::all(client.clone()), watcher::Config::default().labels(&scope))
            .default_backoff()
            .reflect(writer);
    tokio::spawn(watch.for_each(|_| async {}));
    let per_node = scale.pods() / scale.nodes;
    let complete = |store: &reflector::Store<NodeTrace>| {
        let state = store.state();
        state.len() == scale.nodes
            && state.iter().all(|nt| {
                nt.spec.pods.len() == per_node
                    && nt.spec.format() == podtrace_api::nodetrace::SpecFormat::Shared
            })
    };

    // First process: sync, every NodeTrace written (format 1, then format 2 once the agents
    // reported), the statuses rolled up; then two restarts on the same objects (they write
    // nothing), the last one kept for the edits and the churn.
    let (mut sync, mut loaded) = (Vec::new(), Samples::default());
    let mut first = Operator::start(cp, &ns, &scope, "loaded-0")?;
    let started = Instant::now();
    first.wait_ready(Duration::from_secs(300)).await?;
    sync.push(started.elapsed());
    agents.reported().await?;
    wait_until(Duration::from_secs(600), || complete(&store))
        .await
        .context("NodeTraces never complete")?;
    let written = started.elapsed();
    loaded.take(&first).await?;
    first.stop();
    let mut op = None;
    for i in 1..3 {
        let restarted = Operator::start(cp, &ns, &scope, &format!("loaded-{i}"))?;
        let started = Instant::now();
        restarted.wait_ready(Duration::from_secs(300)).await?;
        sync.push(started.elapsed());
        loaded.take(&restarted).await?;
        if let Some(mut previous) = op.replace(restarted) {
            previous.stop();
        }
    }
    loaded.print(&format!("{} pods", scale.pods()));
    let op = op.context("the last operator is kept")?;
    let spec_bytes: usize =
        store.state().iter().map(|nt| serde_json::to_vec(&nt.spec).map_or(0, |v| v.len())).sum();

    // What the processes spend doing nothing, taken out of the edits' CPU below.
    let idle = Cpu::idle(cp, &op, Duration::from_secs(20)).await?;

    // PodTrace edits: pt-k moves to another MonitoringProfile and back.
    let podtraces: Api<PodTrace> = Api::namespaced(client.clone(), &ns);
    let (writes_before, cpu_before) = (Writes::of(&op).await?, Cpu::sample(cp, &op)?);
    let mut latencies = Vec::new();
    for k in 0..args.changes {
        let i = k % scale.podtraces;
        let moved = (k / scale.podtraces).is_multiple_of(2);
        let profile = cluster.profile_of(if moved { i + 1 } else { i });
        agents
            .expect(Wanted::PodTraceProfile { name: format!("pt-{i}"), profile: profile.clone() });
        let patch = json!({"spec": {"profileRef": {"name": profile}}});
        podtraces.patch(&format!("pt-{i}"), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let took =
            agents.wait(Duration::from_secs(120)).await.with_context(|| format!("edit {k}"))?;
        latencies.push(took);
    }
    // Longer than the operator's gap between two status writes of a PodTrace (2 s), short
    // enough that the idle CPU taken out stays small beside the edits'.
    let status_gap = Duration::from_millis(2500);
    op.quiet(status_gap).await?;
    let (edit_writes, edit_cpu) =
        (Writes::of(&op).await?, Cpu::sample(cp, &op)?.since(&cpu_before));

    // MonitoringProfile edits: each profile is named by podtraces/profiles PodTraces.
    let profiles: Api<MonitoringProfile> = Api::all(client.clone());
    let (profile_writes_before, profile_cpu_before) =
        (Writes::of(&op).await?, Cpu::sample(cp, &op)?);
    let mut profile_latencies = Vec::new();
    for k in 0..args.profile_changes {
        let interval = format!("{}s", 61 + k);
        let p = k % scale.profiles;
        agents.expect(Wanted::MonitoringProfile {
            name: cluster.profile(p),
            interval: interval.clone(),
        });
        cluster.apply_profile(&profiles, p, &interval).await?;
        profile_latencies.push(
            agents
                .wait(Duration::from_secs(120))
                .await
                .with_context(|| format!("profile edit {k}"))?,
        );
    }
    op.quiet(status_gap).await?;
    let (profile_writes, profile_cpu) =
        (Writes::of(&op).await?, Cpu::sample(cp, &op)?.since(&profile_cpu_before));

    // Churn.
    let churn_writes_before = Writes::of(&op).await?;
    let churn_cpu_before = Cpu::sample(cp, &op)?;
    let churn = churn::run(&cluster, args.churn_rate, churn_seconds, &store).await?;
    let churn_cpu = Cpu::sample(cp, &op)?.since(&churn_cpu_before);
    let churn_writes = Writes::of(&op).await?;
    drop(agents);
    let (load_end, _, _) = load_average();

    println!();
    println!("| figure | measured | goal |");
    println!("|---|---|---|");
    println!(
        "| API writes per PodTrace edit ({} edits) | {} | ≤ PodTraces whose settings changed (1); no NodeTrace |",
        args.changes,
        edit_writes.per(&writes_before, args.changes)
    );
    println!(
        "| API writes per MonitoringProfile edit ({} edits, {} PodTraces each) | {} | ≤ PodTraces whose settings changed ({}); no NodeTrace |",
        args.profile_changes,
        scale.podtraces / scale.profiles,
        profile_writes.per(&profile_writes_before, args.profile_changes),
        scale.podtraces / scale.profiles
    );
    println!(
        "| PodTrace edit → all {} agents have the new settings | p50 {} ms, p99 {} ms | p99 ≤ 1 s |",
        scale.nodes,
        percentile(&mut latencies, 0.5).as_millis(),
        percentile(&mut latencies, 0.99).as_millis()
    );
    println!(
        "| MonitoringProfile edit → all {} agents have it | p50 {} ms, p99 {} ms | p99 ≤ 1 s |",
        scale.nodes,
        percentile(&mut profile_latencies, 0.5).as_millis(),
        percentile(&mut profile_latencies, 0.99).as_millis()
    );
    println!(
        "| API-server CPU when idle (20 s, same run), taken out of the figures below | {:.0} ms/s | |",
        idle.apiserver / idle.wall * 1000.0
    );
    let (edit_net, profile_net) = (edit_cpu.beyond(&idle), profile_cpu.beyond(&idle));
    let (changes, profile_changes) = (args.changes as f64, args.profile_changes.max(1) as f64);
    println!(
        "| API-server CPU per PodTrace edit | {:.0} ms ({:.0} ms with idle) | ≤ 50 ms |",
        edit_net.apiserver / changes,
        edit_cpu.apiserver / changes
    );
    println!(
        "| CPU per PodTrace edit: etcd / operator / the {} stand-in agents and this bench | {:.0} / {:.0} / {:.0} ms | |",
        scale.nodes,
        edit_net.etcd / changes,
        edit_net.operator / changes,
        edit_net.bench / changes
    );
    println!(
        "| API-server CPU per MonitoringProfile edit | {:.0} ms ({:.0} ms with idle) | ≤ 50 ms |",
        profile_net.apiserver / profile_changes,
        profile_cpu.apiserver / profile_changes
    );
    println!(
        "| operator RSS, {} pods indexed (median of 3 processes) | {:.1} MiB (no pods: {:.1} MiB) | ≤ 128 MiB |",
        scale.pods(),
        loaded.rss_kib() as f64 / 1024.0,
        empty.rss_kib() as f64 / 1024.0
    );
    println!(
        "| operator heap in use, no pods / {} pods | {:.1} / {:.1} MiB | |",
        scale.pods(),
        empty.heap() / MIB,
        loaded.heap() / MIB
    );
    println!(
        "| raw paginated LIST of the {} pods (500/page, decoded; median of 3) | {list:.2?} | |",
        scale.pods()
    );
    sync.sort();
    println!(
        "| operator start → /readyz (3 processes) | {} | |",
        sync.iter().map(|d| format!("{d:.2?}")).collect::<Vec<_>>().join(" / ")
    );
    println!(
        "| initial sync / raw LIST (median) | {:.2}× | ≤ 1.3× |",
        sync[sync.len() / 2].as_secs_f64() / list.as_secs_f64()
    );
    println!("| first start → all {} NodeTraces in format 2 | {written:.1?} | |", scale.nodes);
    println!(
        "| NodeTrace spec (JSON), average | {:.1} KiB | |",
        spec_bytes as f64 / scale.nodes as f64 / 1024.0
    );
    println!(
        "| pod churn: {} created + {} deleted in {:.1?} ({:.0} + {:.0} pods/s) | {:.0} NodeTrace writes ({:.0}/s), {:.0} status writes | {} + {} pods/s for {churn_seconds} s |",
        churn.created,
        churn.deleted,
        churn.took,
        churn.created as f64 / churn.took.as_secs_f64(),
        churn.deleted as f64 / churn.took.as_secs_f64(),
        churn_writes.nodetraces - churn_writes_before.nodetraces,
        (churn_writes.nodetraces - churn_writes_before.nodetraces) / churn.took.as_secs_f64(),
        churn_writes.statuses - churn_writes_before.statuses,
        args.churn_rate,
        args.churn_rate
    );
    println!(
        "| churn end → every NodeTrace lists exactly the existing pods | {:.2?} | ≤ 2 s |",
        churn.converged
    );
    println!(
        "| CPU during churn: kube-apiserver / etcd / operator | {:.1} / {:.1} / {:.1} s | |",
        churn_cpu.apiserver / 1000.0,
        churn_cpu.etcd / 1000.0,
        churn_cpu.operator / 1000.0
    );
    println!("load average: {load:.2} at the start, {load_end:.2} at the end");
    Ok(())
}

/// RSS (KiB) and heap in use (bytes) of operator processes, each sampled once ready and idle
/// ([`Operator::settle`]).
#[derive(Default)]
struct Samples {
    rss: Vec<u64>,
    heap: Vec<f64>,
}

impl Samples {
    async fn take(&mut self, op: &Operator) -> Result<()> {
        op.settle().await?;
        self.rss.push(op.rss_kib()?);
        self.heap.push(op.metric(HEAP).await?);
        Ok(())
    }

    fn print(&self, label: &str) {
        let mib = |kib: &u64| format!("{:.1}", *kib as f64 / 1024.0);
        println!(
            "operator RSS, {label}: {} MiB (first process, then restarts)",
            self.rss.iter().map(mib).collect::<Vec<_>>().join(" / ")
        );
    }

    fn rss_kib(&self) -> u64 {
        let mut v = self.rss.clone();
        v.sort_unstable();
        v[v.len() / 2]
    }

    fn heap(&self) -> f64 {
        let mut v = self.heap.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }
}

fn percentile(values: &mut [Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort();
    values[((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1]
}

fn load_average() -> (f64, f64, f64) {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text.split_whitespace().map(|v| v.parse().unwrap_or(f64::NAN));
    (it.next().unwrap_or(f64::NAN), it.next().unwrap_or(f64::NAN), it.next().unwrap_or(f64::NAN))
}

async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
