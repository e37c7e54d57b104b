//! podtrace's Kubernetes API: the four custom resources of `podtrace.dev/v1alpha1`, the six
//! built-in monitoring presets, and the pure functions the operator uses to turn them into
//! agent configuration and the agents use to read it.
//!
//! ```text
//!  MonitoringProfile (cluster)      PodTrace (namespaced)
//!   what to collect, how often  ◄──  profileRef | inline profile | automatic
//!        ▲                │                 │ selector over pods
//!        │ profileRef     │ effective::choices (operator)
//!        │                ▼                 ▼
//!  PodTraceProfile (namespaced, one per PodTrace)   NodeTrace (cluster, one per node):
//!   the profile per owner kind             ◄─by=──   pods and the PodTraces selecting each;
//!        │                                            status by the agent
//!        └── NodeTraceSpec::settings_for (agent): merge::merge_profiles over by=
//! ```
//!
//! It also holds what the agent and the `kubectl podtrace` plugin both read: the health levels
//! ([`health`]) and the `top` table over an agent's `/metrics` ([`top`]).
//!
//! Nothing in this crate does I/O; everything is plain data and functions with unit tests.

pub mod catalog;
pub mod crds;
pub mod duration;
pub mod effective;
pub mod hash;
pub mod health;
pub mod merge;
pub mod nodetrace;
pub mod podtrace;
pub mod podtraceprofile;
pub mod presets;
pub mod profile;
pub mod status;
pub mod top;

pub use effective::{EffectiveProfile, ProfileError, ProfileSource};
pub use nodetrace::{NodeTrace, NodeTraceSpec, NodeTraceStatus};
pub use podtrace::{PodTrace, PodTraceSpec, PodTraceStatus};
pub use podtraceprofile::{PodTraceProfile, PodTraceProfileSpec, SharedSettings};
pub use profile::{MonitoringProfile, MonitoringProfileSpec, Probe};

/// The API group of every podtrace resource.
pub const GROUP: &str = "podtrace.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
