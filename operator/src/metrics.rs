//! The operator's own metrics (`podtrace_operator_*`), one `prometheus-client` registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::{
    counter::Counter, family::Family, gauge::Gauge, histogram::Histogram,
};
use prometheus_client::registry::Registry;
use std::time::Instant;

/// Labels of the reconcile counters: which loop.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `podtrace` (status, finalizer), `nodetrace` (the writer: NodeTraces and
    /// PodTraceProfiles) or `podtraceprofile` (errors of PodTraceProfile writes).
    pub controller: &'static str,
}

/// Labels of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Which loop.
    pub controller: &'static str,
    /// [`crate::Error::metric_label`].
    pub reason: &'static str,
}

/// Labels of the write counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `apply` or `delete`.
    pub op: &'static str,
}

/// Every metric of the operator.
#[derive(Debug)]
pub struct Metrics {
    /// Reconciles run, per controller.
    pub reconciles: Family<ControllerLabels, Counter>,
    /// Failed reconciles, per controller and error reason.
    pub errors: Family<ErrorLabels, Counter>,
    /// Reconcile duration, per controller.
    pub duration: Family<ControllerLabels, Histogram>,
    /// NodeTrace writes (server-side applies and deletes): stays flat while nothing changes.
    pub nodetrace_writes: Family<WriteLabels, Counter>,
    /// PodTraceProfile writes (server-side applies and deletes).
    pub podtraceprofile_writes: Family<WriteLabels, Counter>,
    /// PodTrace status writes.
    pub status_writes: Counter,
    /// Pods in the projected index.
    pub pods_indexed: Gauge,
    /// 1 while this process holds the leader Lease.
    pub leader: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them under `podtrace_operator_`.
    pub fn new() -> (Self, Registry) {
        let mut registry = Registry::with_prefix("podtrace_operator");
        let metrics = Self {
            reconciles: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                    0.001, 2.0, 14,
                ))
            }),
            nodetrace_writes: Family::default(),
            podtraceprofile_writes: Family::default(),
            status_writes: Counter::default(),
            pods_indexed: Gauge::default(),
            leader: Gauge::default(),
        };
        registry.register(
            "reconciles",
            "Reconciles run, per controller",
            metrics.reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles, per controller and reason",
            metrics.errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of a reconcile (a PodTrace, or a batch of NodeTraces)",
            metrics.duration.clone(),
        );
        registry.register(
            "nodetrace_writes",
            "NodeTrace writes (apply: server-side apply of a changed spec; delete)",
            metrics.nodetrace_writes.clone(),
        );
        registry.register(
            "podtraceprofile_writes",
            "PodTraceProfile writes (apply: server-side apply of changed settings; delete)",
            metrics.podtraceprofile_writes.clone(),
        );
        registry.register("status_writes", "PodTrace status writes", metrics.status_writes.clone());
        registry.register(
            "pods_indexed",
            "Pods in the projected pod index",
            metrics.pods_indexed.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            metrics.leader.clone(),
        );
        registry.register_collector(Box::new(podtrace_runtime::alloc::HeapCollector));
        (metrics, registry)
    }

    /// Counts a reconcile of `controller` and times it until the guard drops.
    pub fn reconcile(&self, controller: &'static str) -> ReconcileTimer<'_> {
        self.reconciles.get_or_create(&ControllerLabels { controller }).inc();
        ReconcileTimer { metrics: self, controller, start: Instant::now() }
    }

    /// Counts a failed reconcile.
    pub fn error(&self, controller: &'static str, error: &crate::Error) {
        self.errors.get_or_create(&ErrorLabels { controller, reason: error.metric_label() }).inc();
    }

    /// Counts a NodeTrace write.
    pub fn write(&self, op: &'static str) {
        self.nodetrace_writes.get_or_create(&WriteLabels { op }).inc();
    }

    /// Counts a PodTraceProfile write.
    pub fn profile_write(&self, op: &'static str) {
        self.podtraceprofile_writes.get_or_create(&WriteLabels { op }).inc();
    }
}

/// Observes a reconcile's duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&ControllerLabels { controller: self.controller })
            .observe(self.start.elapsed().as_secs_f64());
    }
}
