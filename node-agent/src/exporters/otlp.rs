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
//!
//! An `https://` endpoint is reached over TLS (rustls with *ring*, as everywhere in the agent),
//! checked against the system's authorities or `--otlp-ca-file`, with an optional client
//! certificate; see [`super::otlp_tls`] for when the files are read.

use super::{
    BACKOFF_MIN, ExportError, ExporterArgs, Item,
    args::{OtlpCompression, OtlpProtocol},
    backoff::Backoff,
    delivery::{Failure, settle},
    otlp_data,
    otlp_tls::{TlsFiles, TlsMaterial, pem_pair},
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
    compression: OtlpCompression,
    /// The TLS files of an `https://` endpoint (none for `http://`).
    tls: Option<TlsFiles>,
    node: String,
    backoff_max: Duration,
}

impl Config {
    /// Validates `--otlp-endpoint`, `--otlp-protocol`, `--otlp-headers` and the TLS files.
    pub fn new(endpoint: &str, args: &ExporterArgs) -> Result<Self, ExportError> {
        let invalid = |reason: String| ExportError::InvalidUrl {
            flag: "--otlp-endpoint (PODTRACE_OTLP_ENDPOINT)",
            url: endpoint.into(),
            reason,
            expected: "http://collector:4317 (gRPC), http://collector:4318 (HTTP), or https://…",
        };
        let mut url = url::Url::parse(endpoint).map_err(|e| invalid(e.to_string()))?;
        let https = match url.scheme() {
            "http" => false,
            "https" => true,
            other => return Err(invalid(format!("unsupported scheme {other:?}"))),
        };
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
        let tls = TlsFiles::new(args, https)?;
        if https {
            tls.read()?;
        }
        Ok(Config {
            protocol,
            url,
            headers: headers.unwrap_or_default(),
            compression: args.otlp_compression,
            tls: https.then_some(tls),
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

/// The transport's client, with the TLS material it was built with.
struct Client {
    transport: Transport,
    tls: Option<TlsMaterial>,
}

enum Transport {
    Grpc(MetricsServiceClient<Channel>),
    Http(reqwest::Client),
}

impl Client {
    fn new(config: &Config) -> Result<Self, String> {
        let tls = config.tls.as_ref().map(TlsFiles::read).transpose().map_err(|e| e.to_string())?;
        let transport = match config.protocol {
            OtlpProtocol::Grpc => {
                let mut endpoint = Channel::from_shared(config.url.to_string())
                    .map_err(|e| format!("OTLP endpoint {}: {e}", config.url))?
                    .connect_timeout(IO_TIMEOUT)
                    .timeout(IO_TIMEOUT);
                if let Some(m) = &tls {
                    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
                    let mut t = match &m.ca {
                        Some(pem) => {
                            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
                        }
                        None => ClientTlsConfig::new().with_native_roots(),
                    };
                    if let Some((cert, key)) = &m.identity {
                        t = t.identity(Identity::from_pem(cert, key));
                    }
                    endpoint = endpoint
                        .tls_config(t)
                        .map_err(|e| format!("OTLP endpoint {}: TLS: {e}", config.url))?;
                }
                // Lazy: the channel connects (and reconnects) when a request needs it.
                let client = MetricsServiceClient::new(endpoint.connect_lazy());
                Transport::Grpc(match config.compression {
                    OtlpCompression::None => client,
                    // A gRPC server (the Collector's) may answer in the encoding it was sent.
                    OtlpCompression::Gzip => client
                        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
                        .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
                })
            }
            OtlpProtocol::HttpProtobuf => {
                let mut builder =
                    reqwest::Client::builder().timeout(IO_TIMEOUT).connect_timeout(IO_TIMEOUT);
                if let Some(m) = &tls {
                    // Checked by `TlsFiles::read`: these parse.
                    let parsed = |e: reqwest::Error| ExportError::HttpClient(e).to_string();
                    let roots = match &m.ca {
                        Some(pem) => reqwest::Certificate::from_pem_bundle(pem).map_err(parsed)?,
                        None => system_roots(),
                    };
                    for cert in roots {
                        builder = builder.add_root_certificate(cert);
                    }
                    if let Some((cert, key)) = &m.identity {
                        let identity = reqwest::Identity::from_pem(&pem_pair(cert, key));
                        builder = builder.identity(identity.map_err(parsed)?);
                    }
                }
                Transport::Http(
                    builder.build().map_err(|e| ExportError::HttpClient(e).to_string())?,
                )
            }
        };
        Ok(Client { transport, tls })
    }

    /// A new client when a TLS file changed since this one was built (a renewed client
    /// certificate); the current one while the new files do not make a client (a renewal
    /// half written), until they do.
    fn renewed(&mut self, config: &Config) {
        let (Some(files), Some(material)) = (&config.tls, &self.tls) else { return };
        if !files.changed_since(material) {
            return;
        }
        match Client::new(config) {
            Ok(client) => {
                tracing::info!(exporter = "otlp", "TLS files changed; using them from now on");
                *self = client;
            }
            Err(reason) => {
                tracing::warn!(exporter = "otlp", %reason, "TLS files changed but cannot be used; keeping the previous ones");
            }
        }
    }

    /// Sends one request; returns what the receiver refused of it, if anything.
    async fn export(
        &mut self,
        config: &Config,
        request: ExportMetricsServiceRequest,
    ) -> Result<Option<ExportMetricsPartialSuccess>, Failure> {
        self.renewed(config);
        let at = &config.url;
        match &mut self.transport {
            Transport::Grpc(client) => {
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
            Transport::Http(client) => {
                let mut post = client
                    .post(at.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf");
                post = match config.compression {
                    OtlpCompression::None => post.body(request.encode_to_vec()),
                    OtlpCompression::Gzip => post
                        .header(reqwest::header::CONTENT_ENCODING, "gzip")
                        .body(gzip(&request.encode_to_vec())),
                };
                for (key, value) in &config.headers {
                    post = post.header(key, value);
                }
                let response = post.send().await.map_err(|e| {
                    let what = format!("OTLP endpoint {at} is not reachable: {e}");
                    Failure::Retry(with_causes(what, std::error::Error::source(&e)))
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

/// The gzip of an OTLP/HTTP body. Level 1: 16× smaller already, for 40 % of the CPU of zlib's
/// default level 6, which makes it 25× smaller (docs/benchmarks.md). gRPC's gzip is tonic's,
/// whose level is fixed at 6.
pub fn gzip(body: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing to a Vec cannot fail.
    encoder.write_all(body).and_then(|()| encoder.finish()).unwrap_or_default()
}

/// `text: cause: cause…`: reqwest's and tonic's own messages ("error sending request",
/// "transport error") leave out what failed, e.g. a certificate refused. A cause already said
/// is not repeated.
fn with_causes(mut text: String, first: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut next = first;
    while let Some(cause) = next {
        let more = cause.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        next = cause.source();
    }
    text
}

/// The system's authorities (what tonic's `with_native_roots` trusts), for reqwest, which is
/// built with no roots of its own; those that do not parse are left out, as tonic does.
fn system_roots() -> Vec<reqwest::Certificate> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(exporter = "otlp", error = %e, "reading the system's certificate authorities");
    }
    found.certs.iter().filter_map(|c| reqwest::Certificate::from_der(c).ok()).collect()
}

/// OTLP/gRPC's retryable codes (and the ones a configuration change fixes) are retried.
fn grpc_failure(status: &tonic::Status, at: &url::Url) -> Failure {
    use tonic::Code::*;
    let what = format!("OTLP endpoint {at}: {:?}: {}", status.code(), status.message());
    let reason = with_causes(what, std::error::Error::source(status));
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
            ("https://collector:4317/v2", Some(OtlpProtocol::Grpc), "a gRPC endpoint has no path"),
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
