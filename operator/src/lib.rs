//! podtrace operator: turns PodTraces and MonitoringProfiles into one PodTraceProfile per
//! PodTrace and one NodeTrace per node, and rolls the node agents' results up into every
//! PodTrace's status.
//!
//! ```text
//!  watch.rs ── Pods (projected), Nodes (metadata), Profiles, NodeTraces, PodTraces,
//!     │        PodTraceProfiles (metadata), Namespaces (metadata)
//!     │ events                       │
//!     ▼                              ▼
//!  index/ (one pure state) + desired.rs / status.rs  ◄── pure, unit-tested
//!     │        (expiry.rs: spec.duration; reach.rs: spec.namespaceSelector)
//!     │ dirty PodTraces and nodes     │ PodTraces to roll up
//!     ▼                               ▼
//!  writer.rs: podtraceprofile.rs      podtrace.rs (Controller<PodTrace>:
//!   then nodetrace.rs (SSA, only       finalizer, status by SSA, Events)
//!   when the hash changed; delete)
//!                 ▲ only while leader.rs holds the Lease
//! ```
//!
//! `cli.rs` wires it (on `podtrace-runtime`'s stop, servers and identity); `fixtures.rs` is the
//! mocked API server of the reconcile tests.

pub mod cli;
pub mod context;
pub mod desired;
pub mod error;
pub mod expiry;
pub mod fingerprint;
#[cfg(test)]
mod fixtures;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod nodetrace;
pub mod podtrace;
pub mod podtraceprofile;
pub mod presets;
pub mod reach;
pub mod selector;
pub mod status;
pub mod watch;
pub mod watched_pod;
pub mod writer;

pub use error::{Error, Result};

/// Field manager of every write of the operator (server-side apply and creates).
pub const FIELD_MANAGER: &str = "podtrace-operator";

/// Annotation holding the content hash of what the operator last applied to a NodeTrace
/// ([`desired::spec_hash`]) or a PodTraceProfile: a restarted or newly elected operator
/// compares with it instead of writing.
pub const SPEC_HASH_ANNOTATION: &str = "podtrace.dev/spec-hash";
