//! podtrace node agent: finds the cgroups of the traced pods (or, standalone, of local cgroups
//! and processes), collects cgroup limits and usage, per-process stats from `/proc` and node
//! kernel stats, and serves them on `/metrics`, to the push exporters and on the admin channel.
//!
//! ```text
//!  NodeTrace (cluster) ─┐                              ┌─► metrics::Store ─► /metrics, top
//!  config file (local) ─┴► targets ─► cgroup ─► collectors ─┤
//!                                                          └─► exporters (push)
//! ```

pub mod admin_channel;
pub mod app;
pub mod cgroup;
pub mod channel;
pub mod cli;
pub mod cluster;
pub mod collectors;
pub mod engine;
pub mod error;
pub mod exporters;
pub mod glob;
pub mod health;
pub mod metrics;
pub mod procfs;
pub mod sample;
pub mod serve;
pub mod standalone;
pub mod targets;
pub mod top;

pub use error::{Error, Result};
