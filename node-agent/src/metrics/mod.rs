//! What the agent exports: the metric catalog ([`catalog`]), the series store the collectors
//! write and `/metrics` reads ([`store`]), the per-pod series budget ([`budget`]), the run-time switchable metric sources ([`sources`]),
//! the agent's own metrics ([`agent`]) and the reference generated from them ([`doc`]).

pub mod agent;
pub mod budget;
pub mod catalog;
pub mod doc;
pub mod sources;
pub mod store;

pub use sources::Sources;
pub use store::{Labels, Sample, Store, TargetKey};
