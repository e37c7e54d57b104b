//! `tracing` setup with `--log-format plain|json` and `--log-level` (an `EnvFilter` directive).

use clap::{Args, ValueEnum};
use tracing_subscriber::{
    EnvFilter, Registry, layer::SubscriberExt, reload, util::SubscriberInitExt,
};

/// How log lines are written to stderr.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logging flags shared by every podtrace binary.
#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, env = "PODTRACE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain, global = true)]
    pub log_format: LogFormat,
    /// Log filter in `tracing` EnvFilter syntax, e.g. `info` or `info,podtrace_agent=debug`.
    #[arg(long, env = "PODTRACE_LOG", default_value = "info", global = true)]
    pub log_level: String,
}

/// Changes the log filter of a running process (the admin channel's `L` command).
pub type LogReloadHandle = reload::Handle<EnvFilter, Registry>;

/// A log filter that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid log filter {filter:?}: {source}")]
pub struct InvalidFilter {
    /// The rejected filter text.
    pub filter: String,
    /// Why it was rejected.
    #[source]
    pub source: tracing_subscriber::filter::ParseError,
}

/// Parses an EnvFilter directive with an error that quotes it.
pub fn parse_filter(filter: &str) -> Result<EnvFilter, InvalidFilter> {
    EnvFilter::try_new(filter).map_err(|source| InvalidFilter { filter: filter.to_owned(), source })
}

impl LogArgs {
    /// Installs the global subscriber and returns the handle that changes its filter.
    pub fn init(&self) -> Result<LogReloadHandle, InvalidFilter> {
        let (filter, handle) = reload::Layer::new(parse_filter(&self.log_level)?);
        let registry = tracing_subscriber::registry().with(filter);
        let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        match self.log_format {
            LogFormat::Plain => registry.with(fmt).init(),
            LogFormat::Json => registry.with(fmt.json().flatten_event(true)).init(),
        }
        Ok(handle)
    }
}
