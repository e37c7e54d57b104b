//! `podtrace-agent top`: a refreshing table per pod and container, read from the agent's own
//! `/metrics` (so it shows exactly what Prometheus sees).
//!
//! Columns: CPU % of the CPU limit (of one CPU without a limit: the processes' sum), memory % of
//! the limit, the highest alert level, network receive/transmit bytes per second (between two
//! refreshes), processes. The eBPF latency columns join once the probes export their series.

use std::{collections::BTreeMap, fmt::Write, time::Instant};

/// One row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    /// CPU utilization of the limit, or the processes' CPU % without one.
    pub cpu_percent: Option<f64>,
    /// Memory utilization of the limit.
    pub memory_percent: Option<f64>,
    /// Memory bytes.
    pub memory_bytes: Option<f64>,
    /// Highest alert level over the resources.
    pub alert: u8,
    /// Network bytes received (cumulative, largest over the processes).
    pub rx: f64,
    /// Network bytes transmitted.
    pub tx: f64,
    /// Bytes received by the container's sockets as the networkBytes eBPF probe counts them
    /// (loopback included).
    pub ebpf_rx: f64,
    /// Bytes sent, as the networkBytes probe counts them.
    pub ebpf_tx: f64,
    /// Processes seen.
    pub processes: usize,
    /// Sum of the processes' CPU %.
    pub process_cpu: f64,
}

/// (namespace, pod, container).
pub type Key = (String, String, String);

/// Parses `name{labels} value` lines into a label map; `None` for comments and other lines.
pub fn parse_line(line: &str) -> Option<(&str, BTreeMap<&str, String>, f64)> {
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        Some((n, rest)) => (n, rest.strip_suffix('}')?),
        None => (head, ""),
    };
    let mut map = BTreeMap::new();
    let mut rest = labels;
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"")?;
        let mut v = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => v.push('\n'),
                    c => v.push(c),
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => v.push(c),
            }
        }
        map.insert(k.trim_start_matches(','), v);
        rest = after.get(end? + 1..)?.trim_start_matches(',');
    }
    Some((name, map, value))
}

/// The rows of a `/metrics` text.
pub fn rows(text: &str) -> BTreeMap<Key, Row> {
    let mut out: BTreeMap<Key, Row> = BTreeMap::new();
    for (name, labels, value) in text.lines().filter_map(parse_line) {
        let (Some(ns), Some(pod), Some(c)) =
            (labels.get("namespace"), labels.get("pod"), labels.get("container"))
        else {
            continue;
        };
        let row = out.entry((ns.clone(), pod.clone(), c.clone())).or_default();
        let resource = labels.get("resource_type").map(String::as_str);
        match (name, resource) {
            ("podtrace_resource_utilization_percent", Some("cpu")) => row.cpu_percent = Some(value),
            ("podtrace_resource_utilization_percent", Some("memory")) => {
                row.memory_percent = Some(value)
            }
            ("podtrace_resource_usage_bytes", Some("memory")) => row.memory_bytes = Some(value),
            ("podtrace_resource_alert_level", _) => row.alert = row.alert.max(value as u8),
            ("podtrace_process_network_receive_bytes_total", _) => row.rx = row.rx.max(value),
            ("podtrace_process_network_transmit_bytes_total", _) => row.tx = row.tx.max(value),
            ("podtrace_network_bytes_total", _) => {
                match labels.get("direction").map(String::as_str) {
                    Some("recv") => row.ebpf_rx += value,
                    Some("send") => row.ebpf_tx += value,
                    _ => {}
                }
            }
            ("podtrace_process_uptime_seconds", _) => row.processes += 1,
            ("podtrace_process_cpu_usage_percent", _) => row.process_cpu += value,
            _ => {}
        }
    }
    // The eBPF counters see every socket of the cgroup, loopback included, where /proc's
    // net/dev sees the namespace's interfaces but lo: prefer them when the probe runs.
    for row in out.values_mut() {
        if row.ebpf_rx + row.ebpf_tx > 0.0 {
            (row.rx, row.tx) = (row.ebpf_rx, row.ebpf_tx);
        }
    }
    out
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

fn bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1}{}", UNITS[u])
}

/// Renders the table; `previous` (rows and when) gives the network rates.
pub fn render(now: &BTreeMap<Key, Row>, previous: Option<(&BTreeMap<Key, Row>, f64)>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<16} {:<24} {:<16} {:>7} {:>7} {:>10} {:>5} {:>11} {:>11} {:>5}",
        "NAMESPACE",
        "POD",
        "CONTAINER",
        "CPU%",
        "MEM%",
        "MEM",
        "ALERT",
        "NET RX/s",
        "NET TX/s",
        "PROCS"
    );
    for (key, r) in now {
        let rate = |f: fn(&Row) -> f64| match previous.and_then(|(p, dt)| Some((p.get(key)?, dt))) {
            Some((p, dt)) if dt > 0.0 => bytes(((f(r) - f(p)) / dt).max(0.0)),
            _ => "-".into(),
        };
        let cpu = r.cpu_percent.or((r.processes > 0).then_some(r.process_cpu));
        let _ = writeln!(
            s,
            "{:<16} {:<24} {:<16} {:>7} {:>7} {:>10} {:>5} {:>11} {:>11} {:>5}",
            key.0,
            key.1,
            key.2,
            pct(cpu),
            pct(r.memory_percent),
            r.memory_bytes.map_or("-".into(), bytes),
            ["ok", "WARN", "CRIT", "EMERG"][r.alert.min(3) as usize],
            rate(|r| r.rx),
            rate(|r| r.tx),
            r.processes
        );
    }
    if now.is_empty() {
        s.push_str("(no targets yet)\n");
    }
    s
}

/// Fetches `/metrics` from `endpoint` (e.g. `http://127.0.0.1:3000`).
pub async fn fetch(
    http: &reqwest::Client,
    endpoint: &str,
    token: Option<&str>,
) -> Result<String, reqwest::Error> {
    let mut req = http.get(format!("{}/metrics", endpoint.trim_end_matches('/')));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await?.error_for_status()?.text().await
}

/// Runs the live view until Ctrl-C (or once, with `once`).
pub async fn run(
    endpoint: &str,
    token: Option<&str>,
    ca_file: Option<&std::path::Path>,
    every: std::time::Duration,
    once: bool,
) -> crate::Result<()> {
    let http_err = |source| crate::Error::Http { endpoint: endpoint.to_owned(), source };
    let mut http = reqwest::Client::builder();
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|source| crate::Error::Read { path: path.to_owned(), source })?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(http_err)? {
            http = http.add_root_certificate(cert);
        }
    }
    let http = http.build().map_err(http_err)?;
    let mut previous: Option<(BTreeMap<Key, Row>, Instant)> = None;
    loop {
        let text = fetch(&http, endpoint, token).await.map_err(http_err)?;
        let now = rows(&text);
        let prev = previous.as_ref().map(|(r, at)| (r, at.elapsed().as_secs_f64()));
        let table = render(&now, prev);
        if once {
            print!("{table}");
            return Ok(());
        }
        print!(
            "\x1b[2J\x1b[H podtrace-agent top — {endpoint} — every {:?} — Ctrl-C to quit\n\n{table}",
            every
        );
        previous = Some((now, Instant::now()));
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn lines_parse_with_escaped_label_values() {
        let (name, labels, v) = parse_line("m{a=\"x\\\"y\",b=\"\"} 1.5").unwrap();
        assert_eq!((name, labels["a"].as_str(), labels["b"].as_str(), v), ("m", "x\"y", "", 1.5));
        assert_eq!(parse_line("up 1").unwrap().0, "up");
        assert!(parse_line("# HELP x").is_none());
        assert!(parse_line("broken{a=\"1} 2").is_none());
    }

    #[test]
    fn rows_collect_each_container_and_render_rates() {
        let r = rows(TEXT);
        let row = &r[&("ns".into(), "p".into(), "c".into())];
        assert_eq!(
            (row.cpu_percent, row.memory_percent, row.alert, row.rx, row.processes),
            (Some(91.0), Some(75.5), 2, 2048.0, 1)
        );
        let mut later = r.clone();
        later.get_mut(&("ns".into(), "p".into(), "c".into())).unwrap().rx = 4096.0;
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
        let row = &rows(&text)[&("ns".into(), "p".into(), "c".into())];
        assert_eq!((row.rx, row.tx), (150.0, 7.0));
    }
}
