//! podtrace's Kubernetes API: the three custom resources of `podtrace.dev/v1alpha1`, the six
//! built-in monitoring presets, and the pure functions the operator uses to turn them into
//! per-node agent configuration.
//!
//! ```text
//!  MonitoringProfile (cluster)      PodTrace (namespaced)
//!   what to collect, how often  ◄──  profileRef | inline profile | automatic
//!                │                       │ selector over pods
//!                └──── effective::resolve ┘
//!                          │ one effective profile per (PodTrace, pod)
//!                          ▼
//!                 merge::merge_profiles  (union of collectors/probes, smallest interval, …)
//!                          │
//!                          ▼
//!                 NodeTrace (cluster, one per node): spec by the operator, status by the agent
//! ```
//!
//! Nothing in this crate does I/O; everything is plain data and functions with unit tests.

pub mod catalog;
pub mod crds;
pub mod duration;
pub mod effective;
pub mod hash;
pub mod merge;
pub mod nodetrace;
pub mod podtrace;
pub mod presets;
pub mod profile;
pub mod status;

pub use effective::{EffectiveProfile, ProfileError, ProfileSource};
pub use nodetrace::{NodeTrace, NodeTraceSpec, NodeTraceStatus};
pub use podtrace::{PodTrace, PodTraceSpec, PodTraceStatus};
pub use profile::{MonitoringProfile, MonitoringProfileSpec, Probe};

/// The API group of every podtrace resource.
pub const GROUP: &str = "podtrace.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
