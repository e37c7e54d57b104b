//! Cluster mode: the node's `NodeTrace` (its pods, and the PodTraces that select each) and the
//! shared settings objects (PodTraceProfiles, MonitoringProfiles) are the configuration, and
//! the agent reports what it achieved in the NodeTrace's status.
//!
//! ```text
//!  API server ──watch NodeTrace/<node>, ──► watch.rs ──Desired (watch channel)──┐
//!             PodTraceProfiles, MonitoringProfiles                              ▼
//!                                   resolve.rs (spec + settings → cgroups) ◄── engine thread
//!                                                                             │ EngineStatus
//!                                                                             ▼ (watch channel)
//!  API server ◄──SSA NodeTrace/<node>/status── writer.rs ◄── status.rs (spec + engine → status)
//! ```
//!
//! Each stage wakes when its input changes: the watch on the API server's events, the engine on
//! a new Desired, the writer on a new Desired or EngineStatus (at most once a second) and for
//! the heartbeat every 30 s.

pub mod resolve;
pub mod status;
pub mod watch;
pub mod writer;

use podtrace_api::{NodeTraceSpec, SharedSettings};
use std::time::Duration;

pub use resolve::resolve;
pub use watch::watch;
pub use writer::{StatusWriter, kernel_features, write_status};

/// The field manager of the agent's status writes.
pub const FIELD_MANAGER: &str = "podtrace-agent";
/// Heartbeat period.
pub const HEARTBEAT: Duration = Duration::from_secs(30);

/// The latest NodeTrace of this node (no spec before the first event or after deletion) and
/// the shared settings its pods refer to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Desired {
    /// The spec.
    pub spec: Option<NodeTraceSpec>,
    /// Its metadata.generation.
    pub generation: Option<i64>,
    /// The PodTraceProfiles and MonitoringProfiles the spec's pods refer to (format 2).
    pub shared: SharedSettings,
}
