//! The collectors, one per metric source: each reads its files for one target (I/O) and turns
//! the readings into samples (pure, unit-tested).

pub mod ebpf;
pub mod kernel;
pub mod process;
pub mod resource;
