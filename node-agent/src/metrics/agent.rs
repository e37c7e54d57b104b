//! The agent's own metrics, `podtrace_agent_*`, in a `prometheus-client` registry.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use std::time::Duration;

use super::sources::Source;

/// Labels of the per-source metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// The metric source (`resource`, `process`, `kernel`, `ebpf`).
    pub source: Source,
}

/// Labels of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The metric source or subsystem.
    pub source: String,
    /// A short reason: `not_found`, `permission_denied`, `parse`, `io`, `config`, `kubernetes`.
    pub reason: String,
}

/// Labels of the target-state gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// `attached` or `pending`.
    pub state: String,
}

/// Labels of the data-unavailable gauge (see [`crate::gaps`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GapLabels {
    /// The metric source whose data is missing.
    pub source: &'static str,
    /// What cannot be read.
    pub data: &'static str,
    /// Why.
    pub reason: &'static str,
}

/// The self-metrics.
#[derive(Clone)]
pub struct AgentMetrics {
    /// Targets (containers) by state.
    pub targets: Family<StateLabels, Gauge>,
    /// Duration of one collection of one source over all due targets.
    pub collection_seconds: Family<SourceLabels, Histogram>,
    /// Duration of encoding `/metrics`.
    pub scrape_seconds: Histogram,
    /// Collection and configuration errors.
    pub errors: Family<ErrorLabels, Counter>,
    /// Series currently exported.
    pub series: Gauge,
    /// Series dropped by maxSeriesPerPod.
    pub series_dropped: Counter,
    /// Configuration reloads (standalone file or NodeTrace changes) applied.
    pub config_reloads: Counter,
    /// 1 per kind of data the agent cannot read (a capability or the host PID namespace missing).
    pub data_unavailable: Family<GapLabels, Gauge>,
}

impl AgentMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let buckets = || {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.0001, 2.0, 16,
            ))
        };
        let m = Self {
            targets: Family::default(),
            collection_seconds: Family::new_with_constructor(buckets),
            scrape_seconds: buckets(),
            errors: Family::default(),
            series: Gauge::default(),
            series_dropped: Counter::default(),
            config_reloads: Counter::default(),
            data_unavailable: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("podtrace_agent");
        r.register("targets", "Traced containers by state (attached, pending)", m.targets.clone());
        r.register(
            "collection_duration_seconds",
            "Time one collection of a source over its due targets took",
            m.collection_seconds.clone(),
        );
        r.register(
            "scrape_duration_seconds",
            "Time encoding /metrics took",
            m.scrape_seconds.clone(),
        );
        r.register(
            "errors",
            "Collection and configuration errors by source and reason",
            m.errors.clone(),
        );
        r.register("series", "Series currently exported by the collectors", m.series.clone());
        r.register(
            "series_dropped",
            "Series dropped because a pod exceeded its maxSeriesPerPod budget (counted per collection)",
            m.series_dropped.clone(),
        );
        r.register(
            "config_reloads",
            "Configuration changes applied without restart",
            m.config_reloads.clone(),
        );
        r.register(
            "data_unavailable",
            "1 per kind of data the agent cannot read, by source, data and reason (pid_namespace: not in the host's PID namespace; permission_denied: a capability is missing); the series of that data are left out, not exported as 0",
            m.data_unavailable.clone(),
        );
        r.register_collector(Box::new(podtrace_runtime::alloc::HeapCollector));
        m
    }

    /// Sets the gauge of `gap` (1 while it lasts; its series is removed when it is gone).
    pub fn set_gap(&self, gap: &crate::gaps::Gap, present: bool) {
        let labels = GapLabels { source: gap.source, data: gap.data, reason: gap.reason };
        if present {
            self.data_unavailable.get_or_create(&labels).set(1);
        } else {
            self.data_unavailable.remove(&labels);
        }
    }

    /// Observes how long one collection of `source` over its due targets took.
    pub fn observe(&self, source: Source, took: Duration) {
        self.collection_seconds.get_or_create(&SourceLabels { source }).observe(took.as_secs_f64());
    }

    /// Counts an error of `source` (a metric source, or a subsystem: `config`, `status`) with
    /// `reason`.
    pub fn error(&self, source: &str, reason: &str) {
        self.errors
            .get_or_create(&ErrorLabels { source: source.into(), reason: reason.into() })
            .inc();
    }
}
