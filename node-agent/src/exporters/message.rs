//! The JSON messages the exporters send, built from one interval's [`crate::sample::PushBatch`]. They borrow
//! from the samples: each is the wire format of one consumer (the reference's MQTT message, the
//! NATS messages), not another copy of the data.
//!
//! ```text
//! PushBatch ─┬─ kernel: KernelSample (when read) ──► NATS  {NATS_SUBJECT}        KernelMessage
//!            │                                   ──► Influx podtrace_kernel
//!            └─ targets: [TargetSample]          ──► NATS  {--nats-pod-subject}  PodMessage
//!                 metrics + aggregated           ──► MQTT  {--mqtt-topic}        MqttMessage
//!                 + resources + ebpf + export    ──► Influx podtrace_{cpu,memory,disk,network,process},
//!                                                         podtrace_{resource,latency,bytes}
//! ```
//!
//! The `metrics` and `aggregated` objects have exactly the field names and types of the
//! monitoring-profiles reference, so consumers written for it read podtrace's messages unchanged.
//! podtrace adds `resources` (per cgroup resource: usage, limit, utilization and alert level)
//! and `ebpf` (the probes' latency counts, sums and latest values, and their byte counters);
//! an object whose source did not run for the container is left out. A field the agent was
//! refused (`/proc/<pid>/io`, `fd` or `ns/net` without the capability, see [`crate::gaps`]) is
//! left out of `metrics` and `aggregated` too, and named in `unavailable` (`io`, `fds`,
//! `network`), so that no consumer reads it as 0.

use serde::{Serialize, Serializer};
use std::time::SystemTime;

use crate::sample::{
    AggregatedMetrics, EbpfSample, KernelSample, ProcessMetrics, ResourceSample, TargetSample,
    rfc3339,
};
use std::collections::BTreeMap;

/// The MQTT message: the reference's message JSON (`task_id` is the pod UID, `proplet_id` the
/// node), plus `namespace`, `pod` and `container`, which consumers of the reference ignore and
/// which tell containers of one pod apart.
#[derive(Debug, Serialize)]
pub struct MqttMessage<'a> {
    /// The pod UID.
    pub task_id: &'a str,
    /// The node name.
    pub proplet_id: &'a str,
    /// The pod's namespace.
    pub namespace: &'a str,
    /// The pod's name.
    pub pod: &'a str,
    /// The container's name.
    pub container: &'a str,
    /// What was measured.
    #[serde(flatten)]
    pub measured: Measurements<'a>,
}

impl<'a> From<&'a TargetSample> for MqttMessage<'a> {
    fn from(t: &'a TargetSample) -> Self {
        MqttMessage {
            task_id: &t.pod_uid,
            proplet_id: &t.node,
            namespace: &t.namespace,
            pod: &t.pod,
            container: &t.container,
            measured: Measurements::of(t),
        }
    }
}

/// The NATS message of one target: identity, then the reference's `metrics` and `aggregated`.
#[derive(Debug, Serialize)]
pub struct PodMessage<'a> {
    /// The node name.
    pub node: &'a str,
    /// `--instance-id` / `INSTANCE_ID` of the agent.
    pub instance_id: &'a str,
    /// The pod's namespace.
    pub namespace: &'a str,
    /// The pod's name.
    pub pod: &'a str,
    /// The pod UID.
    pub pod_uid: &'a str,
    /// The container's name.
    pub container: &'a str,
    /// When it was collected.
    #[serde(with = "rfc3339")]
    pub timestamp: SystemTime,
    /// What was measured.
    #[serde(flatten)]
    pub measured: Measurements<'a>,
}

impl<'a> PodMessage<'a> {
    /// The message of `t`, sent by the agent `instance_id`.
    pub fn new(t: &'a TargetSample, instance_id: &'a str) -> Self {
        PodMessage {
            node: &t.node,
            instance_id,
            namespace: &t.namespace,
            pod: &t.pod,
            pod_uid: &t.pod_uid,
            container: &t.container,
            timestamp: t.timestamp,
            measured: Measurements::of(t),
        }
    }
}

/// The objects both pod messages carry after their identity.
#[derive(Debug, Serialize)]
pub struct Measurements<'a> {
    /// The latest sample of its processes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Measured<'a, ProcessMetrics>>,
    /// The aggregates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregated: Option<Measured<'a, AggregatedMetrics>>,
    /// What the agent was refused, left out of `metrics` and `aggregated`.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub unavailable: &'a [&'static str],
    /// The cgroup's resources by type.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: &'a BTreeMap<&'static str, ResourceSample>,
    /// The eBPF probes' series.
    #[serde(skip_serializing_if = "EbpfSample::is_empty")]
    pub ebpf: &'a EbpfSample,
}

impl<'a> Measurements<'a> {
    fn of(t: &'a TargetSample) -> Self {
        let unavailable = &t.unavailable;
        Measurements {
            metrics: t.metrics.as_ref().map(|m| Measured::new(m, unavailable, METRICS_FIELDS)),
            aggregated: t
                .aggregated
                .as_ref()
                .map(|a| Measured::new(a, unavailable, AGGREGATED_FIELDS)),
            unavailable,
            resources: &t.resources,
            ebpf: &t.ebpf,
        }
    }
}

/// The fields of `metrics` each refused `data` leaves out.
const METRICS_FIELDS: &[(&str, &[&str])] = &[
    ("io", &["disk_read_bytes", "disk_write_bytes"]),
    ("network", &["network_rx_bytes", "network_tx_bytes"]),
    ("fds", &["file_descriptor_count"]),
];
/// The fields of `aggregated` each refused `data` leaves out.
const AGGREGATED_FIELDS: &[(&str, &[&str])] = &[
    ("io", &["total_disk_read", "total_disk_write"]),
    ("network", &["total_network_rx", "total_network_tx"]),
];

/// `value` without the fields its refused data (`unavailable`) names in `fields`. Written by
/// hand because serde's `skip_serializing_if` decides per type, not per message.
#[derive(Debug)]
pub struct Measured<'a, T> {
    value: &'a T,
    left_out: Vec<&'static str>,
}

impl<'a, T> Measured<'a, T> {
    fn new(value: &'a T, unavailable: &[&str], fields: &[(&str, &'static [&'static str])]) -> Self {
        let left_out = fields
            .iter()
            .filter(|(data, _)| unavailable.contains(data))
            .flat_map(|(_, f)| f.iter().copied())
            .collect();
        Measured { value, left_out }
    }
}

impl<T: Serialize> Serialize for Measured<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.left_out.is_empty() {
            return self.value.serialize(s);
        }
        // Rare (a node whose agent lacks a capability): the detour through a JSON map is fine.
        let mut v = serde_json::to_value(self.value).map_err(serde::ser::Error::custom)?;
        if let Some(map) = v.as_object_mut() {
            self.left_out.iter().for_each(|f| drop(map.remove(*f)));
        }
        v.serialize(s)
    }
}

/// The NATS message of the node's kernel counters, named as the kernel-metrics reference's
/// Prometheus series so that one vocabulary serves both.
#[derive(Debug, Serialize)]
pub struct KernelMessage<'a> {
    /// `--node-name` / `NODE_NAME`.
    pub node: &'a str,
    /// `--instance-id` / `INSTANCE_ID`.
    pub instance_id: &'a str,
    /// Total context switches.
    pub node_context_switches_total: u64,
    /// Available entropy in bits.
    pub node_entropy_available_bits: u64,
    /// Open network connections.
    pub node_network_connections_total: u64,
    /// When the counters were read.
    #[serde(with = "rfc3339")]
    pub timestamp: SystemTime,
}

impl<'a> KernelMessage<'a> {
    /// The message of `k` for `node`.
    pub fn new(k: &KernelSample, node: &'a str, instance_id: &'a str) -> Self {
        KernelMessage {
            node,
            instance_id,
            node_context_switches_total: k.context_switches_total,
            node_entropy_available_bits: k.entropy_available_bits,
            node_network_connections_total: k.network_connections_total,
            timestamp: k.timestamp,
        }
    }
}

/// A target with the reference's example values, for unit tests.
#[cfg(test)]
pub(crate) fn test_target() -> TargetSample {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_736_937_322);
    TargetSample {
        node: "n1".into(),
        namespace: "ns".into(),
        pod: "p".into(),
        pod_uid: "uid".into(),
        container: "c".into(),
        timestamp: t,
        metrics: Some(ProcessMetrics {
            cpu_usage_percent: 23.5,
            memory_usage_bytes: 52_428_800,
            memory_usage_percent: Some(1.2),
            disk_read_bytes: 1_048_576,
            disk_write_bytes: 524_288,
            network_rx_bytes: 2048,
            network_tx_bytes: 4096,
            uptime_seconds: 45,
            thread_count: 2,
            file_descriptor_count: 8,
            timestamp: t,
        }),
        aggregated: Some(AggregatedMetrics {
            avg_cpu_usage: 38.2,
            max_cpu_usage: 65.0,
            avg_memory_usage: 62_914_560.0,
            max_memory_usage: 71_303_168,
            total_disk_read: 2_097_152,
            total_disk_write: 1_048_576,
            total_network_rx: 12_288,
            total_network_tx: 24_576,
            sample_count: 24,
        }),
        resources: BTreeMap::new(),
        ebpf: EbpfSample::default(),
        export: podtrace_api::presets::Preset::Standard.spec().export,
        unavailable: vec![],
        series: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::time::Duration;

    /// The reference's example message, field for field.
    const REFERENCE: &str = r#"{
      "task_id": "550e8400-e29b-41d4-a716-446655440001",
      "proplet_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
      "metrics": {
        "cpu_usage_percent": 23.5, "memory_usage_bytes": 52428800, "memory_usage_percent": 1.2,
        "disk_read_bytes": 1048576, "disk_write_bytes": 524288, "network_rx_bytes": 2048,
        "network_tx_bytes": 4096, "uptime_seconds": 45, "thread_count": 2,
        "file_descriptor_count": 8, "timestamp": "2025-01-15T10:35:22.123456Z"
      },
      "aggregated": {
        "avg_cpu_usage": 38.2, "max_cpu_usage": 65.0, "avg_memory_usage": 62914560,
        "max_memory_usage": 71303168, "total_disk_read": 2097152, "total_disk_write": 1048576,
        "total_network_rx": 12288, "total_network_tx": 24576, "sample_count": 24
      }
    }"#;

    #[test]
    fn mqtt_message_has_the_reference_shape_plus_identity() {
        #[derive(Deserialize)]
        struct Reference {
            task_id: String,
            proplet_id: String,
            metrics: ProcessMetrics,
            aggregated: AggregatedMetrics,
        }
        let r: Reference = serde_json::from_str(REFERENCE).unwrap();
        let target = TargetSample {
            node: r.proplet_id.clone(),
            namespace: "ns".into(),
            pod: "p".into(),
            pod_uid: r.task_id.clone(),
            container: "c".into(),
            timestamp: r.metrics.timestamp,
            metrics: Some(r.metrics),
            aggregated: Some(r.aggregated),
            resources: BTreeMap::new(),
            ebpf: EbpfSample::default(),
            export: podtrace_api::presets::Preset::Standard.spec().export,
            unavailable: vec![],
            series: Vec::new(),
        };
        let ours = serde_json::to_value(MqttMessage::from(&target)).unwrap();
        let mut reference: serde_json::Value = serde_json::from_str(REFERENCE).unwrap();
        let extra = serde_json::json!({"namespace": "ns", "pod": "p", "container": "c"});
        reference.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        assert_eq!(ours, reference);
    }

    /// What the agent was refused is left out and named, not sent as 0, in both messages.
    #[test]
    fn refused_fields_are_left_out_and_named() {
        let mut t = test_target();
        t.unavailable = vec!["fds", "io"];
        for v in [
            serde_json::to_value(MqttMessage::from(&t)).unwrap(),
            serde_json::to_value(PodMessage::new(&t, "i")).unwrap(),
        ] {
            assert_eq!(v["unavailable"], serde_json::json!(["fds", "io"]), "{v:#}");
            let (m, a) = (v["metrics"].as_object().unwrap(), v["aggregated"].as_object().unwrap());
            for gone in ["disk_read_bytes", "disk_write_bytes", "file_descriptor_count"] {
                assert!(!m.contains_key(gone), "{gone} in {v:#}");
            }
            assert!(!a.contains_key("total_disk_read") && !a.contains_key("total_disk_write"));
            // The rest is still there, with its values.
            assert_eq!((&m["network_rx_bytes"], &m["thread_count"]), (&2048.into(), &2.into()));
            assert_eq!(a["total_network_rx"], 12_288);
        }
        // Nothing refused: no `unavailable` key, every field.
        let v = serde_json::to_value(MqttMessage::from(&test_target())).unwrap();
        assert!(v.get("unavailable").is_none() && v["metrics"]["disk_read_bytes"] == 1_048_576);
    }

    /// Besides the reference's objects, the container's resources with their alert levels and
    /// the eBPF probes' series; objects of sources that did not run are left out.
    #[test]
    fn pod_messages_carry_resources_alert_levels_and_ebpf_series() {
        use crate::sample::{ByteSample, LatencySample};
        let mut t = test_target();
        let memory = ResourceSample {
            usage: 48.0,
            limit: Some(64.0),
            utilization_percent: Some(75.0),
            alert_level: Some(0),
        };
        t.resources.insert("memory", memory);
        t.resources.insert(
            "io",
            ResourceSample {
                usage: 15.0,
                limit: None,
                utilization_percent: None,
                alert_level: None,
            },
        );
        t.ebpf.latencies.push(LatencySample {
            probe: "dns",
            kind: "DNS",
            count: 3,
            sum_seconds: 0.03,
            latest_seconds: 0.012,
        });
        t.ebpf.bytes.push(ByteSample {
            probe: "networkBytes",
            direction: Some("send"),
            operation: None,
            bytes: 1500,
        });
        let want_resources = serde_json::json!({
            "memory": {"usage": 48.0, "limit": 64.0, "utilization_percent": 75.0, "alert_level": 0},
            "io": {"usage": 15.0},
        });
        let want_ebpf = serde_json::json!({
            "latencies": [{"probe": "dns", "type": "DNS", "count": 3, "sum_seconds": 0.03, "latest_seconds": 0.012}],
            "bytes": [{"probe": "networkBytes", "direction": "send", "bytes": 1500}],
        });
        for json in [
            serde_json::to_value(MqttMessage::from(&t)).unwrap(),
            serde_json::to_value(PodMessage::new(&t, "i")).unwrap(),
        ] {
            assert_eq!(json["resources"], want_resources, "{json:#}");
            assert_eq!(json["ebpf"], want_ebpf, "{json:#}");
            assert_eq!(json["metrics"]["thread_count"], 2);
        }
        t.metrics = None;
        t.aggregated = None;
        t.ebpf = EbpfSample::default();
        let json = serde_json::to_value(PodMessage::new(&t, "i")).unwrap();
        assert!(json.get("metrics").is_none() && json.get("aggregated").is_none(), "{json:#}");
        assert!(json.get("ebpf").is_none(), "{json:#}");
        assert_eq!(json["resources"]["memory"]["alert_level"], 0);
    }

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_736_937_322_123_456_789);
        let k = KernelSample {
            context_switches_total: 1,
            entropy_available_bits: 256,
            network_connections_total: 3,
            timestamp: t,
        };
        let json = serde_json::to_value(KernelMessage::new(&k, "n", "i")).unwrap();
        assert_eq!(json["timestamp"], "2025-01-15T10:35:22.123456Z");
    }
}
