//! Push exporters: NATS, MQTT, Influx line protocol and OpenTelemetry (OTLP).
//!
//! ```text
//!                       ┌► Queue (bounded, drop-oldest) ─► nats task   ─► NATS server
//! Exporters::push(batch)┼► Queue                         ─► mqtt task   ─► MQTT broker
//!   (never waits)       ├► Queue                         ─► influx task ─► tcp / udp / http /write
//!                       └► Queue                         ─► otlp task   ─► OTLP gRPC / HTTP receiver
//! ```
//!
//! The agent calls [`Exporters::push`] once per interval; it only appends to each enabled
//! exporter's queue, so collection and `/metrics` never wait for a broker. Each exporter runs on
//! its own task: it takes a chunk, encodes and sends it, and gives back what the broker did not
//! confirm (at-least-once up to the broker). When a broker goes away the task reconnects with
//! exponential backoff and jitter ([`backoff`]), the queue keeps the newest items up to
//! `--export-queue-size` and counts the rest in `podtrace_agent_export_dropped_total{exporter}`,
//! and [`Exporters::health`] reports the exporter not connected with the reason, until it
//! recovers by itself. The `podtrace.exporters` health service is then NOT_SERVING, which
//! `health live` reports as Healthy (the pods are measured, some data does not reach its
//! destination): Degraded is kept for an agent running on a stale configuration.
//!
//! A target's profile (`export.nats`, `export.mqtt`, `export.influx`, `export.otlp`) decides
//! which of the running exporters receive it; an exporter runs when its URL flag is set.

pub mod args;
pub mod backoff;
pub mod delivery;
pub mod error;
pub mod influx;
pub mod line_protocol;
pub mod message;
pub mod mqtt;
pub mod nats;
pub mod otlp;
pub mod otlp_data;
pub mod otlp_tls;
pub mod queue;
pub mod stats;
pub mod topic;

use crate::sample::{KernelSample, PushBatch, TargetSample};
pub use args::ExporterArgs;
pub use error::ExportError;

use podtrace_api::profile::ExportSettings;
use prometheus_client::registry::Registry;
use queue::Queue;
use stats::{Families, Stats};
use std::{sync::Arc, time::Duration};
use tokio::task::JoinHandle;

/// The first delay between reconnection attempts.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);

/// One queued unit: a target's samples (one message, or five Influx lines) or the node's kernel
/// counters. Each item owns (a shared pointer to) its own sample and not the whole batch, so a
/// queue of N items holds at most N samples, whatever the other targets of their batches.
#[derive(Clone, Debug)]
pub enum Item {
    /// One target of a batch.
    Target(Arc<TargetSample>),
    /// The batch's kernel counters.
    Kernel(Arc<KernelSample>),
}

impl Item {
    /// The target of a `Target` item.
    pub fn target(&self) -> Option<&TargetSample> {
        match self {
            Item::Target(t) => Some(t),
            Item::Kernel(_) => None,
        }
    }
}

/// The running push exporters. Dropping it stops their tasks.
pub struct Exporters {
    sinks: Vec<Sink>,
    families: Families,
}

/// One running exporter: its queue, its stats and its task.
struct Sink {
    queue: Arc<Queue<Item>>,
    stats: Stats,
    wants: fn(&ExportSettings) -> bool,
    kernel: bool,
    /// Sends the targets' `/metrics` series ([`TargetSample::series`]).
    series: bool,
    tasks: Vec<JoinHandle<()>>,
}

/// Health of every configured exporter, for the `podtrace.exporters` gRPC health service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportersHealth {
    /// One entry per configured exporter.
    pub exporters: Vec<ExporterHealth>,
}

impl ExportersHealth {
    /// True when every configured exporter is connected (or none is configured).
    pub fn serving(&self) -> bool {
        self.exporters.iter().all(|e| e.connected)
    }
}

/// Health of one exporter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExporterHealth {
    /// `nats`, `mqtt`, `influx` or `otlp`.
    pub exporter: &'static str,
    /// Connected to its broker (false: `podtrace.exporters` NOT_SERVING).
    pub connected: bool,
    /// Why it is not connected, as advice.
    pub reason: Option<String>,
    /// Items waiting.
    pub queued: usize,
    /// Items sent so far.
    pub sent: u64,
    /// Items dropped so far.
    pub dropped: u64,
}

impl Exporters {
    /// Starts one task per exporter whose URL is set and registers the exporters' metrics.
    ///
    /// Must run inside a tokio runtime. Malformed URLs, topic templates and unreadable
    /// credentials fail here; an unreachable broker does not (the exporter starts not connected
    /// and keeps trying).
    pub fn start(args: &ExporterArgs, registry: &mut Registry) -> Result<Exporters, ExportError> {
        if args.export_queue_size == 0 {
            return Err(ExportError::Zero { flag: "--export-queue-size" });
        }
        // Validate everything before starting anything, so that a bad flag starts nothing.
        let nats = args.nats_url.as_deref().map(|u| nats::Config::new(u, args)).transpose()?;
        let mqtt = args.mqtt_url.as_deref().map(|u| mqtt::Config::new(u, args)).transpose()?;
        let influx =
            args.influx_url.as_deref().map(|u| influx::Config::new(u, args)).transpose()?;
        let otlp = args.otlp_endpoint.as_deref().map(|u| otlp::Config::new(u, args)).transpose()?;

        let families = Families::register(registry);
        let new_sink = |name: &'static str| {
            let stats = families.stats(name);
            let queue =
                Queue::new(args.export_queue_size, stats.dropped.clone(), stats.queued.clone());
            let queue = Arc::new(queue.notifying(families.notifier()));
            (queue, stats)
        };
        let mut sinks = Vec::new();
        if let Some(config) = nats {
            let (queue, stats) = new_sink("nats");
            let tasks = vec![tokio::spawn(nats::run(config, queue.clone(), stats.clone()))];
            sinks.push(Sink {
                queue,
                stats,
                wants: |e| e.nats,
                kernel: true,
                series: false,
                tasks,
            });
        }
        if let Some(config) = mqtt {
            let (queue, stats) = new_sink("mqtt");
            let tasks = mqtt::spawn(config, queue.clone(), stats.clone());
            sinks.push(Sink {
                queue,
                stats,
                wants: |e| e.mqtt,
                kernel: false,
                series: false,
                tasks,
            });
        }
        if let Some(config) = influx {
            let (queue, stats) = new_sink("influx");
            let tasks = vec![tokio::spawn(influx::run(config, queue.clone(), stats.clone()))];
            sinks.push(Sink {
                queue,
                stats,
                wants: |e| e.influx,
                kernel: true,
                series: false,
                tasks,
            });
        }
        if let Some(config) = otlp {
            let (queue, stats) = new_sink("otlp");
            let tasks = vec![tokio::spawn(otlp::run(config, queue.clone(), stats.clone()))];
            sinks.push(Sink { queue, stats, wants: |e| e.otlp, kernel: true, series: true, tasks });
        }
        Ok(Exporters { sinks, families })
    }

    /// Hands one interval's samples to every exporter that wants them. Never blocks on I/O:
    /// it appends to bounded queues (dropping their oldest items when full).
    pub fn push(&self, batch: PushBatch) {
        if self.sinks.is_empty() {
            return;
        }
        let targets: Vec<Arc<TargetSample>> = batch.targets.into_iter().map(Arc::new).collect();
        let kernel = batch.kernel.map(Arc::new);
        for sink in &self.sinks {
            let wanted = targets.iter().filter(|t| (sink.wants)(&t.export));
            let items = wanted.map(|t| Item::Target(t.clone()));
            let kernel = kernel.as_ref().filter(|_| sink.kernel).map(|k| Item::Kernel(k.clone()));
            sink.queue.push(items.chain(kernel));
        }
    }

    /// Wakes whenever an exporter connects, becomes degraded or drops items.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.families.subscribe()
    }

    /// Connection state and counters of every configured exporter.
    pub fn health(&self) -> ExportersHealth {
        let exporters = self
            .sinks
            .iter()
            .map(|s| {
                let link = s.stats.link();
                ExporterHealth {
                    exporter: s.stats.exporter,
                    connected: link.connected,
                    reason: link.reason,
                    queued: s.queue.len(),
                    sent: s.stats.sent.get(),
                    dropped: s.stats.dropped.get(),
                }
            })
            .collect();
        ExportersHealth { exporters }
    }

    /// Waits until every queued item is confirmed by its broker (or dropped) or `timeout`
    /// passes, for a graceful shutdown; returns whether everything was handed over.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let drained = async {
            while self.sinks.iter().any(|s| s.queue.pending() > 0) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(timeout, drained).await.is_ok()
    }
}

impl crate::engine::Pusher for Exporters {
    fn push(&self, batch: PushBatch) {
        Exporters::push(self, batch);
    }

    fn wants_series(&self) -> bool {
        self.sinks.iter().any(|s| s.series)
    }
}

impl Drop for Exporters {
    fn drop(&mut self) {
        for task in self.sinks.iter().flat_map(|s| &s.tasks) {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_flags_fail_at_start_with_the_flag_named_and_start_nothing() {
        let mut args = ExporterArgs::disabled();
        args.influx_url = Some("udp://127.0.0.1:9".into());
        args.nats_url = Some("http://nats:4222".into());
        let mut registry = Registry::default();
        let err = Exporters::start(&args, &mut registry).err().expect("refused");
        assert!(err.to_string().contains("--nats-url (NATS_URL)"), "{err}");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains("podtrace_agent_export"), "nothing registered: {text}");

        args.nats_url = None;
        args.mqtt_url = Some("mqtt://127.0.0.1:1".into());
        args.mqtt_topic = "m/{tenant}".into();
        let err = Exporters::start(&args, &mut registry).err().expect("refused");
        assert!(err.to_string().contains("unknown placeholder {tenant}"), "{err}");

        args.mqtt_url = None;
        args.export_queue_size = 0;
        assert!(Exporters::start(&args, &mut registry).is_err());
    }

    /// Every exporter starts "connecting"; that is not a failed attempt, so a start with every
    /// broker up counts no error.
    #[tokio::test]
    async fn connecting_at_start_is_not_an_export_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut args = ExporterArgs::disabled();
        args.influx_url = Some(format!("tcp://{}", listener.local_addr().unwrap()));
        let mut registry = Registry::default();
        let exporters = Exporters::start(&args, &mut registry).unwrap();
        let accepted = tokio::time::timeout(Duration::from_secs(20), listener.accept()).await;
        let _connection = accepted.expect("the exporter connects").unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !exporters.health().serving() {
            assert!(tokio::time::Instant::now() < deadline, "{:?}", exporters.health());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("podtrace_agent_export_errors_total{exporter=\"influx\"} 0"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn push_routes_targets_by_their_profile_and_never_waits() {
        let mut args = ExporterArgs::disabled();
        // Nothing listens on the discard port of loopback over TCP: the exporter stays not
        // connected.
        args.influx_url = Some("tcp://127.0.0.1:9".into());
        args.export_queue_size = 3;
        let exporters = Exporters::start(&args, &mut Registry::default()).unwrap();
        let mut yes = message::test_target();
        yes.export.influx = true;
        let mut no = yes.clone();
        no.export.influx = false;
        let kernel = KernelSample {
            context_switches_total: 0,
            entropy_available_bits: 0,
            network_connections_total: 0,
            timestamp: std::time::SystemTime::now(),
        };
        for kernel in [Some(kernel), Some(kernel), None] {
            let batch = PushBatch { kernel, targets: vec![no.clone(), yes.clone()] };
            exporters.push(batch);
        }
        let h = &exporters.health().exporters[0];
        assert_eq!((h.exporter, h.connected), ("influx", false));
        assert_eq!(
            h.queued + h.dropped as usize,
            5,
            "one target per push, and the kernel line when the batch has one"
        );
        assert_eq!(h.dropped, 2);
        assert!(!exporters.flush(Duration::from_millis(50)).await, "nothing could be sent");
    }
}
