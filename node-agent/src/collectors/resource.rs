//! The `resource` source: limits and usage from cgroup files, with utilization and alert levels.
//!
//! Series (labels `resource_type`, `namespace`, `pod`, `container`):
//! - memory: limit and usage in bytes; utilization = usage / limit.
//! - cpu: limit = quota in µs per period, usage = CPU time in µs since the group was created;
//!   utilization = CPU time used per second over the last interval / (quota / period).
//! - io: limit = the sum of the byte-rate limits (bytes/s), usage = bytes read plus written;
//!   utilization = bytes per second over the last interval / limit.
//!
//! Without a limit only usage is exported. CPU and I/O utilization need two readings, so they
//! appear from the second collection on.

use podtrace_api::profile::{CollectSettings, ResourceLimits};
use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
};

use crate::{
    cgroup::{
        Cgroup,
        files::{self, CpuQuota, IoBytes},
    },
    metrics::{Labels, Sample, catalog::*},
    procfs::{self, KeptFile},
    sample::ResourceSample,
};

/// One reading of a group's files.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Reading {
    /// Memory usage and limit in bytes.
    pub memory: Option<(u64, Option<u64>)>,
    /// CPU time in µs and quota.
    pub cpu: Option<(u64, Option<CpuQuota>)>,
    /// I/O bytes and byte-rate limit.
    pub io: Option<(IoBytes, Option<u64>)>,
}

/// How long limit files (`memory.max`, `cpu.max`, `io.max` and their v1 equivalents) are reused
/// before they are read again. Limits change only when a pod is resized in place, so reading them
/// every interval doubled the collector's file reads for nothing; a resize shows within this.
pub const LIMITS_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// The cgroup files of one target, kept open between collections (see [`KeptFile`]).
#[derive(Debug, Default)]
pub struct GroupFiles {
    files: HashMap<&'static str, KeptFile>,
}

impl GroupFiles {
    /// `dir/name` parsed by `parse`. A file name belongs to one controller, so it is the key.
    fn parse<T>(
        &mut self,
        dir: &Path,
        name: &'static str,
        parse: impl FnOnce(&str) -> T,
    ) -> crate::Result<T> {
        let file = self.files.entry(name).or_insert_with(|| KeptFile::one_record(dir.join(name)));
        file.parse_text(parse)
    }

    /// `dir/name` parsed by `parse`; `Ok(None)` when the file does not exist (the controller is
    /// not enabled for the group).
    fn optional<T>(
        &mut self,
        dir: &Path,
        name: &'static str,
        parse: impl FnOnce(&str) -> Option<T>,
        expected: &'static str,
    ) -> crate::Result<Option<T>> {
        match self.parse(dir, name, parse) {
            Ok(value) => value
                .map(Some)
                .ok_or_else(|| crate::Error::Parse { path: dir.join(name), expected }),
            Err(crate::Error::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                self.files.remove(name);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The processes of `cgroup`. The v2 `cgroup.procs` restarts its walk when read from offset
    /// 0, so it is kept open; v1 serves a kept file from a pid list cached for a second after
    /// each read, which could be one collection old, so v1 opens the file anew.
    pub fn pids(&mut self, cgroup: &Cgroup) -> std::io::Result<Vec<u32>> {
        let parse = |text: &str| text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        match &cgroup.v2 {
            Some(d) => self
                .files
                .entry("cgroup.procs")
                .or_insert_with(|| KeptFile::new(d.join("cgroup.procs")))
                .parse(parse),
            None => cgroup.pids(),
        }
    }

    /// `dir/name` parsed by `parse`, which may find no value in it (e.g. "max").
    fn limit<T>(
        &mut self,
        dir: &Path,
        name: &'static str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Option<T> {
        self.parse(dir, name, parse).ok().flatten()
    }
}

/// Reads memory, CPU and I/O of `cgroup` as `collect` asks, from the v1 controller where the node
/// mounts one and from v2 otherwise. With `limits` (an earlier reading younger than
/// [`LIMITS_REFRESH`]) the limits are taken from it and only usage files are read.
pub fn read(
    cgroup: &Cgroup,
    collect: &CollectSettings,
    f: &mut GroupFiles,
    limits: Option<&Reading>,
) -> crate::Result<Reading> {
    let mut r = Reading::default();
    if collect.memory {
        let usage = if let Some(d) = &cgroup.memory {
            f.optional(d, "memory.usage_in_bytes", files::parse_u64, "a number")?
                .map(|u| (u, d, "memory.limit_in_bytes", files::parse_v1_limit as fn(&str) -> _))
        } else if let Some(d) = &cgroup.v2 {
            f.optional(d, "memory.current", files::parse_u64, "a number")?
                .map(|u| (u, d, "memory.max", files::parse_v2_limit as fn(&str) -> _))
        } else {
            None
        };
        r.memory = usage.map(|(usage, d, name, parse)| {
            let limit = match limits.and_then(|l| l.memory) {
                Some((_, limit)) => limit,
                None => f.limit(d, name, parse),
            };
            (usage, limit)
        });
    }
    if collect.cpu {
        r.cpu = if let Some(acct) = &cgroup.cpuacct {
            f.optional(acct, "cpuacct.usage", files::parse_u64, "a number")?.map(|ns| {
                let quota = match (limits.and_then(|l| l.cpu), &cgroup.cpu) {
                    (Some((_, quota)), _) => quota,
                    (None, Some(c)) => {
                        let quota = f.limit(c, "cpu.cfs_quota_us", |t| Some(t.to_owned()));
                        let period = f.limit(c, "cpu.cfs_period_us", |t| Some(t.to_owned()));
                        files::parse_cfs(&quota.unwrap_or_default(), &period.unwrap_or_default())
                    }
                    (None, None) => None,
                };
                (ns / 1000, quota)
            })
        } else if let Some(d) = &cgroup.v2 {
            let usage =
                f.optional(d, "cpu.stat", |t| files::parse_keyed(t, "usage_usec"), "usage_usec")?;
            usage.map(|usage| {
                let quota = match limits.and_then(|l| l.cpu) {
                    Some((_, quota)) => quota,
                    None => f.limit(d, "cpu.max", files::parse_cpu_max),
                };
                (usage, quota)
            })
        } else {
            None
        };
    }
    if collect.disk_io {
        r.io = if let Some(d) = &cgroup.blkio {
            let bytes = f.optional(
                d,
                "blkio.throttle.io_service_bytes",
                |t| Some(files::parse_blkio_bytes(t)),
                "",
            )?;
            bytes.map(|bytes| {
                let limit = match limits.and_then(|l| l.io) {
                    Some((_, limit)) => limit,
                    None => ["blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device"]
                        .into_iter()
                        .filter_map(|name| f.limit(d, name, files::parse_blkio_throttle))
                        .reduce(|a, b| a + b),
                };
                (bytes, limit)
            })
        } else if let Some(d) = &cgroup.v2 {
            let bytes = f.optional(d, "io.stat", |t| Some(files::parse_io_stat(t)), "")?;
            bytes.map(|bytes| {
                let limit = match limits.and_then(|l| l.io) {
                    Some((_, limit)) => limit,
                    None => f.limit(d, "io.max", files::parse_io_max),
                };
                (bytes, limit)
            })
        } else {
            None
        };
    }
    Ok(r)
}

/// The memory limit of a group, if it has one (for the processes' memory percent when the
/// resource source is off).
pub fn memory_limit(cgroup: &Cgroup) -> Option<u64> {
    if let Some(d) = &cgroup.memory {
        return procfs::read(d.join("memory.limit_in_bytes"))
            .ok()
            .and_then(|t| files::parse_v1_limit(&t));
    }
    let d = cgroup.v2.as_ref()?;
    procfs::read(d.join("memory.max")).ok().and_then(|t| files::parse_v2_limit(&t))
}

/// The alert level of a utilization at the profile's thresholds: 0 none, 1 warning, 2 critical,
/// 3 emergency.
pub fn alert_level(utilization_percent: f64, t: &ResourceLimits) -> u8 {
    if utilization_percent >= f64::from(t.emergency_percent) {
        3
    } else if utilization_percent >= f64::from(t.critical_percent) {
        2
    } else if utilization_percent >= f64::from(t.warning_percent) {
        1
    } else {
        0
    }
}

/// The resources of a reading by type (`memory`, `cpu`, `io`), given the previous reading
/// `elapsed_secs` ago (for rates): what the series and the push messages carry. Without
/// `resourceLimits.enabled` only usage is reported.
pub fn summary(
    now: &Reading,
    previous: Option<(&Reading, f64)>,
    limits: &ResourceLimits,
) -> BTreeMap<&'static str, ResourceSample> {
    let mut out = BTreeMap::new();
    let mut put = |resource, usage: f64, limit: Option<f64>, utilization: Option<f64>| {
        let (limit, utilization) = if limits.enabled { (limit, utilization) } else { (None, None) };
        let alert_level = utilization.map(|u| alert_level(u, limits));
        out.insert(
            resource,
            ResourceSample { usage, limit, utilization_percent: utilization, alert_level },
        );
    };
    if let Some((usage, limit)) = now.memory {
        let util = limit.filter(|&l| l > 0).map(|l| usage as f64 / l as f64 * 100.0);
        put("memory", usage as f64, limit.map(|l| l as f64), util);
    }
    if let Some((usage_us, quota)) = now.cpu {
        let util = match (quota, previous.and_then(|(p, dt)| Some((p.cpu?.0, dt)))) {
            (Some(q), Some((before, dt))) if dt > 0.0 && q.cores() > 0.0 => {
                let cores_used = usage_us.saturating_sub(before) as f64 / 1e6 / dt;
                Some(cores_used / q.cores() * 100.0)
            }
            _ => None,
        };
        put("cpu", usage_us as f64, quota.map(|q| q.quota_us as f64), util);
    }
    if let Some((bytes, limit)) = now.io {
        let total = bytes.read + bytes.write;
        let util = match (limit, previous.and_then(|(p, dt)| Some((p.io?.0, dt)))) {
            (Some(l), Some((before, dt))) if dt > 0.0 && l > 0 => {
                let rate = total.saturating_sub(before.read + before.write) as f64 / dt;
                Some(rate / l as f64 * 100.0)
            }
            _ => None,
        };
        put("io", total as f64, limit.map(|l| l as f64), util);
    }
    out
}

/// The series of a [`summary`]: per resource type its usage, and its limit, utilization and
/// alert level where known.
pub fn samples_of(
    labels: &Labels,
    summary: &BTreeMap<&'static str, ResourceSample>,
) -> Vec<Sample> {
    let mut out = Vec::with_capacity(summary.len() * 4);
    for (resource, r) in summary {
        let mut l = Labels::default();
        l.push("resource_type", resource).extend(labels);
        out.push(Sample::new(RESOURCE_USAGE, l.clone(), r.usage));
        if let Some(limit) = r.limit {
            out.push(Sample::new(RESOURCE_LIMIT, l.clone(), limit));
        }
        if let (Some(u), Some(level)) = (r.utilization_percent, r.alert_level) {
            out.push(Sample::new(RESOURCE_UTILIZATION, l.clone(), u));
            out.push(Sample::new(RESOURCE_ALERT, l, f64::from(level)));
        }
    }
    out
}

/// The samples of a reading, given the previous reading `elapsed_secs` ago (for rates).
pub fn samples(
    labels: &Labels,
    now: &Reading,
    previous: Option<(&Reading, f64)>,
    limits: &ResourceLimits,
) -> Vec<Sample> {
    samples_of(labels, &summary(now, previous, limits))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Labels {
        crate::metrics::TargetKey::new("ns", "p", "c").labels()
    }

    fn find(s: &[Sample], family: usize, resource: &str) -> Option<f64> {
        let prefix = format!("resource_type=\"{resource}\"");
        s.iter()
            .find(|x| x.family == family && x.labels.as_str().starts_with(&prefix))
            .map(|x| x.value)
    }

    #[test]
    fn alert_levels_follow_the_thresholds() {
        let t = ResourceLimits::default();
        assert_eq!(
            [0.0, 79.9, 80.0, 90.0, 94.9, 95.0, 150.0].map(|u| alert_level(u, &t)),
            [0, 0, 1, 2, 2, 3, 3]
        );
        let strict = ResourceLimits {
            warning_percent: 10,
            critical_percent: 20,
            emergency_percent: 30,
            enabled: true,
        };
        assert_eq!(alert_level(25.0, &strict), 2);
    }

    #[test]
    fn memory_utilization_is_usage_over_limit() {
        let now = Reading { memory: Some((48 << 20, Some(64 << 20))), ..Default::default() };
        let s = samples(&labels(), &now, None, &ResourceLimits::default());
        assert_eq!(find(&s, RESOURCE_USAGE, "memory"), Some((48 << 20) as f64));
        assert_eq!(find(&s, RESOURCE_LIMIT, "memory"), Some((64 << 20) as f64));
        assert_eq!(find(&s, RESOURCE_UTILIZATION, "memory"), Some(75.0));
        assert_eq!(find(&s, RESOURCE_ALERT, "memory"), Some(0.0));
        assert!(s[0].labels.as_str().ends_with("namespace=\"ns\",pod=\"p\",container=\"c\""));
    }

    #[test]
    fn cpu_utilization_is_the_rate_over_the_quota_from_the_second_reading() {
        let q = Some(CpuQuota { quota_us: 50_000, period_us: 100_000 });
        let before = Reading { cpu: Some((1_000_000, q)), ..Default::default() };
        let now = Reading { cpu: Some((1_450_000, q)), ..Default::default() };
        let first = samples(&labels(), &before, None, &ResourceLimits::default());
        assert_eq!(find(&first, RESOURCE_UTILIZATION, "cpu"), None);
        assert_eq!(find(&first, RESOURCE_LIMIT, "cpu"), Some(50_000.0));
        // 0.45 s of CPU in 1 s against half a core: 90 %.
        let s = samples(&labels(), &now, Some((&before, 1.0)), &ResourceLimits::default());
        let u = find(&s, RESOURCE_UTILIZATION, "cpu").unwrap();
        assert!((u - 90.0).abs() < 1e-9, "{u}");
        assert_eq!(find(&s, RESOURCE_ALERT, "cpu"), Some(2.0));
    }

    #[test]
    fn io_without_limit_exports_usage_only_and_disabled_limits_drop_limit_series() {
        let now =
            Reading { io: Some((IoBytes { read: 10, write: 5 }, None)), ..Default::default() };
        let s = samples(&labels(), &now, None, &ResourceLimits::default());
        assert_eq!(s.len(), 1);
        assert_eq!(find(&s, RESOURCE_USAGE, "io"), Some(15.0));
        let mem = Reading { memory: Some((1, Some(2))), ..Default::default() };
        let off = ResourceLimits { enabled: false, ..Default::default() };
        assert_eq!(samples(&labels(), &mem, None, &off).len(), 1);
    }

    #[test]
    fn io_utilization_is_bytes_per_second_over_the_limit() {
        let before =
            Reading { io: Some((IoBytes { read: 0, write: 0 }, Some(1000))), ..Default::default() };
        let now = Reading {
            io: Some((IoBytes { read: 1000, write: 1000 }, Some(1000))),
            ..Default::default()
        };
        let s = samples(&labels(), &now, Some((&before, 4.0)), &ResourceLimits::default());
        assert_eq!(find(&s, RESOURCE_UTILIZATION, "io"), Some(50.0));
    }
}
