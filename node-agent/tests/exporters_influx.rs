//! The Influx exporter against a real InfluxDB 1.x (Debian's `influxdb`: HTTP `/write` and its
//! UDP service) and a TCP line listener (what Telegraf's `socket_listener` is).

mod exporters_support;

use exporters_support::*;
use podtrace_agent::exporters::line_protocol;
use podtrace_agent::sample::{KernelSample, TargetSample};
use serde_json::Value;
use std::{collections::BTreeMap, time::Duration};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpListener,
    sync::mpsc,
};

/// Under `exporters::` so that `cargo test -p podtrace-agent exporters` selects them.
mod exporters {
    use super::*;

    async fn influxql(port: u16, db: &str, q: &str) -> Value {
        let url = format!("http://127.0.0.1:{port}/query");
        let params = [("db", db), ("q", q), ("epoch", "ns")];
        let text = reqwest::Client::new()
            .post(url)
            .form(&params)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v["results"][0].get("error").is_none(), "{q}: {v}");
        v
    }

    /// Rows of the first series of `q` as column name → value maps.
    async fn rows(port: u16, db: &str, q: &str) -> Vec<BTreeMap<String, Value>> {
        let v = influxql(port, db, q).await;
        let Some(series) = v["results"][0]["series"].as_array() else { return Vec::new() };
        let mut out = Vec::new();
        for s in series {
            let columns: Vec<String> = s["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().into())
                .collect();
            for row in s["values"].as_array().unwrap() {
                out.push(
                    columns.iter().cloned().zip(row.as_array().unwrap().iter().cloned()).collect(),
                );
            }
        }
        out
    }

    fn nanos(t: std::time::SystemTime) -> u64 {
        t.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn influx_http_write_stores_typed_fields_nanosecond_timestamps_and_hostile_tag_values() {
        let broker = Broker::influx();
        influxql(broker.port, "", "CREATE DATABASE podtrace").await;
        let mut a = args();
        a.influx_url = Some(format!("http://127.0.0.1:{}/write?db=podtrace", broker.port));
        let (exporters, registry) = start(&a);
        wait_until("Influx reachable", Duration::from_secs(10), || exporters.health().serving())
            .await;
        assert_eq!(export_errors(&registry, "influx"), 0.0, "connecting is not an error");

        let mut b = batch(7, 4);
        let hostile = [
            ("name space", r#"p,o=d"x\y"#, "c=1 2", r#"u"id\ x"#),
            ("a\\b", "tab\there", "x\\,y=z", "\\"),
            ("ns", "trailing\\", "app", "plain"),
        ];
        for (t, (namespace, pod, container, uid)) in b.targets[1..].iter_mut().zip(hostile) {
            (t.namespace, t.pod, t.container, t.pod_uid) =
                (namespace.into(), pod.into(), container.into(), uid.into());
        }
        let targets = b.targets.clone();
        exporters.push(b);
        wait_until("points written", Duration::from_secs(10), || {
            let h = exporters.health().exporters[0].clone();
            assert_eq!(h.dropped, 0, "{h:?}");
            h.sent == 5
        })
        .await;

        let stored = rows(broker.port, "podtrace", "SELECT * FROM podtrace_process").await;
        assert_eq!(stored.len(), 4, "{stored:#?}");
        for (t, row) in targets.iter().zip(&stored) {
            // The one value line protocol 1.x cannot spell: a trailing backslash.
            let pod = if t.pod == "trailing\\" { "trailing\\ ".to_owned() } else { t.pod.clone() };
            let m = t.metrics.as_ref().unwrap();
            assert_eq!(row["time"], nanos(m.timestamp), "nanosecond timestamp");
            assert_eq!(row["pod"], pod.as_str());
            assert_eq!(row["namespace"], t.namespace.as_str());
            assert_eq!(row["container"], t.container.as_str());
            assert_eq!(row["node"], "node-1");
            assert_eq!(
                row["pod_uid"],
                t.pod_uid.as_str(),
                "string field with quotes and backslashes"
            );
            assert_eq!(row["thread_count"], m.thread_count);
            assert_eq!(row["uptime_seconds"], 7);
        }

        let types = rows(broker.port, "podtrace", "SHOW FIELD KEYS FROM podtrace_memory").await;
        let types: BTreeMap<_, _> = types
            .iter()
            .map(|r| (r["fieldKey"].as_str().unwrap(), r["fieldType"].as_str().unwrap()))
            .collect();
        assert_eq!(types["usage_bytes"], "integer");
        assert_eq!(types["usage_percent"], "float");
        let cpu =
            rows(broker.port, "podtrace", "SELECT count(usage_percent) FROM podtrace_cpu").await;
        assert_eq!(cpu[0]["count"], 4);

        // The cgroup resources with their alert levels, and the eBPF series, as points of
        // their own.
        let memory = "SELECT * FROM podtrace_resource WHERE resource_type = 'memory'";
        let memory = rows(broker.port, "podtrace", memory).await;
        assert_eq!(memory.len(), 4, "{memory:#?}");
        for (i, (t, row)) in targets.iter().zip(&memory).enumerate() {
            let want = t.resources["memory"];
            assert_eq!(row["alert_level"], i as u64 % 4, "{row:?}");
            assert_eq!(row["utilization_percent"], want.utilization_percent.unwrap(), "{row:?}");
            assert_eq!(row["limit"], 2_000_000.0, "{row:?}");
            assert_eq!(row["container"], t.container.as_str());
        }
        let types = rows(broker.port, "podtrace", "SHOW FIELD KEYS FROM podtrace_resource").await;
        let types: BTreeMap<_, _> = types
            .iter()
            .map(|r| (r["fieldKey"].as_str().unwrap(), r["fieldType"].as_str().unwrap()))
            .collect();
        assert_eq!((types["alert_level"], types["utilization_percent"]), ("integer", "float"));
        let cpu = "SELECT count(usage) FROM podtrace_resource WHERE resource_type = 'cpu'";
        assert_eq!(rows(broker.port, "podtrace", cpu).await[0]["count"], 4);
        let dns = rows(broker.port, "podtrace", "SELECT * FROM podtrace_latency").await;
        assert_eq!(dns.len(), 4, "{dns:#?}");
        assert_eq!((&dns[0]["probe"], &dns[0]["type"]), (&Value::from("dns"), &Value::from("DNS")));
        assert_eq!(
            (&dns[0]["count"], &dns[0]["sum_seconds"]),
            (&Value::from(7), &Value::from(0.07))
        );
        let sent = rows(broker.port, "podtrace", "SELECT * FROM podtrace_bytes").await;
        assert_eq!(sent.len(), 4, "{sent:#?}");
        for (t, row) in targets.iter().zip(&sent) {
            assert_eq!(
                (&row["probe"], &row["direction"]),
                (&Value::from("networkBytes"), &Value::from("send"))
            );
            assert_eq!(row["bytes"], t.ebpf.bytes[0].bytes);
        }

        let kernel = rows(broker.port, "podtrace", "SELECT * FROM podtrace_kernel").await;
        assert_eq!(kernel.len(), 1);
        assert_eq!(
            (&kernel[0]["node"], &kernel[0]["instance_id"], &kernel[0]["context_switches_total"]),
            (&Value::from("node-1"), &Value::from("agent-1"), &Value::from(1007))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn influx_udp_service_stores_every_point_of_batches_split_into_datagrams() {
        let broker = Broker::influx();
        let mut a = args();
        a.influx_url = Some(format!("udp://127.0.0.1:{}", broker.udp_port));
        let (exporters, _registry) = start(&a);
        wait_until("UDP socket ready", Duration::from_secs(10), || exporters.health().serving())
            .await;
        for seq in 0..2 {
            exporters.push(batch(seq, 50));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        wait_until("sent", Duration::from_secs(10), || exporters.health().exporters[0].sent == 102)
            .await;
        let count = |q: &'static str| {
            let port = broker.port;
            async move {
                let r = rows(port, "udp", q).await;
                r.first().map_or(0, |r| r["count"].as_u64().unwrap())
            }
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let n = count("SELECT count(thread_count) FROM podtrace_process").await;
            if n == 100 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{n} of 100 points stored");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(count("SELECT count(usage_percent) FROM podtrace_cpu").await, 100);
        assert_eq!(count("SELECT count(entropy_available_bits) FROM podtrace_kernel").await, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn influx_outage_over_http_keeps_the_newest_items_counts_the_dropped_ones_and_recovers() {
        let mut broker = Broker::influx();
        influxql(broker.port, "", "CREATE DATABASE podtrace").await;
        const BOUND: usize = 6;
        let mut a = args();
        a.influx_url = Some(format!("http://127.0.0.1:{}/write?db=podtrace", broker.port));
        a.export_queue_size = BOUND;
        let (exporters, _registry) = start(&a);
        let health = || exporters.health().exporters[0].clone();
        wait_until("Influx reachable", Duration::from_secs(10), || health().connected).await;

        exporters.push(batch(0, 2));
        wait_until("batch 0 written", Duration::from_secs(10), || health().sent == 3).await;
        broker.kill();
        // Four intervals away: 12 items (2 targets + the kernel line each) for a queue of 6.
        for seq in 1..=4 {
            exporters.push(batch(seq, 2));
            assert!(health().queued <= BOUND, "memory stays bounded");
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let h = health();
        assert!(!h.connected, "{h:?}");
        assert_eq!((h.dropped, h.sent), (12 - BOUND as u64, 3));
        assert!(h.queued <= BOUND);

        broker.start();
        wait_until("backlog written", Duration::from_secs(15), || health().sent == 3 + 6).await;
        assert!(health().connected);
        assert_eq!((health().queued, health().dropped), (0, 6));
        let stored =
            rows(broker.port, "podtrace", "SELECT uptime_seconds FROM podtrace_process").await;
        let seqs: Vec<u64> = stored.iter().map(|r| r["uptime_seconds"].as_u64().unwrap()).collect();
        assert_eq!(seqs, [0, 0, 3, 3, 4, 4], "batch 0, then the newest two batches");
        let kernel =
            rows(broker.port, "podtrace", "SELECT context_switches_total FROM podtrace_kernel")
                .await;
        let kernel: Vec<u64> =
            kernel.iter().map(|r| r["context_switches_total"].as_u64().unwrap()).collect();
        assert_eq!(kernel, [1000, 1003, 1004]);
    }

    fn lines_of(targets: &[TargetSample], kernel: &KernelSample) -> Vec<String> {
        let mut out = String::new();
        for t in targets {
            line_protocol::encode_target(&mut out, t);
        }
        line_protocol::encode_kernel(&mut out, kernel, "node-1", "agent-1");
        out.lines().map(str::to_owned).collect()
    }

    /// A TCP line listener: every received line goes to the channel; stops when aborted.
    fn listen(
        listener: TcpListener,
        tx: mpsc::UnboundedSender<String>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let tx = tx.clone();
                conns.spawn(async move {
                    let mut lines = BufReader::new(stream).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let _ = tx.send(line);
                    }
                });
            }
        })
    }

    async fn take_lines(rx: &mut mpsc::UnboundedReceiver<String>, n: usize) -> Vec<String> {
        let mut got = Vec::new();
        while got.len() < n {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(l)) => got.push(l),
                _ => panic!("received {} of {n} lines: {got:#?}", got.len()),
            }
        }
        if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
            panic!("unexpected extra line {extra}");
        }
        got
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn influx_tcp_listener_receives_exact_lines_and_the_exporter_reconnects_after_a_restart()
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let server = listen(listener, tx.clone());

        let mut a = args();
        a.influx_url = Some(format!("tcp://127.0.0.1:{port}"));
        let (exporters, _registry) = start(&a);
        let health = || exporters.health().exporters[0].clone();
        wait_until("connected", Duration::from_secs(10), || health().connected).await;

        let b0 = batch(0, 3);
        let want0 = lines_of(&b0.targets, b0.kernel.as_ref().unwrap());
        // Per target: five /proc lines, two resources, a latency and a byte counter.
        assert_eq!(want0.len(), 3 * (5 + 2 + 1 + 1) + 1);
        exporters.push(b0);
        assert_eq!(take_lines(&mut rx, want0.len()).await, want0);

        server.abort(); // the listener and its connections close
        let _ = server.await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let b1 = batch(1, 2);
        let want1 = lines_of(&b1.targets, b1.kernel.as_ref().unwrap());
        exporters.push(b1);
        wait_until("disconnected", Duration::from_secs(10), || !health().connected).await;

        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let _server = listen(listener, tx);
        assert_eq!(take_lines(&mut rx, want1.len()).await, want1);
        wait_until("connected again", Duration::from_secs(10), || health().connected).await;
        assert_eq!((health().sent, health().dropped), (4 + 3, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn influx_refused_credentials_show_in_health_and_keep_the_points_queued() {
        let broker = Broker::influx_with_auth();
        let admin = "CREATE USER admin WITH PASSWORD 's3cret' WITH ALL PRIVILEGES";
        influxql(broker.port, "", admin).await;
        let url = format!("http://127.0.0.1:{}/query?u=admin&p=s3cret", broker.port);
        let created = reqwest::Client::new()
            .post(url)
            .form(&[("q", "CREATE DATABASE podtrace")])
            .send()
            .await
            .unwrap();
        assert!(created.status().is_success());

        let write =
            |p: &str| format!("http://127.0.0.1:{}/write?db=podtrace&u=admin&p={p}", broker.port);
        let mut a = args();
        a.influx_url = Some(write("wrong"));
        let (exporters, _registry) = start(&a);
        exporters.push(batch(0, 2));
        wait_until("the refusal in health", Duration::from_secs(10), || {
            let h = exporters.health().exporters[0].clone();
            h.reason.is_some_and(|r| r.contains("refused the credentials"))
        })
        .await;
        let h = exporters.health().exporters[0].clone();
        assert!(!h.reason.as_deref().unwrap().contains("wrong"), "no password in health: {h:?}");
        assert_eq!(
            (h.connected, h.sent, h.dropped, h.queued),
            (false, 0, 0, 3),
            "kept, not dropped"
        );
        drop(exporters);

        a.influx_url = Some(write("s3cret"));
        let (exporters, _registry) = start(&a);
        exporters.push(batch(0, 2));
        wait_until("written", Duration::from_secs(10), || {
            exporters.health().exporters[0].sent == 3
        })
        .await;
    }
}
