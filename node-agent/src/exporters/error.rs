//! The exporters' error type: what went wrong at start, phrased as advice.

use std::path::PathBuf;

/// A push exporter could not be configured. Returned by [`super::Exporters::start`] so that a bad
/// flag stops the agent once, with a message naming the flag, instead of a crash loop.
///
/// A broker that is merely unreachable is *not* an error: the exporter starts not connected and
/// reconnects by itself (see [`super::ExportersHealth`]).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A URL flag could not be parsed or uses an unsupported scheme.
    #[error("{flag} {url:?} is not valid: {reason} (expected {expected})")]
    InvalidUrl {
        /// The flag (and its environment variable).
        flag: &'static str,
        /// The rejected value.
        url: String,
        /// What is wrong with it.
        reason: String,
        /// What a valid value looks like.
        expected: &'static str,
    },
    /// The MQTT topic template has an unknown placeholder or a wildcard.
    #[error(
        "--mqtt-topic {template:?} is not valid: {reason} (placeholders: {{domain}} {{channel}} \
         {{node}} {{namespace}} {{pod}} {{pod_uid}} {{container}}; no '+' or '#')"
    )]
    InvalidTopic {
        /// The rejected template.
        template: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A credentials file could not be read or has the wrong shape.
    #[error(
        "reading the credentials file {path}: {reason} (expected one line \"username:password\")"
    )]
    Credentials {
        /// The file named by the flag.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// `--otlp-headers` is not a list of `key=value` headers (the message never shows a value:
    /// headers carry tokens).
    #[error(
        "--otlp-headers (PODTRACE_OTLP_HEADERS) is not valid: {reason} (expected key=value,key2=value2)"
    )]
    InvalidHeaders {
        /// What is wrong with it.
        reason: String,
    },
    /// A TLS file of the OTLP exporter could not be read or holds nothing usable, or was given
    /// for an endpoint without TLS.
    #[error("{flag} {path}: {reason}")]
    TlsFile {
        /// The flag (and its environment variable).
        flag: &'static str,
        /// The file it names.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A flag that must be positive was zero.
    #[error("{flag} must be at least 1")]
    Zero {
        /// The flag.
        flag: &'static str,
    },
    /// The HTTP client for Influx `/write` or OTLP/HTTP could not be built.
    #[error("building the HTTP client of an exporter: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// A message could not be serialized (a bug: the types always serialize).
    #[error("encoding a message as JSON: {0}")]
    Json(#[from] serde_json::Error),
}
