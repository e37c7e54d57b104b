//! The node agent against the real API server: a NodeTrace created by hand makes the agent (run
//! as a process, cluster mode) find the pods' cgroups, laid out as a kubelet with the systemd
//! driver and containerd lays them out, with real processes, and write its status.

mod metrics_auth;
mod nodetrace;
