//! podtrace node agent: finds the cgroups of the traced pods (or, standalone, of local cgroups
//! and processes), collects cgroup limits and usage, per-process stats from `/proc` and node
//! kernel stats, and serves them on `/metrics`, to the push exporters and on the admin channel.
//!
//! ```text
//!  cluster/ (NodeTrace watch) ─┐ watch    engine/ (own thread):      ┌─► metrics::Store ─► /metrics (serve.rs), top
//!  standalone/ (file reload) ──┴channel─► resolve ─► set_targets,     │
//!                                         tick: collectors/ per source┼─► exporters/ (push, sample.rs)
//!                                         EngineStatus (watch channel)└─► cluster/writer.rs, health
//! ```
//!
//! `app.rs` wires it; `main.rs` parses the command line.

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
pub mod gaps;
pub mod glob;
pub mod health;
pub mod memlock;
pub mod metrics;
pub mod open_files;
pub mod procfs;
pub mod sample;
pub mod serve;
pub mod standalone;
pub mod targets;
pub mod top;

pub use error::{Error, Result};
