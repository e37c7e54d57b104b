//! Parsers of the `/proc` files the process and kernel collectors read (pure functions), and
//! the small readers around them.

use crate::cgroup::files::IoBytes;

/// `USER_HZ`: the unit of the tick counts in `/proc/<pid>/stat`. It is 100 on every Linux
/// architecture the agent runs on (x86_64, arm64); the kernel keeps it fixed for user space
/// regardless of `CONFIG_HZ` (include/asm-generic/param.h).
pub const USER_HZ: f64 = 100.0;

/// The fields of `/proc/<pid>/stat` the agent uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PidStat {
    /// The command name (comm), without the parentheses.
    pub comm: String,
    /// User plus system CPU time, in ticks of [`USER_HZ`].
    pub cpu_ticks: u64,
    /// Number of threads.
    pub threads: u64,
    /// Start time after boot, in ticks.
    pub start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`. The comm may contain spaces and parentheses, so fields are counted
/// from the last `)`.
pub fn parse_pid_stat(text: &str) -> Option<PidStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    // Field 3 (state) is index 0 after the comm; see proc_pid_stat(5).
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { rest.get(n - 3)?.parse().ok() };
    Some(PidStat {
        comm,
        cpu_ticks: field(14)? + field(15)?,
        threads: field(20)?,
        start_ticks: field(22)?,
    })
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes (kernel threads have none).
pub fn parse_status_rss(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix("VmRSS:")?;
        Some(v.split_whitespace().next()?.parse::<u64>().ok()? * 1024)
    })
}

/// `read_bytes` and `write_bytes` of `/proc/<pid>/io`: bytes the process made the storage layer
/// fetch or send (page-cache hits are not counted).
pub fn parse_pid_io(text: &str) -> IoBytes {
    let get = |key: &str| {
        text.lines().find_map(|l| l.strip_prefix(key)?.trim().parse().ok()).unwrap_or(0)
    };
    IoBytes { read: get("read_bytes:"), write: get("write_bytes:") }
}

/// Received and transmitted bytes of `/proc/<pid>/net/dev`, summed over every interface but `lo`.
pub fn parse_net_dev(text: &str) -> (u64, u64) {
    let mut rx = 0;
    let mut tx = 0;
    for line in text.lines().skip(2) {
        let Some((iface, counters)) = line.split_once(':') else { continue };
        if iface.trim() == "lo" {
            continue;
        }
        let c: Vec<u64> = counters.split_whitespace().filter_map(|v| v.parse().ok()).collect();
        if c.len() >= 16 {
            rx += c[0];
            tx += c[8];
        }
    }
    (rx, tx)
}

/// Seconds since boot from `/proc/uptime`.
pub fn parse_uptime(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn parse_mem_total(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        Some(l.strip_prefix("MemTotal:")?.split_whitespace().next()?.parse::<u64>().ok()? * 1024)
    })
}

/// The `ctxt` line of `/proc/stat`: context switches since boot, all CPUs.
pub fn parse_context_switches(text: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix("ctxt ")?.trim().parse().ok())
}

/// The number of sockets in a `/proc/net/{tcp,tcp6,udp,udp6}` table (one line per socket after
/// the header, in every state including LISTEN and TIME_WAIT).
pub fn count_socket_lines(text: &str) -> u64 {
    text.lines().skip(1).filter(|l| !l.trim().is_empty()).count() as u64
}

/// Reads a `/proc` file to a string.
pub fn read(path: impl AsRef<std::path::Path>) -> crate::Result<String> {
    let path = path.as_ref();
    std::fs::read_to_string(path)
        .map_err(|source| crate::Error::Read { path: path.to_owned(), source })
}

/// The number of entries of a directory (`/proc/<pid>/fd`, `/proc/<pid>/task`).
pub fn count_dir(path: impl AsRef<std::path::Path>) -> crate::Result<u64> {
    let path = path.as_ref();
    let entries = std::fs::read_dir(path)
        .map_err(|source| crate::Error::Read { path: path.to_owned(), source })?;
    Ok(entries.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_stat_handles_comm_with_spaces_and_parens() {
        let text = "4242 (my (weird) proc) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150 50 0 0 20 0 7 0 123456 10000000 500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let s = parse_pid_stat(text).unwrap();
        assert_eq!(s.comm, "my (weird) proc");
        assert_eq!(s.cpu_ticks, 200);
        assert_eq!(s.threads, 7);
        assert_eq!(s.start_ticks, 123456);
        assert_eq!(parse_pid_stat("12 (x) S 1"), None);
    }

    #[test]
    fn status_rss_is_in_bytes() {
        let text = "Name:\tcat\nVmPeak:\t  10000 kB\nVmRSS:\t    1536 kB\nThreads:\t1\n";
        assert_eq!(parse_status_rss(text), Some(1536 * 1024));
        assert_eq!(parse_status_rss("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn pid_io_reads_storage_bytes_not_rchar() {
        let text = "rchar: 999\nwchar: 888\nsyscr: 1\nsyscw: 1\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_pid_io(text), IoBytes { read: 4096, write: 8192 });
    }

    #[test]
    fn net_dev_sums_interfaces_except_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n  eth0: 2048 5 0 0 0 0 0 0 4096 6 0 0 0 0 0 0\n  eth1: 2 1 0 0 0 0 0 0 4 1 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(text), (2050, 4100));
    }

    #[test]
    fn node_files_parse() {
        assert_eq!(parse_uptime("12345.67 23456.78\n"), Some(12345.67));
        assert_eq!(
            parse_mem_total("MemTotal:       24684000 kB\nMemFree: 1 kB\n"),
            Some(24684000 * 1024)
        );
        assert_eq!(
            parse_context_switches("cpu  1 2 3\nintr 5\nctxt 987654321\nbtime 1\n"),
            Some(987654321)
        );
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n   1: 0100007F:0BB8 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n";
        assert_eq!(count_socket_lines(tcp), 2);
    }
}
