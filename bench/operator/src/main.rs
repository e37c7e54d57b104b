//! `operator-bench`: the podtrace operator at 10,000 pods on 100 nodes with 100 PodTraces, against
//! a real kube-apiserver + etcd (the e2e harness), run as a process like in production.
//!
//! It prints:
//! - operator RSS and heap in use with no pods, half and all the pods indexed (each the median of
//!   three processes), and the marginal KiB per pod;
//! - initial sync (process start → `/readyz`) as a ratio to a raw paginated LIST of the same pods
//!   (500 per page, decoded into `Pod`s, the same work a client has to do);
//! - the latency from a PodTrace change to every affected NodeTrace updated, p50/p99 over 50
//!   changes. Pod `j` of app `i` runs on node `(i + j) % 100`, so every PodTrace has a pod on every
//!   node and each change rewrites all 100 NodeTraces (100 pods each): the worst case.
//!
//! Usage: `cargo build --release -p podtrace-operator -p podtrace-bench-operator &&
//! target/release/operator-bench [--nodes N] [--podtraces N] [--pods-per-podtrace N] [--changes N]`.

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use podtrace_api::{NodeTrace, PodTrace};
use serde_json::json;
use std::time::{Duration, Instant};

const SCOPE_LABEL: &str = "podtrace.dev/e2e-scope";
/// The operator's heap in use (jemalloc), beside the RSS: it does not count freed pages the
/// allocator still holds, so it shows what the operator keeps per pod.
const HEAP: &str = "podtrace_operator_heap_allocated_bytes";
const MIB: f64 = 1024.0 * 1024.0;

mod operator;
use operator::Operator;

struct Scale {
    nodes: usize,
    podtraces: usize,
    pods_per_podtrace: usize,
    changes: usize,
}

fn scale() -> Result<Scale> {
    let mut s = Scale { nodes: 100, podtraces: 100, pods_per_podtrace: 100, changes: 50 };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value: usize = pair.get(1).context("a flag needs a value")?.parse()?;
        match pair[0].as_str() {
            "--nodes" => s.nodes = value,
            "--podtraces" => s.podtraces = value,
            "--pods-per-podtrace" => s.pods_per_podtrace = value,
            "--changes" => s.changes = value,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(s)
}

#[tokio::main]
async fn main() -> Result<()> {
    let s = scale()?;
    let pods_total = s.podtraces * s.pods_per_podtrace;
    let cp = podtrace_e2e::with_crds();
    let client = cp.client().await?;
    let ns = cp.namespace(&client, "bench").await?;
    let ns = ns.name.clone();
    let scope = format!("{SCOPE_LABEL}={ns}");
    println!("operator-bench: {pods_total} pods, {} nodes, {} PodTraces", s.nodes, s.podtraces);

    let nodes: Api<Node> = Api::all(client.clone());
    futures::stream::iter(0..s.nodes)
        .map(|n| {
            let node: Node = serde_json::from_value(json!({
                "metadata": {"name": format!("{ns}-n{n}"), "labels": {SCOPE_LABEL: ns}}
            }))
            .unwrap();
            let nodes = nodes.clone();
            async move { nodes.create(&PostParams::default(), &node).await }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    let podtraces: Api<PodTrace> = Api::namespaced(client.clone(), &ns);
    for i in 0..s.podtraces {
        let body = json!({"apiVersion": "podtrace.dev/v1alpha1", "kind": "PodTrace",
            "metadata": {"name": format!("pt-{i}")},
            "spec": {"selector": {"matchLabels": {"app": format!("app-{i}")}}, "profileRef": {"name": "standard"}}});
        podtraces
            .patch(&format!("pt-{i}"), &PatchParams::apply("bench"), &Patch::Apply(body))
            .await?;
    }

    // Baseline: the operator with nodes and PodTraces but no pods.
    let mut op = Operator::start(cp, &ns, &scope, "baseline")?;
    op.wait_ready(Duration::from_secs(60)).await?;
    op.settle().await?;
    let rss_empty = op.rss_kib()?;
    let heap_empty = op.metric(HEAP).await?;
    op.stop();
    let (rss_empty, heap_empty) =
        median_memory(cp, &ns, &scope, "baseline", (rss_empty, heap_empty)).await?;

    // Half the pods: the second point of the marginal memory per pod.
    let half = s.pods_per_podtrace / 2;
    let started = Instant::now();
    create_pods(&client, &ns, &s, 0..half).await?;
    println!(
        "created {} pods (with container IDs) in {:.1?}",
        s.podtraces * half,
        started.elapsed()
    );
    let mut op = Operator::start(cp, &ns, &scope, "half")?;
    op.wait_ready(Duration::from_secs(120)).await?;
    let expected = s.podtraces * half / s.nodes;
    nodetraces_complete(&client, &scope, s.nodes, expected).await?;
    op.settle().await?;
    let rss_half = op.rss_kib()?;
    let heap_half = op.metric(HEAP).await?;
    op.stop();
    let (rss_half, heap_half) =
        median_memory(cp, &ns, &scope, "half", (rss_half, heap_half)).await?;

    let started = Instant::now();
    create_pods(&client, &ns, &s, half..s.pods_per_podtrace).await?;
    println!("created {} more pods in {:.1?}", pods_total - s.podtraces * half, started.elapsed());

    let mut lists = Vec::new();
    for _ in 0..3 {
        lists.push(raw_list(&client, &ns).await?);
    }
    lists.sort();
    let list = lists[1];

    let mut op = Operator::start(cp, &ns, &scope, "loaded")?;
    let started = Instant::now();
    op.wait_ready(Duration::from_secs(120)).await?;
    let sync = started.elapsed();
    let (store, writer) = reflector::store::<NodeTrace>();
    let nt_api: Api<NodeTrace> = Api::all(client.clone());
    let watch = watcher(nt_api, watcher::Config::default().labels(&scope))
        .default_backoff()
        .reflect(writer);
    tokio::spawn(watch.for_each(|_| async {}));
    let full = |store: &reflector::Store<NodeTrace>| {
        let state = store.state();
        state.len() == s.nodes && state.iter().all(|nt| nt.spec.pods.len() == pods_total / s.nodes)
    };
    wait_until(Duration::from_secs(120), || full(&store))
        .await
        .context("NodeTraces never complete")?;
    let all_written = started.elapsed();
    op.settle().await?;
    let rss_loaded = op.rss_kib()?;
    let heap_loaded = op.metric(HEAP).await?;
    let writes_initial = op.metric("podtrace_operator_nodetrace_writes_total").await?;

    println!();
    println!("| figure | value | target |");
    println!("|---|---|---|");
    println!("| raw paginated LIST of the pods (500/page, decoded; median of 3) | {list:.2?} | |");
    println!("| operator start → /readyz (every cache synced) | {sync:.2?} | |");
    println!("| sync / raw LIST | {:.2}× | ≤ 1.3× |", sync.as_secs_f64() / list.as_secs_f64());
    println!("| operator start → all {} NodeTraces written | {all_written:.2?} | |", s.nodes);
    let spec_bytes: usize =
        store.state().iter().map(|nt| serde_json::to_vec(&nt.spec).map_or(0, |v| v.len())).sum();
    println!(
        "| NodeTrace spec (JSON), average of {} | {:.1} KiB | |",
        s.nodes,
        spec_bytes as f64 / s.nodes as f64 / 1024.0
    );

    let cpu_before = Cpu::sample(cp, &op)?;
    let mut latencies = Vec::new();
    for k in 0..s.changes {
        let name = format!("pt-{}", k % s.podtraces);
        let profile = if (k / s.podtraces) % 2 == 0 { "minimal" } else { "standard" };
        let patch = json!({"spec": {"profileRef": {"name": profile}}});
        let t0 = Instant::now();
        podtraces.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let done = || {
            store.state().iter().all(|nt| {
                nt.spec
                    .pods
                    .iter()
                    .filter(|p| p.requested_by.iter().any(|r| r.name == name))
                    .all(|p| p.profiles == [profile])
            })
        };
        wait_until(Duration::from_secs(120), done)
            .await
            .with_context(|| format!("change {k} never arrived"))?;
        latencies.push(t0.elapsed());
        eprintln!("change {k}: {} ms", t0.elapsed().as_millis());
    }
    latencies.sort();
    let pct = |q: f64| {
        latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    let writes_after = op.metric("podtrace_operator_nodetrace_writes_total").await?;
    let cpu = Cpu::sample(cp, &op)?.since(&cpu_before);
    op.stop();

    println!(
        "| PodTrace change → every affected NodeTrace updated ({} changes × {} NodeTraces) | p50 {} ms, p99 {} ms | p99 ≤ 1 s |",
        s.changes,
        s.nodes,
        pct(0.5).as_millis(),
        pct(0.99).as_millis()
    );
    println!(
        "| NodeTrace writes: initial / per change | {writes_initial} / {:.1} | |",
        (writes_after - writes_initial) / s.changes as f64
    );
    let per_change = |ms: f64| format!("{:.0} ms", ms / s.changes as f64);
    println!(
        "| CPU per change: kube-apiserver / etcd / operator / this bench's NodeTrace watch | {} / {} / {} / {} | |",
        per_change(cpu.apiserver),
        per_change(cpu.etcd),
        per_change(cpu.operator),
        per_change(cpu.bench)
    );

    // Two more processes on the final objects for the median of the loaded memory point.
    let (rss_loaded, heap_loaded) =
        median_memory(cp, &ns, &scope, "loaded", (rss_loaded, heap_loaded)).await?;
    let per_pod = (rss_loaded as f64 - rss_empty as f64) / pods_total as f64;
    let per_pod_half =
        (rss_loaded as f64 - rss_half as f64) / (pods_total - s.podtraces * half) as f64;
    println!(
        "| operator RSS, nodes + PodTraces, no pods (median of 3 processes) | {:.1} MiB | |",
        rss_empty as f64 / 1024.0
    );
    println!(
        "| operator RSS, {pods_total} pods indexed, NodeTraces written (median of 3) | {:.1} MiB | |",
        rss_loaded as f64 / 1024.0
    );
    println!(
        "| operator RSS, {} pods indexed, NodeTraces written (median of 3) | {:.1} MiB | |",
        s.podtraces * half,
        rss_half as f64 / 1024.0
    );
    println!(
        "| marginal memory per pod, {} → {pods_total} pods | {per_pod_half:.2} KiB | ≤ 1 KiB |",
        s.podtraces * half
    );
    println!("| average memory per pod over the no-pod baseline | {per_pod:.2} KiB | |");
    println!(
        "| heap in use (jemalloc), no pods / {} / {pods_total} pods | {:.1} / {:.1} / {:.1} MiB | |",
        s.podtraces * half,
        heap_empty / MIB,
        heap_half / MIB,
        heap_loaded / MIB
    );
    println!(
        "| marginal heap in use per pod, {} → {pods_total} pods | {:.2} KiB | |",
        s.podtraces * half,
        (heap_loaded - heap_half) / 1024.0 / (pods_total - s.podtraces * half) as f64
    );
    Ok(())
}

/// The median RSS (KiB) and heap in use (bytes) of `first` and of two more operator processes
/// started on the same objects, each sampled once ready and idle ([`Operator::settle`]; they
/// write nothing: every NodeTrace is up to date). One process's figure varies with how its allocator laid out the
/// initial list, by up to ±0.3 KiB per pod between runs.
async fn median_memory(
    cp: &podtrace_e2e::ControlPlane,
    ns: &str,
    scope: &str,
    label: &str,
    first: (u64, f64),
) -> Result<(u64, f64)> {
    let (mut rss, mut heap) = (vec![first.0], vec![first.1]);
    for i in 1..3 {
        let mut op = Operator::start(cp, ns, scope, &format!("{label}-{i}"))?;
        op.wait_ready(Duration::from_secs(120)).await?;
        op.settle().await?;
        rss.push(op.rss_kib()?);
        heap.push(op.metric(HEAP).await?);
        op.stop();
    }
    let mib = |kib: &u64| format!("{:.1}", *kib as f64 / 1024.0);
    let heap_mib = |b: &f64| format!("{:.1}", b / MIB);
    println!(
        "memory at {label}: RSS {} MiB, heap {} MiB (first process, then two restarts)",
        rss.iter().map(mib).collect::<Vec<_>>().join(" / "),
        heap.iter().map(heap_mib).collect::<Vec<_>>().join(" / ")
    );
    rss.sort_unstable();
    heap.sort_by(f64::total_cmp);
    Ok((rss[1], heap[1]))
}

/// CPU time (user + system, ms) of the processes a change goes through, to show where the
/// change latency is spent.
struct Cpu {
    apiserver: f64,
    etcd: f64,
    operator: f64,
    bench: f64,
}

impl Cpu {
    fn sample(cp: &podtrace_e2e::ControlPlane, op: &Operator) -> Result<Self> {
        let of_pid_file = |name: &str| -> Result<f64> {
            let pid = std::fs::read_to_string(cp.dir.join(format!("{name}.pid")))?;
            cpu_ms(pid.trim().parse()?)
        };
        Ok(Self {
            apiserver: of_pid_file("apiserver")?,
            etcd: of_pid_file("etcd")?,
            operator: cpu_ms(op.child.as_ref().context("stopped")?.id())?,
            bench: cpu_ms(std::process::id())?,
        })
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            apiserver: self.apiserver - before.apiserver,
            etcd: self.etcd - before.etcd,
            operator: self.operator - before.operator,
            bench: self.bench - before.bench,
        }
    }
}

/// utime + stime of `pid` from /proc/<pid>/stat, in milliseconds.
fn cpu_ms(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // /proc counts in USER_HZ, which the kernel's ABI fixes at 100 on every architecture it
    // reports through /proc (sysconf(_SC_CLK_TCK) answers the same).
    Ok(ticks * 10.0)
}

/// Waits until all `nodes` NodeTraces of `scope` list `pods` pods each.
async fn nodetraces_complete(
    client: &Client,
    scope: &str,
    nodes: usize,
    pods: usize,
) -> Result<()> {
    let api: Api<NodeTrace> = Api::all(client.clone());
    let start = Instant::now();
    loop {
        let list = api.list(&ListParams::default().labels(scope)).await?;
        if list.items.len() == nodes && list.items.iter().all(|nt| nt.spec.pods.len() == pods) {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("NodeTraces incomplete after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn create_pods(
    client: &Client,
    ns: &str,
    s: &Scale,
    range: std::ops::Range<usize>,
) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let work = (0..s.podtraces).flat_map(|i| range.clone().map(move |j| (i, j)));
    futures::stream::iter(work)
        .map(|(i, j)| {
            let pods = pods.clone();
            let name = format!("app-{i}-{j}");
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"app": format!("app-{i}"), "pod-template-hash": "5d8f7c9b6"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("app-{i}-5d8f7c9b6"),
                        "uid": "6f1c3c1e-0000-4000-8000-000000000001", "controller": true}]},
                "spec": {"nodeName": format!("{ns}-n{}", (i + j) % s.nodes),
                    "containers": [{"name": "app", "image": "registry.example/app:1.0"}]},
            }))
            .unwrap();
            async move {
                pods.create(&PostParams::default(), &pod).await?;
                let status = json!({"status": {"phase": "Running", "containerStatuses": [{"name": "app",
                    "containerID": format!("containerd://{:064x}", i * 100_000 + j), "image": "registry.example/app:1.0",
                    "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}}}]}});
                pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await?;
                Ok::<_, kube::Error>(())
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// A paginated LIST of every pod of `ns`, 500 per page, decoded: what any client must do.
async fn raw_list(client: &Client, ns: &str) -> Result<Duration> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let started = Instant::now();
    let mut params = ListParams::default().limit(500);
    let mut count = 0;
    loop {
        let page = pods.list(&params).await?;
        count += page.items.len();
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    let took = started.elapsed();
    println!("raw LIST: {count} pods in {took:.2?}");
    Ok(took)
}

async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}
