//! End-to-end tests against a real kube-apiserver and etcd. One control plane serves the whole
//! run (see `podtrace_e2e::control_plane`); every test works in a namespace of its own.

mod agent;
mod api;
mod chart;
mod docs;
mod node;
mod operator;
mod plugin;
mod scrape;
