//! The agent's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the agent, with the context a user needs to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file under /sys/fs/cgroup or /proc could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file under /sys/fs/cgroup or /proc did not have the expected format.
    #[error("parsing {path}: unexpected content (expected {expected})")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was expected.
        expected: &'static str,
    },
    /// The standalone configuration file is invalid; the previous configuration keeps running.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong and where.
        message: String,
    },
    /// A call to the Kubernetes API failed.
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// The push exporters' flags are invalid.
    #[error("exporters: {0}")]
    Export(#[from] crate::exporters::ExportError),
    /// `top` could not read the agent's endpoint.
    #[error("reading {endpoint}/metrics: {source} (is the agent running? set --endpoint)")]
    Http {
        /// The endpoint.
        endpoint: String,
        /// The HTTP error.
        #[source]
        source: reqwest::Error,
    },
    /// `top` could not write its table.
    #[error("writing to standard output: {0}")]
    Output(#[source] std::io::Error),
    /// The metrics or health server did not start (TLS files, a taken port).
    #[error(transparent)]
    Start(#[from] podtrace_runtime::servers::ServeError),
    /// A socket could not be bound or served.
    #[error("{what} on {addr}: {source}")]
    Serve {
        /// The server (admin channel, metrics, health).
        what: &'static str,
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The `reason` label of `podtrace_agent_errors_total` for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Read { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => "not_found",
                std::io::ErrorKind::PermissionDenied => "permission_denied",
                _ => "io",
            },
            Error::Parse { .. } => "parse",
            Error::Config { .. } => "config",
            Error::Kube(_) => "kubernetes",
            Error::Export(_) => "exporters",
            Error::Http { .. } => "http",
            Error::Output(_) => "io",
            Error::Serve { .. } => "serve",
            Error::Start(podtrace_runtime::servers::ServeError::Tls(_)) => "tls",
            Error::Start(podtrace_runtime::servers::ServeError::Bind { .. }) => "serve",
        }
    }
}

/// The agent's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
