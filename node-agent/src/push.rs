//! The seam to the push exporters: every engine tick becomes one [`PushBatch`].

use parking_lot::Mutex;
use std::time::SystemTime;

use crate::{
    collectors::kernel::KernelReading,
    engine::{Pusher, TargetReport},
    exporters::{AggregatedMetrics, Exporters, KernelSample, PushBatch, TargetSample},
};

/// Hands the engine's reports to the exporters.
pub struct ToExporters {
    exporters: std::sync::Arc<Exporters>,
    node: String,
    kernel: Mutex<Option<KernelSample>>,
}

impl ToExporters {
    /// A pusher for `node`.
    pub fn new(exporters: std::sync::Arc<Exporters>, node: String) -> Self {
        Self { exporters, node, kernel: Mutex::new(None) }
    }
}

/// The batch of one tick; the kernel sample is the latest one read.
pub fn batch(node: &str, kernel: KernelSample, targets: &[TargetReport]) -> PushBatch {
    let targets = targets
        .iter()
        .map(|t| {
            let a = t.aggregates.clone().unwrap_or_default();
            TargetSample {
                node: node.to_owned(),
                namespace: t.key.namespace.clone(),
                pod: t.key.pod.clone(),
                pod_uid: t.uid.clone(),
                container: t.key.container.clone(),
                metrics: t.sample.clone(),
                aggregated: AggregatedMetrics {
                    avg_cpu_usage: a.avg_cpu_usage,
                    max_cpu_usage: a.max_cpu_usage,
                    avg_memory_usage: a.avg_memory_usage.round() as u64,
                    max_memory_usage: a.max_memory_usage,
                    total_disk_read: a.total_disk_read,
                    total_disk_write: a.total_disk_write,
                    total_network_rx: a.total_network_rx,
                    total_network_tx: a.total_network_tx,
                    sample_count: a.sample_count,
                },
                export: t.export.clone(),
            }
        })
        .collect();
    PushBatch { kernel, targets }
}

impl Pusher for ToExporters {
    fn push(&self, kernel: Option<(KernelReading, SystemTime)>, targets: &[TargetReport]) {
        let mut last = self.kernel.lock();
        if let Some((k, at)) = kernel {
            *last = Some(KernelSample {
                context_switches_total: k.context_switches,
                entropy_available_bits: k.entropy_available_bits,
                network_connections_total: k.network_connections,
                timestamp: at,
            });
        }
        let Some(k) = last.clone() else { return };
        self.exporters.push(batch(&self.node, k, targets));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{collectors::process::Aggregates, exporters::ProcessMetrics, metrics::TargetKey};

    #[test]
    fn reports_become_target_samples_with_the_reference_fields() {
        let report = TargetReport {
            key: TargetKey::new("ns", "p", "c"),
            uid: "u1".into(),
            export: Default::default(),
            sample: ProcessMetrics {
                memory_usage_bytes: 42,
                thread_count: 3,
                ..Default::default()
            },
            aggregates: Some(Aggregates {
                avg_memory_usage: 41.6,
                sample_count: 2,
                ..Default::default()
            }),
        };
        let k = KernelSample {
            context_switches_total: 1,
            entropy_available_bits: 256,
            network_connections_total: 3,
            timestamp: SystemTime::UNIX_EPOCH,
        };
        let b = batch("node-1", k, &[report]);
        let t = &b.targets[0];
        assert_eq!(
            (t.node.as_str(), t.pod_uid.as_str(), t.container.as_str()),
            ("node-1", "u1", "c")
        );
        assert_eq!((t.metrics.memory_usage_bytes, t.metrics.thread_count), (42, 3));
        assert_eq!((t.aggregated.avg_memory_usage, t.aggregated.sample_count), (42, 2));
        assert_eq!(b.kernel.entropy_available_bits, 256);
    }
}
