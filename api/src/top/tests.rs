use super::*;

const TEXT: &str = "# TYPE podtrace_resource_utilization_percent gauge
podtrace_resource_utilization_percent{resource_type=\"memory\",namespace=\"ns\",pod=\"p\",container=\"c\"} 75.5
podtrace_resource_utilization_percent{resource_type=\"cpu\",namespace=\"ns\",pod=\"p\",container=\"c\"} 91
podtrace_resource_alert_level{resource_type=\"cpu\",namespace=\"ns\",pod=\"p\",container=\"c\"} 2
podtrace_process_network_receive_bytes_total{namespace=\"ns\",pod=\"p\",container=\"c\",pid=\"1\",process_name=\"a \\\"b\\\"\"} 2048
podtrace_process_uptime_seconds{namespace=\"ns\",pod=\"p\",container=\"c\",pid=\"1\",process_name=\"x\"} 5
node_context_switches_total 10
# EOF
";

fn key(ns: &str, pod: &str, c: &str) -> Key {
    (ns.into(), pod.into(), c.into())
}

#[test]
fn rows_collect_each_container_and_render_rates() {
    let r = rows(TEXT);
    let row = &r[&key("ns", "p", "c")];
    assert_eq!(
        (row.cpu_percent, row.memory_percent, row.alert, row.rx, row.processes),
        (Some(91.0), Some(75.5), 2, 2048.0, 1)
    );
    let mut later = r.clone();
    later.get_mut(&key("ns", "p", "c")).unwrap().rx = 4096.0;
    let table = render(&later, Some((&r, 2.0)));
    assert!(table.contains("CRIT"), "{table}");
    assert!(table.contains("1.0KiB"), "{table}");
    assert!(render(&BTreeMap::new(), None).contains("no targets yet"));
}

#[test]
fn ebpf_network_bytes_win_over_proc_net_dev_and_sum_over_processes() {
    let text = format!(
        "{TEXT}podtrace_network_bytes_total{{namespace=\"ns\",pod=\"p\",container=\"c\",type=\"NET\",process_name=\"a\",direction=\"recv\"}} 100\n\
         podtrace_network_bytes_total{{namespace=\"ns\",pod=\"p\",container=\"c\",type=\"NET\",process_name=\"b\",direction=\"recv\"}} 50\n\
         podtrace_network_bytes_total{{namespace=\"ns\",pod=\"p\",container=\"c\",type=\"NET\",process_name=\"a\",direction=\"send\"}} 7\n"
    );
    let row = &rows(&text)[&key("ns", "p", "c")];
    assert_eq!((row.rx, row.tx), (150.0, 7.0));
}

/// `_bucket` lines of `family` for one series: `counts[k]` observations in the k-th bucket
/// (0.0001 s × 2^k), the rest in +Inf.
fn buckets(family: &str, labels: &str, counts: &[f64]) -> String {
    let mut out = String::new();
    let mut cumulative = 0.0;
    for k in 0..20 {
        cumulative += counts.get(k).copied().unwrap_or(0.0);
        let le = 0.0001 * f64::from(1u32 << k);
        out += &format!("{family}_bucket{{{labels},le=\"{le}\"}} {cumulative}\n");
    }
    cumulative += counts.get(20).copied().unwrap_or(0.0);
    out += &format!("{family}_bucket{{{labels},le=\"+Inf\"}} {cumulative}\n");
    out += &format!("{family}_count{{{labels}}} {cumulative}\n");
    out
}

#[test]
fn latency_columns_sum_a_containers_series_and_show_p50_p99() {
    let c = "namespace=\"ns\",pod=\"p\",container=\"c\"";
    // RTT: two processes, 50 observations each in (0.8, 1.6] ms and (1.6, 3.2] ms.
    let mut text = buckets(
        "podtrace_rtt_seconds",
        &format!("{c},type=\"NET\",process_name=\"a\""),
        &[0., 0., 0., 0., 50.],
    );
    text += &buckets(
        "podtrace_rtt_seconds",
        &format!("{c},type=\"NET\",process_name=\"b\""),
        &[0., 0., 0., 0., 0., 50.],
    );
    // fs: read and write together, 100 in the first bucket.
    text += &buckets(
        "podtrace_fs_latency_seconds_histogram",
        &format!("{c},type=\"read\",process_name=\"a\""),
        &[60.],
    );
    text += &buckets(
        "podtrace_fs_latency_seconds_histogram",
        &format!("{c},type=\"write\",process_name=\"a\""),
        &[40.],
    );
    let r = rows(&text);
    let row = &r[&key("ns", "p", "c")];
    let rtt = &row.latency[&Latency::Rtt];
    assert_eq!(rtt.count(), 100.0);
    // p50: rank 50 is the last of the first 50, at 1.6 ms; p99: 0.0016 + 0.0016 × 49/50.
    assert!((rtt.quantile(0.5).unwrap() - 0.0016).abs() < 1e-12);
    assert!((rtt.quantile(0.99).unwrap() - 0.003168).abs() < 1e-12);
    assert_eq!(row.latency[&Latency::Fs].count(), 100.0);
    assert!(!row.latency.contains_key(&Latency::Dns));
    let table = render(&r, None);
    let line = table.lines().nth(1).unwrap();
    assert!(line.contains("1.6ms/3.2ms"), "{table}");
    assert!(line.contains("50µs/99µs"), "{table}");
    assert!(table.lines().next().unwrap().contains("OFFCPU p50/p99"), "{table}");

    // The next refresh: 10 more RTTs, all in (3.2, 6.4] ms: the window shows only those.
    let mut later_text = buckets(
        "podtrace_rtt_seconds",
        &format!("{c},type=\"NET\",process_name=\"a\""),
        &[0., 0., 0., 0., 50., 0., 10.],
    );
    later_text += &buckets(
        "podtrace_rtt_seconds",
        &format!("{c},type=\"NET\",process_name=\"b\""),
        &[0., 0., 0., 0., 0., 50.],
    );
    let later = rows(&later_text);
    let table = render(&later, Some((&r, 2.0)));
    assert!(table.lines().nth(1).unwrap().contains("4.8ms/6.4ms"), "{table}");
}

#[test]
fn durations_print_short() {
    assert_eq!(seconds(0.000085), "85µs");
    assert_eq!(seconds(0.0012), "1.2ms");
    assert_eq!(seconds(3.4), "3.40s");
}

/// `/metrics` of a real agent: `make demo` (standalone, on its web and batch cgroups, probes
/// tcpRtt, tcpConnect, networkBytes, fsLatency, fsBytes, cpuBlock), read after 20 s.
const DEMO: &str = include_str!("testdata/standalone-demo.metrics");

#[test]
fn a_real_agents_metrics_give_the_quantiles_histogram_quantile_gives() {
    let r = rows(DEMO);
    let web = &r[&key("demo", "demo-app", "web")];
    // Each histogram's total is its `_count` line; p50 and p99 as an independent
    // histogram_quantile (PromQL's algorithm, in Python) computed them from the same text.
    let expected = [
        (Latency::Rtt, 8433.0, 5.00296630280019e-05, 9.905873279544376e-05),
        (Latency::Connect, 937.0, 5.005341880341881e-05, 9.910576923076923e-05),
        (Latency::OffCpu, 6285.0, 9.079745738225947e-05, 0.023660507614213178),
    ];
    for (latency, count, p50, p99) in expected {
        let h = &web.latency[&latency];
        assert_eq!(h.count(), count, "{latency:?}");
        assert!((h.quantile(0.5).unwrap() - p50).abs() < 1e-12, "{latency:?} p50");
        assert!((h.quantile(0.99).unwrap() - p99).abs() < 1e-12, "{latency:?} p99");
    }
    assert!(!web.latency.contains_key(&Latency::Dns), "the demo's profile has no dns probe");
    let table = render(&r, None);
    let line = table.lines().find(|l| l.contains(" web ")).unwrap();
    assert!(line.contains("50µs/99µs"), "{table}");
    assert!(line.contains("91µs/23.7ms"), "{table}");
}
