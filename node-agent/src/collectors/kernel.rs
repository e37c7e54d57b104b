//! The `kernel` source: node-wide kernel statistics, as the kernel-metrics reference names them.
//!
//! - `node_context_switches_total`: the `ctxt` line of `/proc/stat` (all CPUs, since boot).
//! - `node_entropy_available_bits`: `/proc/sys/kernel/random/entropy_avail` (256 on kernels
//!   since 5.18, whose pool no longer drains).
//! - `node_network_connections_total`: the sockets of the node's network namespace, every line
//!   of `tcp`, `tcp6`, `udp` and `udp6` in any state (LISTEN, ESTABLISHED, TIME_WAIT, …), read
//!   from `<proc-root>/1/net/`: the tables of the host's init process. `/proc/net` would be the
//!   reader's own namespace, and the chart runs the agent without `hostNetwork` (its pod has a
//!   network namespace of its own) but with `hostPID` and the host's `/proc` at `/host/proc`, so
//!   pid 1 there is the host's. Pods in their own network namespaces are not counted.

use std::time::SystemTime;

use crate::{
    metrics::{Labels, Sample, catalog::*},
    procfs,
    sample::KernelSample,
};

/// Reads the node's kernel statistics from `proc` (normally `/proc`), stamped `at`.
pub fn read(proc: &std::path::Path, at: SystemTime) -> crate::Result<KernelSample> {
    let stat_path = proc.join("stat");
    let context_switches = procfs::parse_context_switches(&procfs::read(&stat_path)?)
        .ok_or(crate::Error::Parse { path: stat_path, expected: "a ctxt line" })?;
    let entropy_path = proc.join("sys/kernel/random/entropy_avail");
    let entropy_available_bits = crate::cgroup::files::parse_u64(&procfs::read(&entropy_path)?)
        .ok_or(crate::Error::Parse { path: entropy_path, expected: "a number" })?;
    let mut network_connections = 0;
    for table in ["1/net/tcp", "1/net/tcp6", "1/net/udp", "1/net/udp6"] {
        // A kernel without IPv6 has no tcp6/udp6: nothing to count there.
        if let Ok(text) = std::fs::read_to_string(proc.join(table)) {
            network_connections += procfs::count_socket_lines(&text);
        }
    }
    Ok(KernelSample {
        context_switches_total: context_switches,
        entropy_available_bits,
        network_connections_total: network_connections,
        timestamp: at,
    })
}

/// The samples of a reading.
pub fn samples(r: &KernelSample) -> Vec<Sample> {
    vec![
        Sample::new(NODE_CONTEXT_SWITCHES, Labels::default(), r.context_switches_total as f64),
        Sample::new(NODE_ENTROPY, Labels::default(), r.entropy_available_bits as f64),
        Sample::new(NODE_CONNECTIONS, Labels::default(), r.network_connections_total as f64),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_nodes_proc_and_counts_sockets_like_ss() {
        let r = read(std::path::Path::new("/proc"), SystemTime::now()).unwrap();
        assert!(r.context_switches_total > 0);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let after = read(std::path::Path::new("/proc"), SystemTime::now()).unwrap();
        assert!(after.network_connections_total >= 1);
        drop(listener);
        assert_eq!(samples(&after).len(), 3);
    }

    /// The agent's pod has a network namespace of its own: the node's sockets are those of the
    /// host's init (`<proc-root>/1/net`), not the reader's (`<proc-root>/net`).
    #[test]
    fn connections_are_the_host_init_processs_not_the_readers() {
        let dir = std::env::temp_dir().join(format!("podtrace-knet-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sys/kernel/random")).unwrap();
        std::fs::create_dir_all(dir.join("net")).unwrap();
        std::fs::create_dir_all(dir.join("1/net")).unwrap();
        std::fs::write(dir.join("stat"), "cpu 1 2 3\nctxt 42\n").unwrap();
        std::fs::write(dir.join("sys/kernel/random/entropy_avail"), "256\n").unwrap();
        let header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
        let socket = "   0: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n";
        // The reader's own namespace (the agent pod's): one socket.
        std::fs::write(dir.join("net/tcp"), format!("{header}{socket}")).unwrap();
        // The host's: three TCP and one UDP socket.
        std::fs::write(dir.join("1/net/tcp"), format!("{header}{socket}{socket}{socket}")).unwrap();
        std::fs::write(dir.join("1/net/udp"), format!("{header}{socket}")).unwrap();
        let r = read(&dir, SystemTime::now()).unwrap();
        assert_eq!(r.network_connections_total, 4);
        assert_eq!(r.context_switches_total, 42);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_proc_without_ctxt_is_a_parse_error() {
        let dir = std::env::temp_dir().join(format!("podtrace-kproc-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sys/kernel/random")).unwrap();
        std::fs::write(dir.join("stat"), "cpu 1 2 3\n").unwrap();
        let err = read(&dir, SystemTime::now()).unwrap_err();
        assert_eq!(err.reason(), "parse");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
