//! The OTLP exporter: every interval, the pods' series (the names and values of `/metrics`, see
//! [`super::otlp_data`]) to an OpenTelemetry Collector, Prometheus' OTLP receiver or any OTLP
//! metrics endpoint, over gRPC or HTTP with a protobuf body.
//!
//! Why `opentelemetry-proto` (the official crate of the OTLP wire types and the generated
//! tonic client) rather than `opentelemetry-otlp`'s exporter or the SDK: the SDK measures with
//! instruments and aggregates on its own schedule, and `opentelemetry-otlp` exports only the
//! SDK's `ResourceMetrics`, whose constructors are not public: data measured elsewhere (our
//! collectors' samples, each with its own timestamp) cannot be handed to it, and its batching
//! would hide the bounded queue, the drop counting and the connection state every push exporter
//! of the agent reports. With the wire types we build the request ourselves and send it with
//! the generated `MetricsServiceClient` (tonic 0.14, the agent's own) or one HTTP POST.
//!
//! | transport | a chunk counts as sent when | on failure |
//! |---|---|---|
//! | gRPC | `Export` returns OK | OTLP's retryable codes (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, …) and UNAUTHENTICATED, PERMISSION_DENIED, UNIMPLEMENTED: back to the queue; the others (INVALID_ARGUMENT…): dropped and counted |
//! | HTTP | the endpoint answers 2xx | 400 and other 4xx: dropped and counted (the data would be refused again); 401, 403, 404, 408, 429 and 5xx: back to the queue |
//!
//! A partial success (the receiver kept part of the points) counts the chunk as sent and logs
//! what was refused.

use super::{
    BACKOFF_MIN, ExportError, ExporterArgs, Item,
    args::OtlpProtocol,
    backoff::Backoff,
    delivery::{Failure, settle},
    otlp_data,
    queue::Queue,
    stats::Stats,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    metrics_service_client::MetricsServiceClient,
};
use prost::Message;
use std::{sync::Arc, time::Duration};
use tonic::transport::Channel;

/// Items (targets) in one export request: with the intensive profile and 16 processes a target
/// is some 40 KiB of protobuf, so a request stays far below the 4 MiB a Collector accepts.
const CHUNK: usize = 32;
/// Time allowed for connecting and for one export.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The OTLP/HTTP path of metrics.
const HTTP_PATH: &str = "v1/metrics";

/// A validated OTLP configuration.
#[derive(Clone, Debug)]
pub struct Config {
    protocol: OtlpProtocol,
    /// Where requests go: the gRPC server's URL, or the full HTTP URL ending in `/v1/metrics`.
    url: url::Url,
    headers: Vec<(String, String)>,
    node: String,
    backoff_max: Duration,
}

impl Config {
    /// Validates `--otlp-endpoint`, `--otlp-protocol` and `--otlp-headers`.
    pub fn new(endpoint: &str, args: &ExporterArgs) -> Result<Self, ExportError> {
        let invalid = |reason: String| ExportError::InvalidUrl {
            flag: "--otlp-endpoint (PODTRACE_OTLP_ENDPOINT)",
            url: endpoint.into(),
            reason,
            expected: "http://collector:4317 (gRPC) or http://collector:4318 (HTTP)",
        };
        let mut url = url::Url::parse(endpoint).map_err(|e| invalid(e.to_string()))?;
        match url.scheme() {
            "http" => {}
            "https" => {
                return Err(invalid(
                    "https is not built in; send to a Collector on the node or in the cluster \
                     over http"
                        .into(),
                ));
            }
            other => return Err(invalid(format!("unsupported scheme {other:?}"))),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("no host".into()));
        }
        if url.query().is_some() || !url.username().is_empty() {
            return Err(invalid(
                "no query or user in the URL; credentials go in --otlp-headers".into(),
            ));
        }
        let protocol = args.otlp_protocol.unwrap_or_else(|| default_protocol(&url));
        if protocol == OtlpProtocol::HttpProtobuf && !url.path().ends_with(HTTP_PATH) {
            let path = format!("{}/{HTTP_PATH}", url.path().trim_end_matches('/'));
            url.set_path(&path);
        }
        if protocol == OtlpProtocol::Grpc && url.path() != "/" {
            return Err(invalid(format!(
                "a gRPC endpoint has no path ({}); for OTLP/HTTP set --otlp-protocol \
                 http/protobuf",
                url.path()
            )));
        }
        let headers = args.otlp_headers.as_deref().map(parse_headers).transpose()?;
        Ok(Config {
            protocol,
            url,
            headers: headers.unwrap_or_default(),
            node: args.node_name.clone(),
            backoff_max: args.export_backoff_max,
        })
    }

    /// The transport in use.
    pub fn protocol(&self) -> OtlpProtocol {
        self.protocol
    }

    /// Where the requests go.
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// The export request of `chunk`: one resource per target with series, one for the node's
    /// kernel counters.
    pub fn encode(&self, chunk: &[Item]) -> ExportMetricsServiceRequest {
        otlp_data::request(chunk.iter().filter_map(|item| match item {
            Item::Target(t) if t.series.is_empty() => None,
            Item::Target(t) => Some(otlp_data::target(t)),
            Item::Kernel(k) => Some(otlp_data::kernel(k, &self.node)),
        }))
    }
}

/// `http/protobuf` for OTLP/HTTP's port 4318 or a URL with a path (a gRPC endpoint has none:
/// Prometheus' `/api/v1/otlp`), `grpc` otherwise (OTLP/gRPC's 4317, or a port of one's own).
fn default_protocol(url: &url::Url) -> OtlpProtocol {
    if url.port() == Some(4318) || url.path() != "/" {
        OtlpProtocol::HttpProtobuf
    } else {
        OtlpProtocol::Grpc
    }
}

/// `key=value,key2=value2`, values percent-decoded (OTEL_EXPORTER_OTLP_HEADERS' format). Keys
/// are lower-cased (gRPC metadata must be); the error names a key, never a value (a token).
fn parse_headers(text: &str) -> Result<Vec<(String, String)>, ExportError> {
    let invalid = |reason: String| ExportError::InvalidHeaders { reason };
    let mut out = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((key, value)) = entry.split_once('=') else {
            let key: String = entry.chars().take(20).collect();
            return Err(invalid(format!("an entry starting {key:?} has no '='")));
        };
        let key = key.trim().to_ascii_lowercase();
        let value = percent_encoding::percent_decode_str(value.trim())
            .decode_utf8()
            .map_err(|_| invalid(format!("the value of {key:?} is not UTF-8 once decoded")))?;
        if reqwest::header::HeaderName::from_bytes(key.as_bytes()).is_err()
            || key.parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>().is_err()
        {
            return Err(invalid(format!("{key:?} is not a header name")));
        }
        if reqwest::header::HeaderValue::from_str(&value).is_err() {
            return Err(invalid(format!("the value of {key:?} is not a valid header value")));
        }
        out.push((key, value.into_owned()));
    }
    Ok(out)
}

/// The transport's client.
enum Client {
    Grpc(MetricsServiceClient<Channel>),
    Http(reqwest::Client),
}

impl Client {
    fn new(config: &Config) -> Result<Self, String> {
        match config.protocol {
            OtlpProtocol::Grpc => {
                let endpoint = Channel::from_shared(config.url.to_string())
                    .map_err(|e| format!("OTLP endpoint {}: {e}", config.url))?
                    .connect_timeout(IO_TIMEOUT)
                    .timeout(IO_TIMEOUT);
                // Lazy: the channel connects (and reconnects) when a request needs it.
                Ok(Client::Grpc(MetricsServiceClient::new(endpoint.connect_lazy())))
            }
            OtlpProtocol::HttpProtobuf => reqwest::Client::builder()
                .timeout(IO_TIMEOUT)
                .connect_timeout(IO_TIMEOUT)
                .build()
                .map(Client::Http)
                .map_err(|e| ExportError::HttpClient(e).to_string()),
        }
    }

    /// Sends one request; returns what the receiver refused of it, if anything.
    async fn export(
        &mut self,
        config: &Config,
        request: ExportMetricsServiceRequest,
    ) -> Result<Option<ExportMetricsPartialSuccess>, Failure> {
        let at = &config.url;
        match self {
            Client::Grpc(client) => {
                let mut request = tonic::Request::new(request);
                for (key, value) in &config.headers {
                    if let (Ok(k), Ok(v)) = (
                        key.parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>(),
                        value.parse(),
                    ) {
                        request.metadata_mut().insert(k, v);
                    }
                }
                match client.export(request).await {
                    Ok(response) => Ok(response.into_inner().partial_success),
                    Err(status) => Err(grpc_failure(&status, at)),
                }
            }
            Client::Http(client) => {
                let mut post = client
                    .post(at.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
                    .body(request.encode_to_vec());
                for (key, value) in &config.headers {
                    post = post.header(key, value);
                }
                let response = post.send().await.map_err(|e| {
                    Failure::Retry(format!("OTLP endpoint {at} is not reachable: {e}"))
                })?;
                let status = response.status();
                let body = response.bytes().await.unwrap_or_default();
                if status.is_success() {
                    let decoded = ExportMetricsServiceResponse::decode(body.as_ref());
                    return Ok(decoded.ok().and_then(|r| r.partial_success));
                }
                let text: String = String::from_utf8_lossy(&body).chars().take(300).collect();
                let reason = format!("OTLP endpoint {at} answered {status}: {}", text.trim());
                Err(match status.as_u16() {
                    401 | 403 => Failure::Retry(format!("{reason} (check --otlp-headers)")),
                    404 | 405 => Failure::Retry(format!(
                        "{reason} (is --otlp-endpoint an OTLP/HTTP receiver? Prometheus needs \
                         --web.enable-otlp-receiver)"
                    )),
                    408 | 429 => Failure::Retry(reason),
                    400..=499 => Failure::Rejected(reason),
                    _ => Failure::Retry(reason),
                })
            }
        }
    }
}

/// OTLP/gRPC's retryable codes (and the ones a configuration change fixes) are retried.
fn grpc_failure(status: &tonic::Status, at: &url::Url) -> Failure {
    use tonic::Code::*;
    let reason = format!("OTLP endpoint {at}: {:?}: {}", status.code(), status.message());
    match status.code() {
        Cancelled | DeadlineExceeded | ResourceExhausted | Aborted | OutOfRange | Unavailable
        | DataLoss | Unknown => Failure::Retry(reason),
        Unauthenticated | PermissionDenied => {
            Failure::Retry(format!("{reason} (check --otlp-headers)"))
        }
        Unimplemented => Failure::Retry(format!(
            "{reason} (is --otlp-endpoint an OTLP/gRPC receiver? for OTLP/HTTP set \
             --otlp-protocol http/protobuf)"
        )),
        _ => Failure::Rejected(reason),
    }
}

/// Runs the exporter until the task is aborted.
pub async fn run(config: Config, queue: Arc<Queue<Item>>, stats: Stats) {
    let mut client = match Client::new(&config) {
        Ok(c) => c,
        Err(reason) => {
            stats.set_disconnected(reason);
            return;
        }
    };
    let mut backoff = Backoff::new(BACKOFF_MIN, config.backoff_max);
    // An empty request (valid OTLP) checks the endpoint at start, so that health is right
    // before the first interval. An endpoint that answers, even with an error about the
    // data, is reachable.
    stats.set_connecting(format!("connecting to the OTLP endpoint {}", config.url));
    loop {
        match client.export(&config, otlp_data::request([])).await {
            Ok(_) | Err(Failure::Rejected(_)) => break,
            Err(Failure::Retry(reason)) => {
                stats.set_disconnected(reason);
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
    stats.set_connected();
    backoff.reset();
    loop {
        queue.ready().await;
        let chunk = queue.take(CHUNK);
        let request = config.encode(&chunk);
        let outcome = client.export(&config, request).await.map(|partial| {
            if let Some(p) = partial.filter(|p| p.rejected_data_points > 0) {
                tracing::warn!(
                    exporter = "otlp",
                    rejected_points = p.rejected_data_points,
                    reason = %p.error_message,
                    "the OTLP endpoint refused part of an export"
                );
            }
        });
        settle(outcome, "otlp", chunk, &queue, &stats, &mut backoff).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoint: &str, protocol: Option<OtlpProtocol>) -> Result<Config, String> {
        let mut args = ExporterArgs::disabled();
        args.otlp_protocol = protocol;
        Config::new(endpoint, &args).map_err(|e| e.to_string())
    }

    #[test]
    fn the_protocol_follows_the_port_or_path_and_http_gets_its_path() {
        let c = config("http://collector:4317", None).unwrap();
        assert_eq!(
            (c.protocol(), c.url().as_str()),
            (OtlpProtocol::Grpc, "http://collector:4317/")
        );
        let c = config("http://collector:4318", None).unwrap();
        assert_eq!(c.protocol(), OtlpProtocol::HttpProtobuf);
        assert_eq!(c.url().as_str(), "http://collector:4318/v1/metrics");
        let c = config("http://prom:9090/api/v1/otlp/v1/metrics", None).unwrap();
        assert_eq!(c.protocol(), OtlpProtocol::HttpProtobuf);
        assert_eq!(c.url().path(), "/api/v1/otlp/v1/metrics");
        let c = config("http://prom:9090/api/v1/otlp/", None).unwrap();
        assert_eq!(c.url().path(), "/api/v1/otlp/v1/metrics");
    }

    #[test]
    fn bad_endpoints_and_headers_are_refused_with_the_flag_named() {
        for (endpoint, protocol, says) in [
            ("collector:4317", None, "--otlp-endpoint (PODTRACE_OTLP_ENDPOINT)"),
            ("https://collector:4317", None, "https is not built in"),
            ("grpc://collector:4317", None, "unsupported scheme"),
            ("http://collector:4317/v2", Some(OtlpProtocol::Grpc), "a gRPC endpoint has no path"),
            ("http://u:p@collector:4318", None, "credentials go in --otlp-headers"),
        ] {
            let err = config(endpoint, protocol).err().unwrap_or_else(|| panic!("{endpoint}"));
            assert!(err.contains(says), "{endpoint}: {err}");
        }
        let mut args = ExporterArgs::disabled();
        args.otlp_headers = Some("authorization=Bearer%20s3cret,X-Tenant = a".into());
        let c = Config::new("http://c:4317", &args).unwrap();
        let want = [("authorization", "Bearer s3cret"), ("x-tenant", "a")];
        assert!(c.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).eq(want));
        for (bad, says) in [("token", "has no '='"), ("bad key=1", "not a header name")] {
            args.otlp_headers = Some(format!("a=s3cret,{bad}"));
            let err = Config::new("http://c:4317", &args).unwrap_err().to_string();
            assert!(err.contains("--otlp-headers") && err.contains(says), "{err}");
            assert!(!err.contains("s3cret"), "values are never shown: {err}");
        }
    }

    #[test]
    fn targets_without_series_send_nothing_and_the_kernel_goes_with_the_node() {
        let c = config("http://c:4317", None).unwrap();
        let t = Arc::new(super::super::message::test_target());
        let k = crate::sample::KernelSample {
            context_switches_total: 1,
            entropy_available_bits: 2,
            network_connections_total: 3,
            timestamp: std::time::UNIX_EPOCH,
        };
        let request = c.encode(&[Item::Target(t), Item::Kernel(Arc::new(k))]);
        assert_eq!(request.resource_metrics.len(), 1, "{request:?}");
    }
}
