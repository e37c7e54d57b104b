//! The OTLP exporter against real receivers: Prometheus' OTLP receiver over OTLP/HTTP, and an
//! OpenTelemetry Collector over OTLP/gRPC (forwarding to a Prometheus, where the test reads
//! what arrived). Both are built from their Go modules by e2e/scripts/build-tools.sh.

mod exporters_support;

use exporters_support::*;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    metrics_service_server::{MetricsService, MetricsServiceServer},
};
use parking_lot::Mutex;
use podtrace_agent::{
    exporters::{ExporterArgs, Exporters, args::OtlpProtocol},
    metrics::{Sample, TargetKey, catalog},
    sample::PushBatch,
};
use serde_json::Value;
use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, SystemTime},
};

/// Under `exporters::` so that `cargo test -p podtrace-agent exporters` selects them.
mod exporters {
    use super::*;

    /// Items the exporter keeps while its receiver is away.
    const QUEUE: usize = 5;

    /// Batch `seq`: one target whose only series, `podtrace_process_threads`, has the value
    /// `seq`, and whose samples are 100 ms apart from `base` on.
    fn batch_with_series(seq: u64, base: SystemTime) -> PushBatch {
        let mut t = target(seq, 0);
        t.timestamp = base + Duration::from_millis(100 * seq);
        let mut labels = TargetKey::new(&t.namespace, &t.pod, &t.container).labels();
        labels.push("pid", "7").push("process_name", "app");
        t.series = vec![Sample::new(catalog::PROCESS_THREADS, labels, seq as f64)];
        PushBatch { kernel: None, targets: vec![t] }
    }

    fn health(exporters: &Exporters) -> podtrace_agent::exporters::ExporterHealth {
        exporters.health().exporters[0].clone()
    }

    /// Waits until the exporter's health satisfies `cond`; panics with it after `timeout`.
    async fn wait_for(
        exporters: &Exporters,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&podtrace_agent::exporters::ExporterHealth) -> bool,
    ) {
        let deadline = std::time::Instant::now() + timeout;
        while !cond(&health(exporters)) {
            assert!(std::time::Instant::now() < deadline, "{what}: {:?}", health(exporters));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The values of `podtrace_process_threads` of pod web-0 that `prometheus` stored, and
    /// the labels of its series.
    async fn stored(prometheus: u16) -> (BTreeSet<u64>, Value) {
        let result =
            promql(prometheus, "podtrace_process_threads{k8s_pod_name=\"web-0\"}[1h]").await;
        let Some(series) = result.as_array().and_then(|r| r.first()) else {
            return (BTreeSet::new(), Value::Null);
        };
        let values = series["values"].as_array().unwrap().iter();
        let values = values.map(|v| v[1].as_str().unwrap().parse().unwrap()).collect();
        (values, series["metric"].clone())
    }

    /// Waits up to 30 s until `prometheus` holds exactly the values `want` of web-0's series
    /// (sent by way of `collector`, whose log the failure shows).
    async fn arrived(prometheus: &Broker, collector: &Broker, want: &[u64]) {
        let want: BTreeSet<u64> = want.iter().copied().collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while stored(prometheus.port).await.0 != want {
            let all = promql(prometheus.port, "podtrace_process_threads[1h]").await;
            let log = format!("{all}\n{}\n{}", prometheus.log(), collector.log());
            assert!(std::time::Instant::now() < deadline, "{want:?}: {log}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Ten batches arrive; the receiver (`restart`) goes away for twelve more, of which the
    /// queue keeps the newest five; once it is back exactly those fifteen are in Prometheus,
    /// and the seven others are counted as dropped.
    async fn loses_nothing_that_fits_in_the_queue(
        args: ExporterArgs,
        restart: &mut Broker,
        prometheus: u16,
    ) {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let (exporters, registry) = start(&args);
        wait_for(&exporters, "the receiver reachable", Duration::from_secs(30), |h| h.connected)
            .await;
        assert_eq!(export_errors(&registry, "otlp"), 0.0, "connecting is not an error");
        let base = SystemTime::now() - Duration::from_secs(60);
        // One at a time: ten at once would not fit in the queue.
        for seq in 0..10 {
            exporters.push(batch_with_series(seq, base));
            wait_for(&exporters, "sent", Duration::from_secs(30), |h| h.sent == seq + 1).await;
        }

        restart.stop();
        for seq in 10..22 {
            exporters.push(batch_with_series(seq, base));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        wait_for(&exporters, "the exporter to notice", Duration::from_secs(30), |h| {
            !h.connected && h.dropped == 7 && h.queued == QUEUE
        })
        .await;
        let reason = health(&exporters).reason.unwrap_or_default();
        assert!(reason.contains("OTLP endpoint"), "health says why: {reason}");

        restart.start();
        wait_for(&exporters, "the queue sent", Duration::from_secs(60), |h| h.sent == 15).await;
        let want: BTreeSet<u64> = (0..10).chain(22 - QUEUE as u64..22).collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let (values, labels) = loop {
            let (values, labels) = stored(prometheus).await;
            if values.len() >= want.len() || std::time::Instant::now() > deadline {
                break (values, labels);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(values, want, "the queue's newest {QUEUE} and everything before the stop");
        for (label, value) in [
            ("k8s_namespace_name", "shop"),
            ("k8s_pod_name", "web-0"),
            ("k8s_container_name", "app"),
            ("k8s_node_name", "node-1"),
            ("pid", "7"),
            ("process_name", "app"),
        ] {
            assert_eq!(labels[label], value, "{label}: {labels}");
        }
        let h = health(&exporters);
        assert!(h.connected, "{h:?}");
        assert_eq!((h.sent, h.dropped, h.queued), (15, 7, 0));
    }

    /// A gRPC receiver built on the official generated service: answers each export with the
    /// next scripted code (OK once the script is done) and records every request's
    /// `authorization` header and resource count.
    #[derive(Clone, Default)]
    struct Scripted {
        codes: Arc<Mutex<std::collections::VecDeque<tonic::Code>>>,
        seen: Arc<Mutex<Vec<Seen>>>,
        /// Each request's `grpc-encoding`.
        encodings: Arc<Mutex<Vec<Option<String>>>>,
    }

    /// A request's `authorization` header and number of resources.
    type Seen = (Option<String>, usize);

    #[tonic::async_trait]
    impl MetricsService for Scripted {
        async fn export(
            &self,
            request: tonic::Request<ExportMetricsServiceRequest>,
        ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
            let auth = request.metadata().get("authorization").map(|v| v.to_str().unwrap().into());
            let encoding = request.metadata().get("grpc-encoding");
            self.encodings.lock().push(encoding.map(|v| v.to_str().unwrap().into()));
            self.seen.lock().push((auth, request.get_ref().resource_metrics.len()));
            match self.codes.lock().pop_front() {
                None | Some(tonic::Code::Ok) => Ok(tonic::Response::new(Default::default())),
                Some(code) => Err(tonic::Status::new(code, "scripted")),
            }
        }
    }

    /// In addition to the real receivers: what a receiver answers decides what happens to an
    /// export (INVALID_ARGUMENT: dropped and counted; UNAVAILABLE: retried until accepted), and
    /// `--otlp-headers` reach it on every request.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn otlp_grpc_drops_what_the_receiver_calls_malformed_retries_the_rest_and_sends_headers()
    {
        let receiver = Scripted::default();
        // The start-up check, the first export, the second export twice.
        receiver.codes.lock().extend([
            tonic::Code::Ok,
            tonic::Code::InvalidArgument,
            tonic::Code::Unavailable,
            tonic::Code::Ok,
        ]);
        // Bound before the exporter starts: a start-up check refused by a server still binding
        // would count one more export error.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(receiver.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
        let server = tokio::spawn(server);
        let mut a = args();
        a.otlp_endpoint = Some(format!("http://127.0.0.1:{port}"));
        a.otlp_headers = Some("Authorization=Bearer%20t0ken".into());
        let (exporters, registry) = start(&a);
        wait_for(&exporters, "connected", Duration::from_secs(30), |h| h.connected).await;
        let base = SystemTime::now();
        exporters.push(batch_with_series(1, base));
        wait_for(&exporters, "dropped", Duration::from_secs(30), |h| h.dropped == 1).await;
        exporters.push(batch_with_series(2, base));
        wait_for(&exporters, "sent", Duration::from_secs(30), |h| h.sent == 1).await;
        let h = health(&exporters);
        assert_eq!((h.sent, h.dropped, h.queued), (1, 1, 0), "{h:?}");
        assert_eq!(export_errors(&registry, "otlp"), 1.0, "the UNAVAILABLE answer");
        let seen = receiver.seen.lock().clone();
        let resources: Vec<usize> = seen.iter().map(|(_, n)| *n).collect();
        assert_eq!(resources, [0, 1, 1, 1], "the empty start-up check, then one target each");
        assert!(seen.iter().all(|(auth, _)| auth.as_deref() == Some("Bearer t0ken")), "{seen:?}");
        server.abort();
    }

    /// An authority and what it signs, as PEM files in a temporary directory.
    struct Pki {
        ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
        dir: TempDir,
    }

    impl Pki {
        fn new(dir: TempDir) -> Self {
            use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
            std::fs::write(dir.0.join("ca.crt"), ca.pem()).unwrap();
            Pki { ca, dir }
        }

        fn path(&self, name: &str) -> std::path::PathBuf {
            self.dir.0.join(name)
        }

        /// Writes `name.crt` and `name.key`: a certificate for `san` signed by the authority.
        fn issue(&self, name: &str, san: &str) {
            let key = rcgen::KeyPair::generate().unwrap();
            let params = rcgen::CertificateParams::new(vec![san.to_owned()]).unwrap();
            let cert = params.signed_by(&key, &self.ca).unwrap();
            std::fs::write(self.path(&format!("{name}.crt")), cert.pem()).unwrap();
            std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
        }
    }

    /// An `https://` endpoint over both transports, a real Collector requiring a client
    /// certificate (mutual TLS): the exporter trusts `--otlp-ca-file` and presents
    /// `--otlp-client-cert-file`. A client certificate the Collector does not trust keeps the
    /// exporter not connected, with the reason in health; once the files are renewed in place,
    /// the exporter connects with them, without a restart, and the batches arrive in Prometheus.
    /// Without `--otlp-ca-file` the system's authorities do not know the Collector's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn otlp_over_tls_with_a_client_certificate_renewed_in_place_reaches_a_collector() {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let pki = Pki::new(TempDir::new("otlp-pki"));
        pki.issue("server", "127.0.0.1");
        let stranger = Pki::new(TempDir::new("otlp-stranger"));
        stranger.issue("client", "agent");
        for file in ["client.crt", "client.key"] {
            std::fs::copy(stranger.path(file), pki.path(file)).unwrap();
        }
        let prometheus = Broker::prometheus();
        let collector = Broker::otelcol_tls(
            prometheus.port,
            &pki.path("server.crt"),
            &pki.path("server.key"),
            &pki.path("ca.crt"),
        );
        let mut a = args();
        a.otlp_endpoint = Some(format!("https://127.0.0.1:{}", collector.port));
        a.otlp_ca_file = Some(pki.path("ca.crt"));
        a.otlp_client_cert_file = Some(pki.path("client.crt"));
        a.otlp_client_key_file = Some(pki.path("client.key"));

        let (grpc, _) = start(&a);
        // The Collector's alert, with the cause (other attempts end in a closed connection).
        wait_for(&grpc, "a refused handshake", Duration::from_secs(30), |h| {
            !h.connected && h.reason.as_deref().is_some_and(|r| r.contains("alert: UnknownCA"))
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let h = health(&grpc);
        assert!(!h.connected, "a client certificate of another authority is refused: {h:?}");
        // Renewed in place, as cert-manager rewrites a mounted Secret.
        pki.issue("client", "agent");
        wait_for(&grpc, "connected with the renewed files", Duration::from_secs(30), |h| {
            h.connected
        })
        .await;
        let base = SystemTime::now() - Duration::from_secs(60);
        grpc.push(batch_with_series(1, base));
        wait_for(&grpc, "sent over gRPC", Duration::from_secs(30), |h| h.sent == 1).await;

        a.otlp_endpoint = Some(format!("https://127.0.0.1:{}", collector.udp_port));
        a.otlp_protocol = Some(OtlpProtocol::HttpProtobuf);
        let (http, _) = start(&a);
        wait_for(&http, "connected over HTTP", Duration::from_secs(30), |h| h.connected).await;
        http.push(batch_with_series(2, base));
        wait_for(&http, "sent over HTTP", Duration::from_secs(30), |h| h.sent == 1).await;

        arrived(&prometheus, &collector, &[1, 2]).await;

        a.otlp_ca_file = None;
        let (system, _) = start(&a);
        wait_for(&system, "the system's authorities refuse it", Duration::from_secs(30), |h| {
            h.reason.as_deref().is_some_and(|r| r.contains("certificate"))
        })
        .await;
        assert!(!health(&system).connected);
    }

    /// `--otlp-compression gzip`: the requests are gzip-compressed on both transports (seen by
    /// receivers of our own that record the encoding and decode the body), and real receivers,
    /// Prometheus over HTTP and a Collector over gRPC, read them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn otlp_gzip_compresses_requests_and_real_receivers_read_them() {
        use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server;
        let base = SystemTime::now() - Duration::from_secs(60);
        let mut a = args();
        a.otlp_compression = podtrace_agent::exporters::args::OtlpCompression::Gzip;

        // gRPC, to a receiver that only accepts gzip-compressed requests when told to.
        let receiver = Scripted::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let service = metrics_service_server::MetricsServiceServer::new(receiver.clone())
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        a.otlp_endpoint = Some(format!("http://127.0.0.1:{port}"));
        let (grpc, _) = start(&a);
        grpc.push(batch_with_series(1, base));
        wait_for(&grpc, "sent over gRPC", Duration::from_secs(30), |h| h.sent == 1).await;
        let encodings = receiver.encodings.lock().clone();
        assert!(encodings.iter().all(|e| e.as_deref() == Some("gzip")), "{encodings:?}");
        assert_eq!(receiver.seen.lock().last().map(|s| s.1), Some(1), "the target arrived");
        server.abort();

        // HTTP, to a receiver that records Content-Encoding and decodes the body.
        /// A request's Content-Encoding and body.
        type Posted = (Option<String>, Vec<u8>);
        let bodies: Arc<Mutex<Vec<Posted>>> = Arc::default();
        let recorded = bodies.clone();
        let app = axum::Router::new().route(
            "/v1/metrics",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let encoding = headers.get("content-encoding").map(|v| v.to_str().unwrap().into());
                recorded.lock().push((encoding, body.to_vec()));
                async { prost::Message::encode_to_vec(&ExportMetricsServiceResponse::default()) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        a.otlp_endpoint = Some(format!("http://127.0.0.1:{port}/v1/metrics"));
        let (http, _) = start(&a);
        http.push(batch_with_series(2, base));
        wait_for(&http, "sent over HTTP", Duration::from_secs(30), |h| h.sent == 1).await;
        let (encoding, body) = bodies.lock().last().cloned().unwrap();
        assert_eq!(encoding.as_deref(), Some("gzip"));
        let mut decoded = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut decoded)
            .expect("a gzip body");
        let request: ExportMetricsServiceRequest = prost::Message::decode(&decoded[..]).unwrap();
        assert_eq!(request.resource_metrics.len(), 1, "{request:?}");
        assert!(body.len() < decoded.len(), "{} bytes for {}", body.len(), decoded.len());
        server.abort();

        // The real receivers.
        let prometheus = Broker::prometheus();
        let collector = Broker::otelcol(prometheus.port);
        a.otlp_endpoint = Some(format!("http://127.0.0.1:{}/api/v1/otlp", prometheus.port));
        let (to_prometheus, _) = start(&a);
        to_prometheus.push(batch_with_series(3, base));
        arrived(&prometheus, &collector, &[3]).await;
        // After 3 is stored: Prometheus refuses a sample older than the newest of its series.
        a.otlp_endpoint = Some(format!("http://127.0.0.1:{}", collector.port));
        let (to_collector, _) = start(&a);
        to_collector.push(batch_with_series(4, base));
        wait_for(&to_collector, "sent to the Collector", Duration::from_secs(30), |h| h.sent == 1)
            .await;
        arrived(&prometheus, &collector, &[3, 4]).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn otlp_http_to_prometheus_loses_nothing_that_fits_in_the_queue_and_counts_the_rest() {
        let mut prometheus = Broker::prometheus();
        let mut a = args();
        a.otlp_endpoint = Some(format!("http://127.0.0.1:{}/api/v1/otlp", prometheus.port));
        a.otlp_protocol = Some(OtlpProtocol::HttpProtobuf);
        a.export_queue_size = QUEUE;
        let port = prometheus.port;
        loses_nothing_that_fits_in_the_queue(a, &mut prometheus, port).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn otlp_grpc_to_a_collector_loses_nothing_that_fits_in_the_queue_and_counts_the_rest() {
        let prometheus = Broker::prometheus();
        let mut collector = Broker::otelcol(prometheus.port);
        let mut a = args();
        // No path and not 4318: gRPC by default.
        a.otlp_endpoint = Some(format!("http://127.0.0.1:{}", collector.port));
        a.export_queue_size = QUEUE;
        loses_nothing_that_fits_in_the_queue(a, &mut collector, prometheus.port).await;
    }
}
