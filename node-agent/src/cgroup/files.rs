//! Parsers of the cgroup files the resource collector reads, v2 and v1 (pure functions).
//!
//! | resource | v2 | v1 |
//! |---|---|---|
//! | memory | `memory.max`, `memory.current` | `memory.limit_in_bytes`, `memory.usage_in_bytes` |
//! | cpu | `cpu.max`, `cpu.stat` (`usage_usec`) | `cpu.cfs_quota_us`, `cpu.cfs_period_us`, `cpuacct.usage` (ns) |
//! | io | `io.max`, `io.stat` | `blkio.throttle.{read,write}_bps_device`, `blkio.throttle.io_service_bytes` |

/// v1 reports "no limit" as the largest page-aligned `i64` (9223372036854771712); anything at or
/// above 2^62 is treated as unlimited.
const V1_UNLIMITED: u64 = 1 << 62;

/// A number file (`memory.current`, `cpuacct.usage`).
pub fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// A v2 limit: a number, or `max` for none.
pub fn parse_v2_limit(text: &str) -> Option<u64> {
    match text.trim() {
        "max" => None,
        n => n.parse().ok(),
    }
}

/// A v1 byte limit; the "unlimited" sentinel gives `None`.
pub fn parse_v1_limit(text: &str) -> Option<u64> {
    parse_u64(text).filter(|&n| n < V1_UNLIMITED)
}

/// A CPU bandwidth limit: quota and period in microseconds per period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuQuota {
    /// Microseconds of CPU time the group may use per period.
    pub quota_us: u64,
    /// The period in microseconds.
    pub period_us: u64,
}

impl CpuQuota {
    /// The limit in CPUs (cores).
    pub fn cores(self) -> f64 {
        self.quota_us as f64 / self.period_us.max(1) as f64
    }
}

/// v2 `cpu.max` ("50000 100000", or "max 100000" for none).
pub fn parse_cpu_max(text: &str) -> Option<CpuQuota> {
    let mut parts = text.split_whitespace();
    let quota_us = parts.next()?.parse().ok()?;
    let period_us = parts.next().map_or(Some(100_000), |p| p.parse().ok())?;
    Some(CpuQuota { quota_us, period_us })
}

/// v1 `cpu.cfs_quota_us` ("-1" for none) and `cpu.cfs_period_us`.
pub fn parse_cfs(quota: &str, period: &str) -> Option<CpuQuota> {
    let quota: i64 = quota.trim().parse().ok()?;
    let period = parse_u64(period)?;
    (quota > 0).then_some(CpuQuota { quota_us: quota as u64, period_us: period })
}

/// A value of a flat-keyed file such as v2 `cpu.stat` (`usage_usec 123`).
pub fn parse_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Bytes read and written, summed over devices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoBytes {
    /// Bytes read.
    pub read: u64,
    /// Bytes written.
    pub write: u64,
}

/// v2 `io.stat` (`8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0`), summed over devices.
pub fn parse_io_stat(text: &str) -> IoBytes {
    let mut out = IoBytes::default();
    for field in text.split_whitespace() {
        match field.split_once('=') {
            Some(("rbytes", v)) => out.read += v.parse::<u64>().unwrap_or(0),
            Some(("wbytes", v)) => out.write += v.parse::<u64>().unwrap_or(0),
            _ => {}
        }
    }
    out
}

/// v2 `io.max` (`8:0 rbps=1048576 wbps=max riops=max wiops=max`): the sum of the finite read and
/// write byte rates, in bytes per second, or `None` when no byte rate is limited.
pub fn parse_io_max(text: &str) -> Option<u64> {
    let limits: Vec<u64> = text
        .split_whitespace()
        .filter_map(|f| match f.split_once('=') {
            Some(("rbps" | "wbps", v)) => v.parse().ok(),
            _ => None,
        })
        .collect();
    (!limits.is_empty()).then(|| limits.iter().sum())
}

/// v1 `blkio.throttle.io_service_bytes` (`8:0 Read 123`, `8:0 Write 45`, `Total 168`).
pub fn parse_blkio_bytes(text: &str) -> IoBytes {
    let mut out = IoBytes::default();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(_dev), Some(op), Some(v)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let v: u64 = v.parse().unwrap_or(0);
        match op {
            "Read" => out.read += v,
            "Write" => out.write += v,
            _ => {}
        }
    }
    out
}

/// v1 `blkio.throttle.read_bps_device` / `write_bps_device` (`8:0 1048576` per line): the sum,
/// or `None` when empty.
pub fn parse_blkio_throttle(text: &str) -> Option<u64> {
    let limits: Vec<u64> =
        text.lines().filter_map(|l| l.split_whitespace().nth(1)?.parse().ok()).collect();
    (!limits.is_empty()).then(|| limits.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_limits_parse_numbers_and_max() {
        assert_eq!(parse_v2_limit("67108864\n"), Some(67108864));
        assert_eq!(parse_v2_limit("max\n"), None);
        assert_eq!(parse_v2_limit("junk"), None);
        assert_eq!(parse_u64("123456\n"), Some(123456));
    }

    #[test]
    fn v1_unlimited_sentinel_is_no_limit() {
        assert_eq!(parse_v1_limit("9223372036854771712\n"), None);
        assert_eq!(parse_v1_limit("67108864\n"), Some(67108864));
    }

    #[test]
    fn cpu_max_and_cfs_give_quota_and_period() {
        let q = parse_cpu_max("50000 100000\n").unwrap();
        assert_eq!(q, CpuQuota { quota_us: 50000, period_us: 100000 });
        assert_eq!(q.cores(), 0.5);
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cfs("-1\n", "100000\n"), None);
        assert_eq!(parse_cfs("200000\n", "100000\n").unwrap().cores(), 2.0);
    }

    #[test]
    fn cpu_stat_usage_usec_is_found_by_key() {
        let stat = "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\nnr_periods 0\n";
        assert_eq!(parse_keyed(stat, "usage_usec"), Some(1234567));
        assert_eq!(parse_keyed(stat, "usage"), None);
    }

    #[test]
    fn io_stat_sums_devices_and_io_max_sums_finite_rates() {
        let stat = "8:0 rbytes=1000 wbytes=20 rios=3 wios=4 dbytes=0 dios=0\n259:0 rbytes=5 wbytes=7 rios=1 wios=1\n";
        assert_eq!(parse_io_stat(stat), IoBytes { read: 1005, write: 27 });
        assert_eq!(parse_io_max("8:0 rbps=1048576 wbps=max riops=max wiops=max\n"), Some(1048576));
        assert_eq!(parse_io_max("8:0 rbps=10 wbps=20 riops=max wiops=max\n"), Some(30));
        assert_eq!(parse_io_max("8:0 rbps=max wbps=max riops=100 wiops=max\n"), None);
        assert_eq!(parse_io_max(""), None);
    }

    #[test]
    fn blkio_files_parse_per_device_lines() {
        let bytes = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n8:0 Total 12288\nTotal 12288\n";
        assert_eq!(parse_blkio_bytes(bytes), IoBytes { read: 4096, write: 8192 });
        assert_eq!(parse_blkio_throttle("8:0 1048576\n8:16 1048576\n"), Some(2097152));
        assert_eq!(parse_blkio_throttle(""), None);
    }
}
