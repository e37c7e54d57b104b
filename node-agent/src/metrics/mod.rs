//! What the agent exports: the metric catalog ([`catalog`]), the series store the collectors
//! write and `/metrics` reads ([`store`]), the run-time switchable metric sources ([`sources`])
//! and the agent's own metrics ([`agent`]).

pub mod agent;
pub mod catalog;
pub mod sources;
pub mod store;

pub use sources::Sources;
pub use store::{Labels, Sample, Store, TargetKey};
