//! The exporters' flags, flattened into the agent's command line. Addresses and credentials come
//! from here (the chart's values), never from a PodTrace.

use std::{path::PathBuf, time::Duration};

/// Push exporter flags. An exporter runs when its URL is set; a target's profile (`export`)
/// decides which running exporters receive its samples.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct ExporterArgs {
    /// NATS server URL (`nats://[user:password@]host:4222`, `tls://…`); enables the NATS exporter.
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,
    /// NATS subject of the node's kernel metrics.
    #[arg(long, env = "NATS_SUBJECT", default_value = "node.kernel.metrics")]
    pub nats_subject: String,
    /// NATS subject of the per-pod messages (one per traced container and interval).
    #[arg(long, env = "PODTRACE_NATS_POD_SUBJECT", default_value = "podtrace.pod.metrics")]
    pub nats_pod_subject: String,
    /// Name of this node, in every message (`proplet_id` in MQTT) and Influx's `node` tag.
    #[arg(long, env = "NODE_NAME", default_value = "")]
    pub node_name: String,
    /// Identifier of this agent instance, in the NATS messages and Influx's kernel line.
    #[arg(long, env = "INSTANCE_ID", default_value = "")]
    pub instance_id: String,

    /// MQTT broker URL (`mqtt://host:1883`, `mqtts://host:8883`); enables the MQTT exporter.
    #[arg(long, env = "PODTRACE_MQTT_URL")]
    pub mqtt_url: Option<String>,
    /// MQTT client id (default `podtrace-agent-<node name>`).
    #[arg(long, env = "PODTRACE_MQTT_CLIENT_ID")]
    pub mqtt_client_id: Option<String>,
    /// File holding `username:password` for the MQTT broker (a mounted Secret).
    #[arg(long, env = "PODTRACE_MQTT_CREDENTIALS_FILE")]
    pub mqtt_credentials_file: Option<PathBuf>,
    /// MQTT topic template; placeholders: {domain} {channel} {node} {namespace} {pod} {pod_uid}
    /// {container} ('/', '+' and '#' in their values become '_').
    #[arg(
        long,
        env = "PODTRACE_MQTT_TOPIC",
        default_value = "m/{domain}/c/{channel}/metrics/proplet"
    )]
    pub mqtt_topic: String,
    /// Value of {domain} in the MQTT topic.
    #[arg(long, env = "PODTRACE_MQTT_DOMAIN", default_value = "podtrace")]
    pub mqtt_domain: String,
    /// Value of {channel} in the MQTT topic.
    #[arg(long, env = "PODTRACE_MQTT_CHANNEL", default_value = "metrics")]
    pub mqtt_channel: String,

    /// Influx line-protocol endpoint: `tcp://host:port`, `udp://host:port` or
    /// `http://host:8086/write?db=NAME[&u=…&p=…&rp=…]`; enables the Influx exporter.
    #[arg(long, env = "PODTRACE_INFLUX_URL")]
    pub influx_url: Option<String>,

    /// OTLP endpoint: `http://collector:4317` (gRPC) or `http://collector:4318` (HTTP, `/v1/metrics`
    /// appended unless the path ends with it, e.g. Prometheus' `http://prometheus:9090/api/v1/otlp`),
    /// or `https://…` for TLS; enables the OTLP exporter.
    #[arg(long, env = "PODTRACE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// OTLP transport; by default `http/protobuf` when the endpoint's port is 4318 or it has a
    /// path, `grpc` otherwise.
    #[arg(long, env = "PODTRACE_OTLP_PROTOCOL", value_enum)]
    pub otlp_protocol: Option<OtlpProtocol>,
    /// Headers sent with every OTLP export, `key=value,key2=value2` (values percent-decoded, as
    /// in OTEL_EXPORTER_OTLP_HEADERS), e.g. an `authorization` for a gateway.
    #[arg(long, env = "PODTRACE_OTLP_HEADERS")]
    pub otlp_headers: Option<String>,
    /// Compression of the OTLP requests (OTEL_EXPORTER_OTLP_COMPRESSION's values): `gzip` makes
    /// them several times smaller for some CPU; every OTLP receiver accepts it.
    #[arg(long, env = "PODTRACE_OTLP_COMPRESSION", value_enum, default_value = "none")]
    pub otlp_compression: OtlpCompression,
    /// PEM file of the certificate authorities an `https://` OTLP endpoint is checked against,
    /// instead of the system's (`/etc/ssl/certs`, or `SSL_CERT_FILE`). Read again when it changes.
    #[arg(long, env = "PODTRACE_OTLP_CA_FILE")]
    pub otlp_ca_file: Option<PathBuf>,
    /// PEM certificate (chain) the agent presents to an `https://` OTLP endpoint that asks for
    /// one (mutual TLS), with --otlp-client-key-file. Read again when it changes (a renewal).
    #[arg(long, env = "PODTRACE_OTLP_CLIENT_CERT_FILE", requires = "otlp_client_key_file")]
    pub otlp_client_cert_file: Option<PathBuf>,
    /// PEM private key of --otlp-client-cert-file.
    #[arg(long, env = "PODTRACE_OTLP_CLIENT_KEY_FILE", requires = "otlp_client_cert_file")]
    pub otlp_client_key_file: Option<PathBuf>,

    /// Items each exporter keeps while its broker is away (oldest dropped first).
    #[arg(long, env = "PODTRACE_EXPORT_QUEUE_SIZE", default_value_t = 10_000)]
    pub export_queue_size: usize,
    /// Longest wait between reconnection attempts (exponential backoff with jitter from 100ms).
    #[arg(
        long,
        env = "PODTRACE_EXPORT_BACKOFF_MAX",
        default_value = "30s",
        value_parser = podtrace_api::duration::parse
    )]
    pub export_backoff_max: Duration,
}

/// The OTLP transports (the names of OTEL_EXPORTER_OTLP_PROTOCOL).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (`MetricsService/Export`).
    Grpc,
    /// OTLP/HTTP with a protobuf body (`POST /v1/metrics`).
    #[value(name = "http/protobuf")]
    HttpProtobuf,
}

/// The compressions of OTLP requests.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtlpCompression {
    /// Uncompressed.
    #[default]
    None,
    /// gzip (gRPC `grpc-encoding: gzip`, HTTP `Content-Encoding: gzip`).
    Gzip,
}

impl ExporterArgs {
    /// Arguments with every exporter off and the defaults of the flags.
    pub fn disabled() -> Self {
        ExporterArgs {
            nats_url: None,
            nats_subject: "node.kernel.metrics".into(),
            nats_pod_subject: "podtrace.pod.metrics".into(),
            node_name: String::new(),
            instance_id: String::new(),
            mqtt_url: None,
            mqtt_client_id: None,
            mqtt_credentials_file: None,
            mqtt_topic: "m/{domain}/c/{channel}/metrics/proplet".into(),
            mqtt_domain: "podtrace".into(),
            mqtt_channel: "metrics".into(),
            influx_url: None,
            otlp_endpoint: None,
            otlp_protocol: None,
            otlp_headers: None,
            otlp_compression: OtlpCompression::None,
            otlp_ca_file: None,
            otlp_client_cert_file: None,
            otlp_client_key_file: None,
            export_queue_size: 10_000,
            export_backoff_max: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ExporterArgs,
    }

    #[test]
    fn defaults_match_the_references_and_disabled() {
        let cli = Cli::try_parse_from(["agent"]).unwrap();
        // NATS_SUBJECT and friends may be set in the environment of whoever runs the tests.
        if std::env::vars().all(|(k, _)| !k.starts_with("NATS_") && !k.starts_with("PODTRACE_")) {
            assert_eq!(cli.args.nats_subject, "node.kernel.metrics");
            let mut disabled = ExporterArgs::disabled();
            disabled.node_name = cli.args.node_name.clone();
            disabled.instance_id = cli.args.instance_id.clone();
            assert_eq!(cli.args, disabled);
        }
        let cli = Cli::try_parse_from(["agent", "--export-backoff-max", "500ms"]).unwrap();
        assert_eq!(cli.args.export_backoff_max, Duration::from_millis(500));
    }
}
