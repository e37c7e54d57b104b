//! Influx line protocol, written by hand.
//!
//! Why not the `influxdb-line-protocol` crate: its builder escapes backslashes in measurements
//! and tag values as `\\`, which InfluxDB 1.x (and Telegraf's 1.x-compatible parsers) do *not*
//! unescape, so a name with a backslash would be stored with two; it also writes every character
//! through `fmt`, where this module appends slices and uses `itoa`/`ryu` for numbers (the
//! encoding cost is measured in `bench/exporters`). The rules below are InfluxDB 1.x's
//! (<https://docs.influxdata.com/influxdb/v1/write_protocols/line_protocol_reference/#special-characters>,
//! parser: `models/points.go` `unescapeTag`/`unescapeStringField`):
//!
//! ```text
//! podtrace_cpu,container=app,namespace=shop,node=n1,pod=web-0 usage_percent=23.5,avg_usage=38.2,max_usage=65.0 1736937322123456000
//! └ measurement ┘└─────────── tags, sorted by key ─────────────┘└──────────── fields ───────────────────────┘ └ nanoseconds ───┘
//! ```
//!
//! - measurement: `,` and space escaped with `\`;
//! - tag values: `,` `=` and space escaped; backslashes are written as they are (1.x keeps them
//!   literally: the value `a\b` is written `a\b`, the value `x\,y` is written `x\\,y`), except
//!   that a value cannot end with one, because 1.x reads any separator right after a backslash
//!   as escaped: such a value gets an escaped space appended (stored with one trailing space,
//!   instead of a rejected line);
//!   newlines and carriage returns, which end a line whatever the escaping, become spaces;
//!   empty tag values are left out (line protocol has no empty tag);
//! - fields: integers with an `i` suffix (saturated at `i64::MAX`), floats in shortest
//!   round-trip form (NaN and infinities are not representable and are left out), strings in
//!   double quotes with `"` and `\` escaped.

use crate::sample::{KernelSample, TargetSample};
use std::time::{SystemTime, UNIX_EPOCH};

/// The measurements of a target's processes (the reference's metrics), one line each.
pub const TARGET_MEASUREMENTS: [&str; 5] =
    ["podtrace_cpu", "podtrace_memory", "podtrace_disk", "podtrace_network", "podtrace_process"];
/// A cgroup resource of a target, one line per `resource_type` tag.
pub const RESOURCE_MEASUREMENT: &str = "podtrace_resource";
/// An eBPF latency of a target, one line per `probe` and `type` tag.
pub const LATENCY_MEASUREMENT: &str = "podtrace_latency";
/// An eBPF byte counter of a target, one line per `probe` and `direction` or `operation` tag.
pub const BYTES_MEASUREMENT: &str = "podtrace_bytes";
/// The measurement of the node's kernel counters.
pub const KERNEL_MEASUREMENT: &str = "podtrace_kernel";

/// Appends the lines of one target to `out`: five for its processes (when the process source
/// ran), one per cgroup resource, one per eBPF latency and byte counter.
pub fn encode_target(out: &mut String, t: &TargetSample) {
    let ts = nanos(t.timestamp);
    // Tags sorted by key, as InfluxDB stores them (it sorts them otherwise on every write).
    let tags = |out: &mut String, measurement: &str, extra: &[(&str, &str)]| {
        escape_measurement(out, measurement);
        let base = [
            ("container", t.container.as_str()),
            ("namespace", &t.namespace),
            ("node", &t.node),
            ("pod", &t.pod),
        ];
        if extra.is_empty() {
            base.iter().for_each(|(k, v)| tag(out, k, v));
        } else {
            let mut all = base.to_vec();
            all.extend_from_slice(extra);
            all.sort_by_key(|(k, _)| *k);
            all.iter().for_each(|(k, v)| tag(out, k, v));
        }
    };
    if let (Some(m), Some(a)) = (&t.metrics, &t.aggregated) {
        // What the agent was refused is left out (a line left without fields goes), never 0.
        let refused = |data: &str| t.unavailable.contains(&data);
        let mut line = Line::start(out, |o| tags(o, TARGET_MEASUREMENTS[0], &[]));
        line.float("usage_percent", m.cpu_usage_percent);
        line.float("avg_usage", a.avg_cpu_usage);
        line.float("max_usage", a.max_cpu_usage);
        line.end(ts);

        let mut line = Line::start(out, |o| tags(o, TARGET_MEASUREMENTS[1], &[]));
        line.int("usage_bytes", m.memory_usage_bytes);
        if let Some(percent) = m.memory_usage_percent {
            line.float("usage_percent", percent);
        }
        line.int("avg_usage_bytes", a.avg_memory_usage.round() as u64);
        line.int("max_usage_bytes", a.max_memory_usage);
        line.end(ts);

        let mut line = Line::start(out, |o| tags(o, TARGET_MEASUREMENTS[2], &[]));
        if !refused("io") {
            line.int("read_bytes", m.disk_read_bytes);
            line.int("write_bytes", m.disk_write_bytes);
            line.int("total_read_bytes", a.total_disk_read);
            line.int("total_write_bytes", a.total_disk_write);
        }
        line.end(ts);

        let mut line = Line::start(out, |o| tags(o, TARGET_MEASUREMENTS[3], &[]));
        if !refused("network") {
            line.int("rx_bytes", m.network_rx_bytes);
            line.int("tx_bytes", m.network_tx_bytes);
            line.int("total_rx_bytes", a.total_network_rx);
            line.int("total_tx_bytes", a.total_network_tx);
        }
        line.end(ts);

        let mut line = Line::start(out, |o| tags(o, TARGET_MEASUREMENTS[4], &[]));
        line.int("uptime_seconds", m.uptime_seconds);
        line.int("thread_count", m.thread_count);
        if !refused("fds") {
            line.int("file_descriptor_count", m.file_descriptor_count);
        }
        line.int("sample_count", a.sample_count);
        line.string("pod_uid", &t.pod_uid);
        line.end(ts);
    }
    for (resource, r) in &t.resources {
        let mut line =
            Line::start(out, |o| tags(o, RESOURCE_MEASUREMENT, &[("resource_type", resource)]));
        line.float("usage", r.usage);
        if let Some(limit) = r.limit {
            line.float("limit", limit);
        }
        if let Some(u) = r.utilization_percent {
            line.float("utilization_percent", u);
        }
        if let Some(level) = r.alert_level {
            line.int("alert_level", u64::from(level));
        }
        line.end(ts);
    }
    for l in &t.ebpf.latencies {
        let extra = [("probe", l.probe), ("type", l.kind)];
        let mut line = Line::start(out, |o| tags(o, LATENCY_MEASUREMENT, &extra));
        line.int("count", l.count);
        line.float("sum_seconds", l.sum_seconds);
        line.float("latest_seconds", l.latest_seconds);
        line.end(ts);
    }
    for b in &t.ebpf.bytes {
        let mut extra = vec![("probe", b.probe)];
        extra.extend(b.direction.map(|d| ("direction", d)));
        extra.extend(b.operation.map(|o| ("operation", o)));
        let mut line = Line::start(out, |o| tags(o, BYTES_MEASUREMENT, &extra));
        line.int("bytes", b.bytes);
        line.end(ts);
    }
}

/// Appends the line of the node's kernel counters to `out`.
pub fn encode_kernel(out: &mut String, k: &KernelSample, node: &str, instance_id: &str) {
    let mut line = Line::start(out, |o| {
        escape_measurement(o, KERNEL_MEASUREMENT);
        tag(o, "node", node);
    });
    line.int("context_switches_total", k.context_switches_total);
    line.int("entropy_available_bits", k.entropy_available_bits);
    line.int("network_connections_total", k.network_connections_total);
    line.string("instance_id", instance_id);
    line.end(nanos(k.timestamp));
}

/// Nanoseconds since the Unix epoch (0 before it, which no sample is).
fn nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// A line being written: tracks whether a field was written (a line needs at least one, and
/// fields are separated by commas).
struct Line<'a> {
    out: &'a mut String,
    start: usize,
    fields: usize,
}

impl<'a> Line<'a> {
    fn start(out: &'a mut String, head: impl FnOnce(&mut String)) -> Self {
        let start = out.len();
        head(out);
        Line { out, start, fields: 0 }
    }

    fn key(&mut self, key: &str) {
        self.out.push(if self.fields == 0 { ' ' } else { ',' });
        self.fields += 1;
        // Field keys are constants of this module: plain ASCII, nothing to escape.
        self.out.push_str(key);
        self.out.push('=');
    }

    fn int(&mut self, key: &str, v: u64) {
        self.key(key);
        let mut buf = itoa::Buffer::new();
        self.out.push_str(buf.format(v.min(i64::MAX as u64)));
        self.out.push('i');
    }

    fn float(&mut self, key: &str, v: f64) {
        if !v.is_finite() {
            return;
        }
        self.key(key);
        let mut buf = ryu::Buffer::new();
        self.out.push_str(buf.format_finite(v));
    }

    fn string(&mut self, key: &str, v: &str) {
        self.key(key);
        self.out.push('"');
        for c in v.chars() {
            if c == '"' || c == '\\' {
                self.out.push('\\');
            }
            self.out.push(c);
        }
        self.out.push('"');
    }

    /// Ends the line with its timestamp, or removes it when no field could be written.
    fn end(self, ts: i64) {
        if self.fields == 0 {
            self.out.truncate(self.start);
            return;
        }
        self.out.push(' ');
        let mut buf = itoa::Buffer::new();
        self.out.push_str(buf.format(ts));
        self.out.push('\n');
    }
}

/// Writes a measurement name: `,` and space escaped.
pub fn escape_measurement(out: &mut String, name: &str) {
    escape(out, name, &[',', ' ']);
}

/// Writes `,key=value` unless `value` is empty.
fn tag(out: &mut String, key: &str, value: &str) {
    if value.is_empty() {
        return;
    }
    out.push(',');
    out.push_str(key);
    out.push('=');
    escape(out, value, &[',', '=', ' ']);
}

/// Escapes `special` characters with a backslash; see the module documentation for backslashes
/// and line breaks.
fn escape(out: &mut String, value: &str, special: &[char]) {
    if !value.contains(|c: char| special.contains(&c) || matches!(c, '\\' | '\n' | '\r')) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\n' | '\r' => out.push_str("\\ "),
            c if special.contains(&c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    if value.ends_with('\\') {
        // The separator after it would read as escaped (1.x checks the previous byte only).
        out.push_str("\\ ");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{AggregatedMetrics, ProcessMetrics};
    use std::time::Duration;

    fn target(namespace: &str, pod: &str, container: &str) -> TargetSample {
        TargetSample {
            node: "n1".into(),
            namespace: namespace.into(),
            pod: pod.into(),
            pod_uid: "u\"1\\".into(),
            container: container.into(),
            timestamp: UNIX_EPOCH + Duration::from_nanos(1_736_937_322_123_456_789),
            metrics: Some(ProcessMetrics {
                cpu_usage_percent: 23.5,
                memory_usage_bytes: 52_428_800,
                memory_usage_percent: Some(1.2),
                disk_read_bytes: 1,
                disk_write_bytes: 2,
                network_rx_bytes: 3,
                network_tx_bytes: 4,
                uptime_seconds: 45,
                thread_count: 2,
                file_descriptor_count: 8,
                timestamp: UNIX_EPOCH + Duration::from_nanos(1_736_937_322_123_456_789),
            }),
            aggregated: Some(AggregatedMetrics {
                avg_cpu_usage: 38.2,
                max_cpu_usage: 65.0,
                avg_memory_usage: 62_914_560.0,
                max_memory_usage: u64::MAX,
                total_disk_read: 5,
                total_disk_write: 6,
                total_network_rx: 7,
                total_network_tx: 8,
                sample_count: 24,
            }),
            resources: Default::default(),
            ebpf: Default::default(),
            export: podtrace_api::presets::Preset::Standard.spec().export,
            unavailable: vec![],
            series: Vec::new(),
        }
    }

    #[test]
    fn a_target_becomes_one_typed_line_per_source_with_nanosecond_timestamps() {
        let mut out = String::new();
        encode_target(&mut out, &target("shop", "web-0", "app"));
        let tags = "container=app,namespace=shop,node=n1,pod=web-0";
        let ts = "1736937322123456789";
        let expected = [
            format!("podtrace_cpu,{tags} usage_percent=23.5,avg_usage=38.2,max_usage=65.0 {ts}"),
            format!(
                "podtrace_memory,{tags} usage_bytes=52428800i,usage_percent=1.2,\
                 avg_usage_bytes=62914560i,max_usage_bytes=9223372036854775807i {ts}"
            ),
            format!(
                "podtrace_disk,{tags} read_bytes=1i,write_bytes=2i,total_read_bytes=5i,\
                 total_write_bytes=6i {ts}"
            ),
            format!(
                "podtrace_network,{tags} rx_bytes=3i,tx_bytes=4i,total_rx_bytes=7i,\
                 total_tx_bytes=8i {ts}"
            ),
            format!(
                "podtrace_process,{tags} uptime_seconds=45i,thread_count=2i,\
                 file_descriptor_count=8i,sample_count=24i,pod_uid=\"u\\\"1\\\\\" {ts}"
            ),
        ];
        assert_eq!(out.lines().collect::<Vec<_>>(), expected);
    }

    /// Refused data is left out: the disk line goes (no field left), the descriptor count goes,
    /// the rest stays.
    #[test]
    fn refused_data_is_left_out_not_written_as_zero() {
        let mut t = target("shop", "web-0", "app");
        t.unavailable = vec!["fds", "io"];
        let mut out = String::new();
        encode_target(&mut out, &t);
        assert!(!out.contains("podtrace_disk,"), "{out}");
        assert!(!out.contains("file_descriptor_count"), "{out}");
        assert!(out.contains("podtrace_network,") && out.contains("thread_count=2i"), "{out}");
    }

    #[test]
    fn resources_latencies_and_bytes_are_lines_of_their_own_with_sorted_tags() {
        use crate::sample::{ByteSample, LatencySample, ResourceSample};
        let mut t = target("shop", "web-0", "app");
        t.metrics = None;
        t.aggregated = None;
        let memory = ResourceSample {
            usage: 48.0,
            limit: Some(64.0),
            utilization_percent: Some(75.0),
            alert_level: Some(1),
        };
        t.resources.insert("memory", memory);
        t.resources.insert(
            "cpu",
            ResourceSample {
                usage: 1e6,
                limit: None,
                utilization_percent: None,
                alert_level: None,
            },
        );
        t.ebpf.latencies.push(LatencySample {
            probe: "fsLatency",
            kind: "fsync",
            count: 2,
            sum_seconds: 0.5,
            latest_seconds: 0.25,
        });
        let bytes =
            ByteSample { probe: "fsBytes", direction: None, operation: Some("write"), bytes: 4096 };
        t.ebpf.bytes.push(bytes);
        let mut out = String::new();
        encode_target(&mut out, &t);
        let ts = "1736937322123456789";
        let expected = [
            format!(
                "podtrace_resource,container=app,namespace=shop,node=n1,pod=web-0,resource_type=cpu usage=1000000.0 {ts}"
            ),
            format!(
                "podtrace_resource,container=app,namespace=shop,node=n1,pod=web-0,resource_type=memory usage=48.0,limit=64.0,utilization_percent=75.0,alert_level=1i {ts}"
            ),
            format!(
                "podtrace_latency,container=app,namespace=shop,node=n1,pod=web-0,probe=fsLatency,type=fsync count=2i,sum_seconds=0.5,latest_seconds=0.25 {ts}"
            ),
            format!(
                "podtrace_bytes,container=app,namespace=shop,node=n1,operation=write,pod=web-0,probe=fsBytes bytes=4096i {ts}"
            ),
        ];
        assert_eq!(out.lines().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn hostile_tag_values_are_escaped() {
        let mut out = String::new();
        tag(&mut out, "pod", r#"a b,c=d"e\f"#);
        assert_eq!(out, r#",pod=a\ b\,c\=d"e\f"#);
        out.clear();
        tag(&mut out, "pod", "end\\");
        assert_eq!(out, r",pod=end\\ ", "a trailing backslash cannot be spelled");
        out.clear();
        tag(&mut out, "pod", "x\\,y\nz");
        assert_eq!(out, r",pod=x\\,y\ z");
        out.clear();
        tag(&mut out, "pod", r"two\\ and\\");
        assert_eq!(out, r",pod=two\\\ and\\\ ");
        out.clear();
        tag(&mut out, "pod", "");
        assert_eq!(out, "");
        out.clear();
        escape_measurement(&mut out, "my meas,x=y");
        assert_eq!(out, r"my\ meas\,x=y");
    }

    #[test]
    fn non_finite_floats_are_left_out_and_empty_tags_omitted() {
        let mut t = target("ns", "p", "");
        t.metrics.as_mut().unwrap().cpu_usage_percent = f64::NAN;
        t.aggregated.as_mut().unwrap().avg_cpu_usage = f64::INFINITY;
        let mut out = String::new();
        encode_target(&mut out, &t);
        let first = out.lines().next().unwrap();
        assert_eq!(
            first,
            "podtrace_cpu,namespace=ns,node=n1,pod=p max_usage=65.0 1736937322123456789"
        );
        t.aggregated.as_mut().unwrap().max_cpu_usage = f64::NAN;
        out.clear();
        encode_target(&mut out, &t);
        assert!(out.starts_with("podtrace_memory,"), "a line with no field is left out: {out}");
    }

    #[test]
    fn kernel_line_carries_the_node_tag_and_instance() {
        let k = KernelSample {
            context_switches_total: 10,
            entropy_available_bits: 256,
            network_connections_total: 3,
            timestamp: UNIX_EPOCH + Duration::from_secs(1),
        };
        let mut out = String::new();
        encode_kernel(&mut out, &k, "node 1", "i-1");
        assert_eq!(
            out,
            "podtrace_kernel,node=node\\ 1 context_switches_total=10i,entropy_available_bits=256i,\
             network_connections_total=3i,instance_id=\"i-1\" 1000000000\n"
        );
    }
}
