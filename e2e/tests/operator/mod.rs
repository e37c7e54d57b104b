//! The operator against the real API server, run as a process (`target/debug/podtrace-operator`).

mod availability;
mod consent;
mod expiry;
pub(crate) mod fixture;
mod formats;
mod lifecycle;
mod profiles;
mod selection;
