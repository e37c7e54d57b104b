//! Shared by the exporter tests: real brokers and receivers (Debian's nats-server, mosquitto,
//! influxd; Prometheus with its OTLP receiver and an OpenTelemetry Collector, both built from
//! their Go modules by e2e/scripts/build-tools.sh) started on free loopback ports with a config in a temporary directory, killed when dropped (and by a
//! watchdog if the test process dies first), plus batches whose values identify them.

#![allow(dead_code, reason = "each test binary uses a different part of this module")]

use podtrace_agent::exporters::{ExporterArgs, Exporters};
use podtrace_agent::sample::{
    AggregatedMetrics, ByteSample, EbpfSample, KernelSample, LatencySample, ProcessMetrics,
    PushBatch, ResourceSample, TargetSample,
};
use podtrace_api::profile::ExportSettings;
use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// A free TCP port on 127.0.0.1 (also free for UDP in practice).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; panics with `what` then.
pub async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A unique temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let unique = format!(
            "podtrace-{name}-{}-{}-{}",
            std::process::id(),
            SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Which broker.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Nats,
    Mosquitto,
    Influx,
    /// Prometheus with its OTLP receiver (`/api/v1/otlp/v1/metrics`).
    Prometheus,
    /// An OpenTelemetry Collector: OTLP/gRPC in (`port`), OTLP/HTTP out to a Prometheus.
    Otelcol,
}

/// The resource attributes Prometheus makes labels of (`k8s_pod_name`…). Its translation keeps
/// the metric names as they are (no unit or `_total` suffix added: ours carry them).
const PROMETHEUS_OTLP: &str = "otlp:\n  promote_resource_attributes: [k8s.namespace.name, \
    k8s.pod.name, k8s.pod.uid, k8s.container.name, k8s.node.name]\n  translation_strategy: \
    UnderscoreEscapingWithoutSuffixes\n";

/// A broker process with its config in a temporary directory.
pub struct Broker {
    pub kind: Kind,
    /// The port clients use (HTTP for Influx).
    pub port: u16,
    /// Influx's UDP line-protocol port; the OTLP/HTTP port of a Collector with TLS.
    pub udp_port: u16,
    pub dir: TempDir,
    child: Option<Child>,
    config: PathBuf,
}

impl Broker {
    /// nats-server with JetStream (file store in the temp dir).
    pub fn nats() -> Self {
        Self::nats_with("")
    }

    /// nats-server that only accepts `user`/`password`.
    pub fn nats_with_user(user: &str, password: &str) -> Self {
        Self::nats_with(&format!("authorization {{ user: {user:?}, password: {password:?} }}\n"))
    }

    fn nats_with(extra: &str) -> Self {
        let dir = TempDir::new("nats");
        let port = free_port();
        let config = dir.0.join("nats.conf");
        let js = dir.0.join("js");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\nwrite_deadline: \"500ms\"\n\
                 jetstream {{ store_dir: {js:?} }}\n{extra}"
            ),
        )
        .unwrap();
        Self::launch(Kind::Nats, port, 0, dir, config)
    }

    /// mosquitto with persistence (saved on every change) and, when `users` is given, a password
    /// file with those users and no anonymous access.
    pub fn mosquitto(users: Option<&[(&str, &str)]>) -> Self {
        Self::mosquitto_with(users, false)
    }

    /// mosquitto that saves its sessions on every change, so that a persistent subscriber's
    /// subscription survives a SIGKILL (too slow for heavy traffic: it rewrites its database).
    pub fn mosquitto_persistent() -> Self {
        Self::mosquitto_with(None, true)
    }

    fn mosquitto_with(users: Option<&[(&str, &str)]>, persistent: bool) -> Self {
        let dir = TempDir::new("mosquitto");
        // Started as root, mosquitto drops to its own user, which must be able to save there.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).unwrap();
        let port = free_port();
        let config = dir.0.join("mosquitto.conf");
        let mut text = format!("listener {port} 127.0.0.1\nmax_queued_messages 100000\n");
        if persistent {
            text.push_str(&format!(
                "persistence true\npersistence_location {}/\nautosave_interval 1\n\
                 autosave_on_changes true\n",
                dir.0.display()
            ));
        }
        match users {
            None => text.push_str("allow_anonymous true\n"),
            Some(users) => {
                let file = dir.0.join("passwords");
                for (i, (user, password)) in users.iter().enumerate() {
                    let mut cmd = Command::new("mosquitto_passwd");
                    cmd.arg("-b");
                    if i == 0 {
                        cmd.arg("-c");
                    }
                    let ok = cmd.arg(&file).arg(user).arg(password).status().unwrap().success();
                    assert!(ok, "mosquitto_passwd failed");
                }
                text.push_str(&format!(
                    "allow_anonymous false\npassword_file {}\n",
                    file.display()
                ));
            }
        }
        std::fs::write(&config, text).unwrap();
        Self::launch(Kind::Mosquitto, port, 0, dir, config)
    }

    /// influxd 1.x with HTTP and a UDP listener writing to database `udp`.
    pub fn influx() -> Self {
        Self::influx_with(false)
    }

    /// influxd 1.x with authentication on (the first user must be created as an admin).
    pub fn influx_with_auth() -> Self {
        Self::influx_with(true)
    }

    fn influx_with(auth: bool) -> Self {
        let dir = TempDir::new("influx");
        let (port, udp_port, rpc) = (free_port(), free_port(), free_port());
        let d = dir.0.display();
        let config = dir.0.join("influxdb.conf");
        std::fs::write(
            &config,
            format!(
                "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n\
                 [meta]\n  dir = \"{d}/meta\"\n\
                 [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
                 [monitor]\n  store-enabled = false\n\
                 [continuous_queries]\n  enabled = false\n\
                 [http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n\
                 auth-enabled = {auth}\n\
                 [[udp]]\n  enabled = true\n  bind-address = \"127.0.0.1:{udp_port}\"\n\
                 database = \"udp\"\n  batch-size = 100\n  batch-timeout = \"50ms\"\n"
            ),
        )
        .unwrap();
        Self::launch(Kind::Influx, port, udp_port, dir, config)
    }

    /// Prometheus with its OTLP receiver on, storing in the temporary directory (kept across
    /// restarts).
    pub fn prometheus() -> Self {
        let dir = TempDir::new("prometheus");
        let config = dir.0.join("prometheus.yml");
        std::fs::write(&config, PROMETHEUS_OTLP).unwrap();
        Self::launch(Kind::Prometheus, free_port(), 0, dir, config)
    }

    /// An OpenTelemetry Collector receiving OTLP/gRPC on `port` and exporting to the OTLP
    /// receiver of the Prometheus on `prometheus_port`.
    pub fn otelcol(prometheus_port: u16) -> Self {
        let port = free_port();
        let receivers = format!("grpc: {{endpoint: \"127.0.0.1:{port}\"}}");
        Self::otelcol_with(prometheus_port, port, 0, &receivers)
    }

    /// A Collector whose OTLP receivers, gRPC on `port` and HTTP on `udp_port`, serve TLS with
    /// `cert` and `key` and require a client certificate signed by `client_ca` (mutual TLS).
    pub fn otelcol_tls(prometheus_port: u16, cert: &Path, key: &Path, client_ca: &Path) -> Self {
        let (port, http_port) = (free_port(), free_port());
        let tls = format!(
            "tls: {{cert_file: \"{}\", key_file: \"{}\", client_ca_file: \"{}\"}}",
            cert.display(),
            key.display(),
            client_ca.display()
        );
        let receivers = format!(
            "grpc: {{endpoint: \"127.0.0.1:{port}\", {tls}}}\n      \
             http: {{endpoint: \"127.0.0.1:{http_port}\", {tls}}}"
        );
        Self::otelcol_with(prometheus_port, port, http_port, &receivers)
    }

    fn otelcol_with(prometheus_port: u16, port: u16, http_port: u16, receivers: &str) -> Self {
        let dir = TempDir::new("otelcol");
        let config = dir.0.join("otelcol.yaml");
        std::fs::write(
            &config,
            format!(
                "receivers:\n  otlp:\n    protocols:\n      {receivers}\n\
                 exporters:\n  otlp_http:\n    metrics_endpoint: \
                 \"http://127.0.0.1:{prometheus_port}/api/v1/otlp/v1/metrics\"\n\
                 service:\n  pipelines:\n    metrics: {{receivers: [otlp], exporters: [otlp_http]}}\n\
                 \x20 telemetry:\n    metrics: {{level: none}}\n"
            ),
        )
        .unwrap();
        Self::launch(Kind::Otelcol, port, http_port, dir, config)
    }

    fn launch(kind: Kind, port: u16, udp_port: u16, dir: TempDir, config: PathBuf) -> Self {
        let mut broker = Broker { kind, port, udp_port, dir, child: None, config };
        broker.start();
        broker
    }

    /// Starts the process (again, on the same ports) and waits until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::create(self.dir.0.join(format!("{:?}.log", self.kind))).unwrap();
        let mut cmd = match self.kind {
            Kind::Nats => {
                let mut c = Command::new("nats-server");
                c.arg("-c").arg(&self.config);
                c
            }
            Kind::Mosquitto => {
                let mut c = Command::new("mosquitto");
                c.arg("-c").arg(&self.config);
                c
            }
            Kind::Influx => {
                let mut c = Command::new("influxd");
                c.arg("run").arg("-config").arg(&self.config);
                c
            }
            Kind::Prometheus => {
                let mut c = Command::new(built("prometheus"));
                c.arg(format!("--config.file={}", self.config.display()))
                    .arg("--web.enable-otlp-receiver")
                    .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
                    .arg(format!("--storage.tsdb.path={}", self.dir.0.join("data").display()));
                c
            }
            Kind::Otelcol => {
                let mut c = Command::new(built("otelcol"));
                c.arg(format!("--config={}", self.config.display()));
                c
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {:?} (scripts/setup.sh installs it): {e}", self.kind)
            });
        watchdog(child.id());
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{:?} did not start: {}",
                self.kind,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let ready = match self.kind {
            // The HTTP port opens before the UDP service and meta store are ready.
            Kind::Influx => Some("ping"),
            // The port opens before the TSDB is loaded (OTLP writes get 503 until then).
            Kind::Prometheus => Some("-/ready"),
            _ => None,
        };
        if let Some(path) = ready {
            let url = format!("http://127.0.0.1:{}/{path}", self.port);
            while http_ping::blocking_ping(&url).is_err() {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "{:?} not ready: {}",
                    self.kind,
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// SIGKILLs the process and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process with SIGTERM (a clean shutdown: Prometheus closes its WAL) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }

    /// The process's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join(format!("{:?}.log", self.kind))).unwrap_or_default()
    }

    pub fn path(&self) -> &Path {
        &self.dir.0
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kills `pid` if this test process dies without dropping its broker (panic=abort, SIGKILL).
fn watchdog(pid: u32) {
    let me = std::process::id();
    let script = format!(
        "while kill -0 {me} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 1; done; kill -9 {pid} 2>/dev/null"
    );
    let _ = Command::new("bash")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// A tiny blocking HTTP GET on a fresh TCP connection (the broker helper is synchronous).
mod http_ping {
    use std::io::{Read, Write};

    pub fn blocking_ping(url: &str) -> Result<(), ()> {
        let rest = url.strip_prefix("http://").ok_or(())?;
        let (host, path) = rest.split_once('/').ok_or(())?;
        let mut s = std::net::TcpStream::connect(host).map_err(|_| ())?;
        write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").map_err(|_| ())?;
        let mut response = String::new();
        s.read_to_string(&mut response).map_err(|_| ())?;
        if response.starts_with("HTTP/1.1 2") || response.starts_with("HTTP/1.0 2") {
            Ok(())
        } else {
            Err(())
        }
    }
}

/// The path of a tool of e2e/scripts/build-tools.sh, built first if needed.
fn built(name: &str) -> PathBuf {
    podtrace_test_support::tool(name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A PromQL instant query on the Prometheus on `port`: its `data.result`.
pub async fn promql(port: u16, query: &str) -> serde_json::Value {
    let url = format!("http://127.0.0.1:{port}/api/v1/query");
    let r = reqwest::Client::new().post(url).form(&[("query", query)]).send().await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(v["status"], "success", "{query}: {v}");
    v["data"]["result"].clone()
}

/// Every exporter off, fast backoff for tests.
pub fn args() -> ExporterArgs {
    let mut a = ExporterArgs::disabled();
    a.node_name = "node-1".into();
    a.instance_id = "agent-1".into();
    a.export_backoff_max = Duration::from_millis(400);
    a
}

/// A registry and the exporters.
pub fn start(args: &ExporterArgs) -> (Exporters, prometheus_client::registry::Registry) {
    let mut registry = prometheus_client::registry::Registry::default();
    let exporters = Exporters::start(args, &mut registry).expect("valid exporter flags");
    (exporters, registry)
}

/// `podtrace_agent_export_errors_total` of `exporter` in `registry`.
pub fn export_errors(registry: &prometheus_client::registry::Registry, exporter: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    let series = format!("podtrace_agent_export_errors_total{{exporter=\"{exporter}\"}} ");
    let line = text.lines().find(|l| l.starts_with(&series));
    line.and_then(|l| l[series.len()..].parse().ok()).unwrap_or_else(|| panic!("{text}"))
}

/// Export to every push exporter.
pub fn all() -> ExportSettings {
    ExportSettings { prometheus: true, nats: true, mqtt: true, influx: true, otlp: true }
}

/// The sample time of batch `seq` (whole milliseconds, so every format round-trips it).
pub fn time_of(seq: u64, target: usize) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_760_000_000 + seq) + Duration::from_millis(target as u64)
}

/// A target whose values identify it: `uptime_seconds` is the batch, `thread_count` the index;
/// its memory's alert level is the index modulo 4, its DNS latency count the batch.
pub fn target(seq: u64, i: usize) -> TargetSample {
    let base = seq * 1000 + i as u64;
    let memory = ResourceSample {
        usage: (1_000_000 + base) as f64,
        limit: Some(2_000_000.0),
        utilization_percent: Some((1_000_000 + base) as f64 / 20_000.0),
        alert_level: Some((i % 4) as u8),
    };
    let cpu = ResourceSample {
        usage: base as f64,
        limit: None,
        utilization_percent: None,
        alert_level: None,
    };
    TargetSample {
        node: "node-1".into(),
        namespace: "shop".into(),
        pod: format!("web-{i}"),
        pod_uid: format!("uid-{i}"),
        container: "app".into(),
        timestamp: time_of(seq, i),
        metrics: Some(ProcessMetrics {
            cpu_usage_percent: seq as f64 + 0.25,
            memory_usage_bytes: 1_000_000 + base,
            memory_usage_percent: Some(1.5),
            disk_read_bytes: base * 10,
            disk_write_bytes: base * 20,
            network_rx_bytes: base * 30,
            network_tx_bytes: base * 40,
            uptime_seconds: seq,
            thread_count: i as u64,
            file_descriptor_count: 8,
            timestamp: time_of(seq, i),
        }),
        aggregated: Some(AggregatedMetrics {
            avg_cpu_usage: 12.5,
            max_cpu_usage: 65.0,
            avg_memory_usage: 900_000.0,
            max_memory_usage: 1_100_000,
            total_disk_read: base,
            total_disk_write: base + 1,
            total_network_rx: base + 2,
            total_network_tx: base + 3,
            sample_count: 24,
        }),
        resources: [("cpu", cpu), ("memory", memory)].into_iter().collect(),
        ebpf: EbpfSample {
            latencies: vec![LatencySample {
                probe: "dns",
                kind: "DNS",
                count: seq,
                sum_seconds: seq as f64 * 0.01,
                latest_seconds: 0.01,
            }],
            bytes: vec![ByteSample {
                probe: "networkBytes",
                direction: Some("send"),
                operation: None,
                bytes: base * 50,
            }],
        },
        export: all(),
        unavailable: vec![],
        series: Vec::new(),
    }
}

/// Batch `seq` with `n` targets.
pub fn batch(seq: u64, n: usize) -> PushBatch {
    PushBatch {
        kernel: Some(KernelSample {
            context_switches_total: 1_000 + seq,
            entropy_available_bits: 256,
            network_connections_total: 42,
            timestamp: time_of(seq, 0),
        }),
        targets: (0..n).map(|i| target(seq, i)).collect(),
    }
}

/// Pushes `batches` batches of `targets` samples 5 ms apart and checks that `push` never waited
/// on a broker. A push that waited on the slow subscriber would take its 500 ms write deadline,
/// every time; so the median push must stay far below that. (How fast a push is, is measured by
/// `make bench-exporters`, not asserted here: on a loaded machine a debug build can be preempted
/// for tens of milliseconds.)
pub async fn push_without_waiting(exporters: &Exporters, batches: u64, targets: usize) {
    let mut took = Vec::new();
    for seq in 0..batches {
        let b = batch(seq, targets);
        let t = std::time::Instant::now();
        exporters.push(b);
        took.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    took.sort();
    let median = took[took.len() / 2];
    assert!(median < Duration::from_millis(250), "median push {median:?}: push waited on a broker");
}
