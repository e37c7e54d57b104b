//! `cargo run --release -p podtrace-bench-exporters`: what each push exporter's encoding costs
//! per 10,000 series and interval, in CPU time and bytes, as a ratio to encoding the same
//! samples as `/metrics` text with prometheus-client in the same run (target: ≤ 1.5×).
//!
//! A "series" is one number of one target: the reference's 10 `metrics` values and 9
//! `aggregated` values make 19 per target, so 10,000 series are 527 targets. CPU time is the
//! thread's own (`/proc/thread-self/schedstat`), the median of interleaved rounds of [`REPS`]
//! encodings each, so that frequency changes and other processes on the machine hit every
//! encoder alike.

use podtrace_agent::exporters::{ExporterArgs, Item, influx, mqtt, nats, otlp};
use podtrace_agent::metrics::{Sample, TargetKey, catalog};
use podtrace_agent::sample::{
    AggregatedMetrics, KernelSample, ProcessMetrics, PushBatch, TargetSample,
};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};
use std::{
    hint::black_box,
    sync::{Arc, atomic::AtomicU64},
    time::SystemTime,
};

const SERIES_PER_TARGET: usize = 19;
const SERIES: usize = 10_000;
const ROUNDS: usize = 15;
/// Encodings per round: the kernel updates a running thread's schedstat at scheduler ticks
/// (4 ms at 250 Hz), so a round must last far longer than a tick.
const REPS: usize = 25;

fn main() {
    let targets = SERIES.div_ceil(SERIES_PER_TARGET);
    let batch = batch(targets);
    let items: Vec<Item> = (batch.targets.iter())
        .map(|t| Item::Target(Arc::new(t.clone())))
        .chain(batch.kernel.map(|k| Item::Kernel(Arc::new(k))))
        .collect();
    let registry = registry(&batch);

    let mut args = ExporterArgs::disabled();
    args.node_name = "node-1".into();
    args.instance_id = "agent-1".into();
    args.mqtt_topic = "m/{domain}/c/{channel}/metrics/{namespace}/{pod}/{container}".into();
    let nats = nats::Config::new("nats://127.0.0.1:4222", &args).unwrap();
    let mqtt = mqtt::Config::new("mqtt://127.0.0.1:1883", &args).unwrap();
    let influx = influx::Config::new("udp://127.0.0.1:8089", &args).unwrap();
    let otlp = otlp::Config::new("http://127.0.0.1:4318", &args).unwrap();

    type Encoder<'a> = Box<dyn Fn() -> usize + 'a>;
    let encoders: Vec<(&str, Encoder)> = vec![
        (
            "/metrics (prometheus-client text)",
            Box::new(|| {
                let mut out = String::new();
                encode(&mut out, &registry).unwrap();
                out.len()
            }),
        ),
        (
            "NATS (JSON per target + kernel)",
            Box::new(|| {
                items.iter().map(|i| nats.encode(i).map(|(s, p)| s.len() + p.len()).unwrap()).sum()
            }),
        ),
        (
            "MQTT (reference JSON per target)",
            Box::new(|| {
                items
                    .iter()
                    .map(|i| mqtt.encode(i).unwrap().map_or(0, |(t, p)| t.len() + p.len()))
                    .sum()
            }),
        ),
        (
            "Influx line protocol",
            Box::new(|| {
                let mut out = String::new();
                for i in &items {
                    influx.encode(&mut out, i);
                }
                out.len()
            }),
        ),
        (
            "OTLP protobuf (one request per 32 targets)",
            Box::new(|| {
                // As the exporter sends them: a request per chunk of its queue.
                items.chunks(32).map(|c| prost::Message::encode_to_vec(&otlp.encode(c)).len()).sum()
            }),
        ),
        (
            "OTLP protobuf, gzip level 1 (`--otlp-compression gzip` over HTTP)",
            Box::new(|| {
                let encoded =
                    items.chunks(32).map(|c| prost::Message::encode_to_vec(&otlp.encode(c)));
                encoded.map(|body| otlp::gzip(&body).len()).sum()
            }),
        ),
        (
            "OTLP protobuf, gzip level 6 (over gRPC: tonic's fixed level)",
            Box::new(|| {
                let encoded =
                    items.chunks(32).map(|c| prost::Message::encode_to_vec(&otlp.encode(c)));
                encoded.map(|body| gzip_default(&body).len()).sum()
            }),
        ),
    ];

    // Warm up (allocator, caches), then interleave the rounds.
    let bytes: Vec<usize> = encoders.iter().map(|(_, e)| black_box(e())).collect();
    let mut cpu: Vec<Vec<u64>> = vec![Vec::with_capacity(ROUNDS); encoders.len()];
    for _ in 0..ROUNDS {
        for (k, (_, e)) in encoders.iter().enumerate() {
            let start = thread_cpu_ns();
            for _ in 0..REPS {
                black_box(e());
            }
            cpu[k].push((thread_cpu_ns() - start) / REPS as u64);
        }
    }
    let median = |v: &mut Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let cpu: Vec<u64> = cpu.iter_mut().map(median).collect();

    let per_10k = |x: f64| x * SERIES as f64 / (targets * SERIES_PER_TARGET) as f64;
    println!(
        "{targets} targets × {SERIES_PER_TARGET} values = {} series (+ the kernel message); \
         figures per {SERIES} series, median of {ROUNDS} rounds of {REPS}\n",
        targets * SERIES_PER_TARGET
    );
    println!("| encoding | CPU per interval | bytes per interval | CPU ratio | bytes ratio |");
    println!("|---|---:|---:|---:|---:|");
    for (k, (name, _)) in encoders.iter().enumerate() {
        println!(
            "| {name} | {:.2} ms | {:.0} KiB | {:.2}× | {:.2}× |",
            per_10k(cpu[k] as f64) / 1e6,
            per_10k(bytes[k] as f64) / 1024.0,
            cpu[k] as f64 / cpu[0] as f64,
            bytes[k] as f64 / bytes[0] as f64,
        );
    }
}

/// gzip at level 6, as tonic compresses gRPC requests (the HTTP exporter takes level 1).
fn gzip_default(body: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body).expect("writing to a Vec");
    encoder.finish().expect("writing to a Vec")
}

/// CPU time of this thread in nanoseconds (first field of `/proc/thread-self/schedstat`).
fn thread_cpu_ns() -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("Linux schedstat");
    text.split_whitespace().next().and_then(|n| n.parse().ok()).expect("schedstat field")
}

fn batch(n: usize) -> PushBatch {
    let now = SystemTime::now();
    let targets = (0..n)
        .map(|i| {
            let v = i as u64 * 7919;
            TargetSample {
                node: "ip-10-0-12-34.eu-west-1.compute.internal".into(),
                namespace: format!("team-{}", i % 17),
                pod: format!("checkout-api-7d9f8b6c5d-{i:05x}"),
                pod_uid: format!("550e8400-e29b-41d4-a716-{i:012}"),
                container: "app".into(),
                timestamp: now,
                metrics: Some(ProcessMetrics {
                    cpu_usage_percent: 23.5 + i as f64 / 7.0,
                    memory_usage_bytes: 52_428_800 + v,
                    memory_usage_percent: Some(1.2 + i as f64 / 100.0),
                    disk_read_bytes: 1_048_576 + v,
                    disk_write_bytes: 524_288 + v,
                    network_rx_bytes: 2048 + v,
                    network_tx_bytes: 4096 + v,
                    uptime_seconds: 45 + i as u64,
                    thread_count: 2 + (i % 30) as u64,
                    file_descriptor_count: 8 + (i % 100) as u64,
                    timestamp: now,
                }),
                aggregated: Some(AggregatedMetrics {
                    avg_cpu_usage: 38.2 + i as f64 / 3.0,
                    max_cpu_usage: 65.0,
                    avg_memory_usage: (62_914_560 + v) as f64,
                    max_memory_usage: 71_303_168 + v,
                    total_disk_read: 2_097_152 + v,
                    total_disk_write: 1_048_576 + v,
                    total_network_rx: 12_288 + v,
                    total_network_tx: 24_576 + v,
                    sample_count: 24,
                }),
                // The /proc sample only: the same values as the 19 series it is compared with.
                resources: Default::default(),
                ebpf: Default::default(),
                export: podtrace_api::presets::Preset::Standard.spec().export,
                unavailable: vec![],
                series: Vec::new(),
            }
        })
        .map(|mut t| {
            t.series = series_of(&t);
            t
        })
        .collect();
    let kernel = KernelSample {
        context_switches_total: 123_456_789,
        entropy_available_bits: 256,
        network_connections_total: 42,
        timestamp: now,
    };
    PushBatch { kernel: Some(kernel), targets }
}

/// The target's 19 values as the `/metrics` series the OTLP exporter sends (those of one
/// process: the agent labels them with its pid and name).
fn series_of(t: &TargetSample) -> Vec<Sample> {
    let mut labels = TargetKey::new(&t.namespace, &t.pod, &t.container).labels();
    labels.push("pid", "4242").push("process_name", "checkout-api");
    let (m, a) = (m(t), a(t));
    let values = [
        (catalog::PROCESS_CPU, m.cpu_usage_percent),
        (catalog::PROCESS_MEMORY, m.memory_usage_bytes as f64),
        (catalog::PROCESS_MEMORY_PERCENT, m.memory_usage_percent.unwrap_or(0.0)),
        (catalog::PROCESS_DISK_READ, m.disk_read_bytes as f64),
        (catalog::PROCESS_DISK_WRITE, m.disk_write_bytes as f64),
        (catalog::PROCESS_NET_RX, m.network_rx_bytes as f64),
        (catalog::PROCESS_NET_TX, m.network_tx_bytes as f64),
        (catalog::PROCESS_THREADS, m.thread_count as f64),
        (catalog::PROCESS_FDS, m.file_descriptor_count as f64),
        (catalog::PROCESS_UPTIME, m.uptime_seconds as f64),
        (catalog::PROCESS_CPU_AVG, a.avg_cpu_usage),
        (catalog::PROCESS_CPU_MAX, a.max_cpu_usage),
        (catalog::PROCESS_MEMORY_AVG, a.avg_memory_usage),
        (catalog::PROCESS_MEMORY_MAX, a.max_memory_usage as f64),
        (catalog::PROCESS_HISTORY_SAMPLES, a.sample_count as f64),
        (catalog::RESOURCE_USAGE, a.total_disk_read as f64),
        (catalog::RESOURCE_LIMIT, a.total_disk_write as f64),
        (catalog::RESOURCE_UTILIZATION, a.total_network_rx as f64),
        (catalog::RESOURCE_ALERT, a.total_network_tx as f64),
    ];
    values.into_iter().map(|(f, v)| Sample::new(f, labels.clone(), v)).collect()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    node: String,
    namespace: String,
    pod: String,
    container: String,
}

/// The process sample every target of [`batch`] has.
fn m(t: &TargetSample) -> &ProcessMetrics {
    t.metrics.as_ref().expect("the bench's targets have process metrics")
}

/// The aggregates every target of [`batch`] has.
fn a(t: &TargetSample) -> &AggregatedMetrics {
    t.aggregated.as_ref().expect("the bench's targets have aggregates")
}

/// The same samples as gauges labelled node/namespace/pod/container, as `/metrics` serves them.
fn registry(batch: &PushBatch) -> Registry {
    type Int = Family<Labels, Gauge>;
    type Float = Family<Labels, Gauge<f64, AtomicU64>>;
    type IntOf = fn(&TargetSample) -> u64;
    type FloatOf = fn(&TargetSample) -> f64;
    let mut registry = Registry::default();
    let ints: Vec<(&str, Int, IntOf)> = vec![
        ("podtrace_memory_usage_bytes", Int::default(), |t| m(t).memory_usage_bytes),
        ("podtrace_disk_read_bytes", Int::default(), |t| m(t).disk_read_bytes),
        ("podtrace_disk_write_bytes", Int::default(), |t| m(t).disk_write_bytes),
        ("podtrace_network_rx_bytes", Int::default(), |t| m(t).network_rx_bytes),
        ("podtrace_network_tx_bytes", Int::default(), |t| m(t).network_tx_bytes),
        ("podtrace_uptime_seconds", Int::default(), |t| m(t).uptime_seconds),
        ("podtrace_thread_count", Int::default(), |t| m(t).thread_count),
        ("podtrace_file_descriptor_count", Int::default(), |t| m(t).file_descriptor_count),
        ("podtrace_avg_memory_usage_bytes", Int::default(), |t| {
            a(t).avg_memory_usage.round() as u64
        }),
        ("podtrace_max_memory_usage_bytes", Int::default(), |t| a(t).max_memory_usage),
        ("podtrace_total_disk_read_bytes", Int::default(), |t| a(t).total_disk_read),
        ("podtrace_total_disk_write_bytes", Int::default(), |t| a(t).total_disk_write),
        ("podtrace_total_network_rx_bytes", Int::default(), |t| a(t).total_network_rx),
        ("podtrace_total_network_tx_bytes", Int::default(), |t| a(t).total_network_tx),
        ("podtrace_sample_count", Int::default(), |t| a(t).sample_count),
    ];
    let floats: Vec<(&str, Float, FloatOf)> = vec![
        ("podtrace_cpu_usage_percent", Float::default(), |t| m(t).cpu_usage_percent),
        ("podtrace_memory_usage_percent", Float::default(), |t| {
            m(t).memory_usage_percent.unwrap_or(f64::NAN)
        }),
        ("podtrace_avg_cpu_usage_percent", Float::default(), |t| a(t).avg_cpu_usage),
        ("podtrace_max_cpu_usage_percent", Float::default(), |t| a(t).max_cpu_usage),
    ];
    for t in &batch.targets {
        let l = Labels {
            node: t.node.clone(),
            namespace: t.namespace.clone(),
            pod: t.pod.clone(),
            container: t.container.clone(),
        };
        for (_, f, get) in &ints {
            f.get_or_create(&l).set(get(t) as i64);
        }
        for (_, f, get) in &floats {
            f.get_or_create(&l).set(get(t));
        }
    }
    for (name, f, _) in ints {
        registry.register(name, "a sample", f);
    }
    for (name, f, _) in floats {
        registry.register(name, "a sample", f);
    }
    registry
}
