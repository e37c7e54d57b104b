//! The OTLP metrics data of a queued item: the target's `/metrics` series as OpenTelemetry
//! metrics, under a resource that names the pod.
//!
//! ```text
//! ResourceMetrics  service.name=podtrace-agent, k8s.node.name, k8s.namespace.name,
//!  │               k8s.pod.name, k8s.pod.uid, k8s.container.name (when not empty)
//!  └ ScopeMetrics "podtrace-agent"
//!     └ Metric per family, named as on /metrics (`podtrace_…`, `node_…`), description = HELP,
//!       no unit (the names already carry it, and a unit would make Prometheus' OTLP
//!       translation append it again)
//!        Gauge      gauges and the untyped alias        NumberDataPoint per label set
//!        Sum        counters: cumulative, monotonic     NumberDataPoint per label set
//!        Histogram  histograms: cumulative, the kernel's bounds, per-bucket counts
//! ```
//!
//! The data point attributes are the series' labels without `namespace`, `pod` and `container`,
//! which are the resource's. What the agent was refused is not in the series (the collectors
//! leave it out), so it is not sent either. The start time of the cumulative points is left
//! unset (0): the counters are the kernel's and `/proc`'s, which started before the agent saw
//! them, and OTLP allows an unknown start.

use crate::{
    metrics::{
        Labels, Sample,
        catalog::{FAMILIES, FamilyId, Kind},
    },
    sample::{KernelSample, TargetSample},
};
use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    metrics::v1::{
        AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point,
    },
    resource::v1::Resource,
};
use std::time::{SystemTime, UNIX_EPOCH};

/// `service.name` of every resource.
pub const SERVICE_NAME: &str = "podtrace-agent";

/// Labels that are resource attributes, not data point attributes.
const RESOURCE_LABELS: [&str; 3] = ["namespace", "pod", "container"];

/// One request holding every item's resource.
pub fn request(
    resources: impl IntoIterator<Item = ResourceMetrics>,
) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest { resource_metrics: resources.into_iter().collect() }
}

/// The resource metrics of one target: its series under the pod's resource.
pub fn target(t: &TargetSample) -> ResourceMetrics {
    let mut attributes = vec![
        attribute("service.name", SERVICE_NAME),
        attribute("k8s.node.name", &t.node),
        attribute("k8s.namespace.name", &t.namespace),
        attribute("k8s.pod.name", &t.pod),
    ];
    if !t.pod_uid.is_empty() {
        attributes.push(attribute("k8s.pod.uid", &t.pod_uid));
    }
    if !t.container.is_empty() {
        attributes.push(attribute("k8s.container.name", &t.container));
    }
    resource_metrics(attributes, &t.series, nanos(t.timestamp))
}

/// The resource metrics of the node's kernel counters, under the node's resource.
pub fn kernel(k: &KernelSample, node: &str) -> ResourceMetrics {
    let attributes =
        vec![attribute("service.name", SERVICE_NAME), attribute("k8s.node.name", node)];
    let series = crate::collectors::kernel::samples(k);
    resource_metrics(attributes, &series, nanos(k.timestamp))
}

fn resource_metrics(attributes: Vec<KeyValue>, series: &[Sample], time: u64) -> ResourceMetrics {
    let scope = InstrumentationScope {
        name: SERVICE_NAME.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    ResourceMetrics {
        resource: Some(Resource { attributes, ..Default::default() }),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(scope),
            metrics: metrics(series, time),
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

/// One metric per family of `series`, in the order the families first appear.
pub fn metrics(series: &[Sample], time: u64) -> Vec<Metric> {
    let mut families: Vec<FamilyId> = Vec::new();
    for s in series {
        if !families.contains(&s.family) {
            families.push(s.family);
        }
    }
    families
        .into_iter()
        .map(|f| {
            let of_family = series.iter().filter(|s| s.family == f);
            let family = &FAMILIES[f];
            let data = match family.kind {
                Kind::Gauge | Kind::Untyped => {
                    Data::Gauge(Gauge { data_points: numbers(of_family, time) })
                }
                Kind::Counter => Data::Sum(Sum {
                    data_points: numbers(of_family, time),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                }),
                Kind::Histogram => Data::Histogram(Histogram {
                    data_points: histograms(of_family, time),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                }),
            };
            Metric {
                name: family.name.into(),
                description: family.help.into(),
                data: Some(data),
                ..Default::default()
            }
        })
        .collect()
}

fn numbers<'a>(series: impl Iterator<Item = &'a Sample>, time: u64) -> Vec<NumberDataPoint> {
    series
        .map(|s| NumberDataPoint {
            attributes: attributes(&s.labels),
            time_unix_nano: time,
            value: Some(number_data_point::Value::AsDouble(s.value)),
            ..Default::default()
        })
        .collect()
}

/// Histogram points from the `_bucket` (cumulative, `le` last), `_sum` and `_count` lines of
/// each label set, which the collectors write together: OTLP wants the finite bounds and the
/// count of each bucket on its own (the last one is the +Inf bucket).
fn histograms<'a>(series: impl Iterator<Item = &'a Sample>, time: u64) -> Vec<HistogramDataPoint> {
    let mut points: Vec<HistogramDataPoint> = Vec::new();
    // The label set of the point being built, and its cumulative count so far.
    let mut open: Option<(Vec<KeyValue>, f64)> = None;
    for s in series {
        let mut attrs = attributes(&s.labels);
        let le = if s.suffix == "_bucket" {
            attrs.iter().position(|a| a.key == "le").map(|i| attrs.remove(i))
        } else {
            None
        };
        if open.as_ref().is_none_or(|(a, _)| *a != attrs) {
            points.push(HistogramDataPoint {
                attributes: attrs.clone(),
                time_unix_nano: time,
                ..Default::default()
            });
            open = Some((attrs, 0.0));
        }
        let (Some(point), Some((_, below))) = (points.last_mut(), open.as_mut()) else {
            continue;
        };
        match s.suffix {
            "_bucket" => {
                let bound = le.as_ref().and_then(string_value).unwrap_or_default();
                if bound != "+Inf" {
                    point.explicit_bounds.push(bound.parse().unwrap_or(f64::INFINITY));
                }
                point.bucket_counts.push((s.value - *below).max(0.0) as u64);
                *below = s.value;
            }
            "_sum" => point.sum = Some(s.value),
            "_count" => point.count = s.value as u64,
            _ => {}
        }
    }
    points
}

/// The series' labels as attributes, without the resource's.
fn attributes(labels: &Labels) -> Vec<KeyValue> {
    labels
        .pairs()
        .filter(|(name, _)| !RESOURCE_LABELS.contains(name))
        .map(|(name, value)| attribute(name, &value))
        .collect()
}

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

fn string_value(kv: &KeyValue) -> Option<&str> {
    match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

/// Nanoseconds since the Unix epoch.
fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{TargetKey, catalog};

    fn labels(extra: &[(&str, &str)]) -> Labels {
        let mut l = TargetKey::new("shop", "web-0", "app").labels();
        for (k, v) in extra {
            l.push(k, v);
        }
        l
    }

    fn value(kv: &[KeyValue], key: &str) -> Option<String> {
        kv.iter().find(|a| a.key == key).and_then(string_value).map(str::to_owned)
    }

    #[test]
    fn a_target_is_a_resource_named_for_its_pod_with_its_series_as_typed_metrics() {
        let mut t = crate::exporters::message::test_target();
        t.series = vec![
            Sample::new(catalog::PROCESS_THREADS, labels(&[("pid", "7")]), 2.0),
            Sample::new(catalog::PROCESS_DISK_READ, labels(&[("pid", "7")]), 4096.0),
            Sample::new(catalog::PROCESS_THREADS, labels(&[("pid", "8")]), 1.0),
        ];
        let rm = target(&t);
        let attrs = &rm.resource.as_ref().unwrap().attributes;
        for (k, v) in [
            ("service.name", "podtrace-agent"),
            ("k8s.node.name", "n1"),
            ("k8s.namespace.name", "ns"),
            ("k8s.pod.name", "p"),
            ("k8s.pod.uid", "uid"),
            ("k8s.container.name", "c"),
        ] {
            assert_eq!(value(attrs, k).as_deref(), Some(v), "{k}");
        }
        let metrics = &rm.scope_metrics[0].metrics;
        assert_eq!(metrics.len(), 2, "one metric per family");
        assert_eq!(metrics[0].name, "podtrace_process_threads");
        assert_eq!(metrics[0].unit, "");
        let Some(Data::Gauge(g)) = &metrics[0].data else { panic!("{:?}", metrics[0]) };
        assert_eq!(g.data_points.len(), 2);
        let p = &g.data_points[1];
        assert_eq!(p.value, Some(number_data_point::Value::AsDouble(1.0)));
        assert_eq!(value(&p.attributes, "pid").as_deref(), Some("8"));
        assert_eq!(p.attributes.len(), 1, "namespace, pod, container are the resource's");
        assert_eq!(p.time_unix_nano, 1_736_937_322_000_000_000);
        let Some(Data::Sum(s)) = &metrics[1].data else { panic!("{:?}", metrics[1]) };
        assert_eq!(metrics[1].name, "podtrace_process_disk_read_bytes_total");
        assert!(s.is_monotonic);
        assert_eq!(s.aggregation_temporality, AggregationTemporality::Cumulative as i32);
        assert_eq!(s.data_points[0].value, Some(number_data_point::Value::AsDouble(4096.0)));
    }

    #[test]
    fn histogram_lines_become_one_point_with_per_bucket_counts_and_the_same_bounds() {
        let mut series = Vec::new();
        for (process, scale) in [("a", 1.0), ("b", 2.0)] {
            let l = labels(&[("type", "NET"), ("process_name", process)]);
            for (le, cumulative) in [("0.001", 1.0), ("0.002", 3.0), ("+Inf", 4.0)] {
                let mut b = l.clone();
                b.push("le", le);
                series.push(Sample::histogram(catalog::RTT, "_bucket", b, cumulative * scale));
            }
            series.push(Sample::histogram(catalog::RTT, "_sum", l.clone(), 0.5 * scale));
            series.push(Sample::histogram(catalog::RTT, "_count", l, 4.0 * scale));
        }
        let metrics = metrics(&series, 1);
        assert_eq!(metrics.len(), 1);
        let Some(Data::Histogram(h)) = &metrics[0].data else { panic!("{metrics:?}") };
        assert_eq!(h.data_points.len(), 2, "one point per label set");
        let b = &h.data_points[1];
        assert_eq!(b.explicit_bounds, [0.001, 0.002]);
        assert_eq!(b.bucket_counts, [2, 4, 2]);
        assert_eq!((b.count, b.sum), (8, Some(1.0)));
        assert_eq!(value(&b.attributes, "process_name").as_deref(), Some("b"));
        assert!(value(&b.attributes, "le").is_none());
    }

    #[test]
    fn the_kernel_counters_are_the_nodes_resource() {
        let k = KernelSample {
            context_switches_total: 10,
            entropy_available_bits: 256,
            network_connections_total: 3,
            timestamp: UNIX_EPOCH,
        };
        let rm = kernel(&k, "node-1");
        let attrs = &rm.resource.as_ref().unwrap().attributes;
        assert_eq!(value(attrs, "k8s.node.name").as_deref(), Some("node-1"));
        assert!(value(attrs, "k8s.pod.name").is_none());
        let names: Vec<&str> =
            rm.scope_metrics[0].metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "node_context_switches_total",
                "node_entropy_available_bits",
                "node_network_connections_total"
            ]
        );
    }
}
