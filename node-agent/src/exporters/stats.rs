//! The exporters' own metrics and connection state, shared by `/metrics` and health.
//!
//! ```text
//! podtrace_agent_export_sent_total{exporter}      items the broker accepted
//! podtrace_agent_export_dropped_total{exporter}   items the bounded queue could not keep (or the
//!                                                 endpoint rejected as malformed)
//! podtrace_agent_export_errors_total{exporter}    failed connection or send attempts
//! podtrace_agent_export_connected{exporter}       1 while connected
//! podtrace_agent_export_queued{exporter}          items waiting
//! ```
//!
//! An "item" is one message for NATS and MQTT, one target's (or the node's) lines for Influx and
//! one target's (or the node's) resource for OTLP.

use parking_lot::{Mutex, MutexGuard};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use std::sync::Arc;
use tokio::sync::watch;

/// The `exporter` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExporterLabel {
    /// `nats`, `mqtt`, `influx` or `otlp`.
    pub exporter: &'static str,
}

/// The metric families, registered once.
#[derive(Clone, Default)]
pub struct Families {
    sent: Family<ExporterLabel, Counter>,
    dropped: Family<ExporterLabel, Counter>,
    errors: Family<ExporterLabel, Counter>,
    connected: Family<ExporterLabel, Gauge>,
    queued: Family<ExporterLabel, Gauge>,
    /// Marked whenever an exporter connects or loses its broker (health waits on it).
    changed: Arc<watch::Sender<()>>,
}

impl Families {
    /// Wakes whenever an exporter's link changes or items are dropped.
    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }

    /// What to mark when an exporter's link changes or it drops items.
    pub fn notifier(&self) -> Arc<watch::Sender<()>> {
        self.changed.clone()
    }

    /// Registers the families in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let f = Families::default();
        let r = registry;
        r.register("podtrace_agent_export_sent", "Items accepted by the broker", f.sent.clone());
        r.register(
            "podtrace_agent_export_dropped",
            "Items dropped because the exporter's bounded queue was full (oldest first) or the \
             endpoint rejected them as malformed",
            f.dropped.clone(),
        );
        r.register(
            "podtrace_agent_export_errors",
            "Failed connection or send attempts",
            f.errors.clone(),
        );
        r.register(
            "podtrace_agent_export_connected",
            "1 while the exporter is connected to its broker",
            f.connected.clone(),
        );
        r.register("podtrace_agent_export_queued", "Items waiting to be sent", f.queued.clone());
        f
    }

    /// The handles of one exporter.
    pub fn stats(&self, exporter: &'static str) -> Stats {
        let l = ExporterLabel { exporter };
        Stats {
            exporter,
            sent: self.sent.get_or_create(&l).clone(),
            dropped: self.dropped.get_or_create(&l).clone(),
            errors: self.errors.get_or_create(&l).clone(),
            connected: self.connected.get_or_create(&l).clone(),
            queued: self.queued.get_or_create(&l).clone(),
            link: Arc::new(Mutex::new(Link {
                connected: false,
                reason: Some("not connected yet".into()),
            })),
            changed: self.changed.clone(),
        }
    }
}

/// The connection state an exporter reports to health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Whether the broker is reachable and accepting.
    pub connected: bool,
    /// Why not, in words an operator can act on.
    pub reason: Option<String>,
}

/// One exporter's counters, gauges and link state.
#[derive(Clone, Debug)]
pub struct Stats {
    /// `nats`, `mqtt`, `influx` or `otlp`.
    pub exporter: &'static str,
    /// Items accepted by the broker.
    pub sent: Counter,
    /// Items dropped.
    pub dropped: Counter,
    /// Failed attempts.
    pub errors: Counter,
    connected: Gauge,
    /// Items waiting (set by the queue).
    pub queued: Gauge,
    link: Arc<Mutex<Link>>,
    changed: Arc<watch::Sender<()>>,
}

impl Stats {
    /// Marks the exporter connected (logs the transition).
    pub fn set_connected(&self) {
        let mut link = self.lock();
        if !link.connected {
            tracing::info!(exporter = self.exporter, "connected");
        }
        self.replace(&mut link, Link { connected: true, reason: None });
        self.connected.set(1);
    }

    /// Marks the exporter not connected yet, while it makes its first attempt: not an error
    /// (every exporter starts this way, with every broker up).
    pub fn set_connecting(&self, reason: impl Into<String>) {
        let mut link = self.lock();
        self.replace(&mut link, Link { connected: false, reason: Some(reason.into()) });
        self.connected.set(0);
    }

    /// Marks the exporter not connected for `reason`, a failed connection or send attempt
    /// (logs the transition and counts an error).
    pub fn set_disconnected(&self, reason: impl Into<String>) {
        let reason = reason.into();
        self.errors.inc();
        let mut link = self.lock();
        if link.connected || link.reason.as_deref() != Some(reason.as_str()) {
            tracing::warn!(exporter = self.exporter, %reason, "not connected");
        }
        self.replace(&mut link, Link { connected: false, reason: Some(reason) });
        self.connected.set(0);
    }

    /// Counts `n` items the endpoint rejected (dropped, not retried).
    pub fn rejected(&self, n: u64) {
        self.dropped.inc_by(n);
        self.changed.send_replace(());
    }

    /// Sets the link, waking health when it changed.
    fn replace(&self, link: &mut Link, next: Link) {
        if *link != next {
            *link = next;
            self.changed.send_replace(());
        }
    }

    /// The current link state.
    pub fn link(&self) -> Link {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Link> {
        self.link.lock()
    }
}
