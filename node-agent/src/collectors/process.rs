//! The `process` source: per process of a target, the reference's list from `/proc` (CPU %,
//! memory bytes and %, disk and network bytes, threads, file descriptors, uptime), a bounded
//! history of the profile's `history.size` samples and the aggregates over it.
//!
//! Series carry `namespace`, `pod`, `container`, `pid` and (with `labels.processName`)
//! `process_name`. Network bytes are those of the process's network namespace (every interface
//! but `lo`): for a pod, the pod's traffic, the same for each of its processes.

use podtrace_api::{MonitoringProfileSpec, profile::CollectSettings};
use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    time::{Instant, SystemTime},
};

use crate::{
    gaps::{self, FDS_DENIED, Gap, IO_DENIED, NETWORK_DENIED},
    metrics::{Labels, Sample, catalog::*},
    procfs::{self, KeptFile, USER_HZ},
    sample::{AggregatedMetrics, History, ProcessMetrics, record},
};

/// What one collection found for one process.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessReport {
    /// Process id.
    pub pid: u32,
    /// Command name.
    pub comm: String,
    /// The latest sample.
    pub sample: ProcessMetrics,
    /// Aggregates over the history (none with `history.size` 0).
    pub aggregates: Option<AggregatedMetrics>,
    /// What could not be read: its series are left out rather than exported as 0.
    pub denied: Denied,
}

/// The files of one process the agent was refused (a missing capability), not merely gone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Denied {
    /// `/proc/<pid>/io`.
    pub io: bool,
    /// `/proc/<pid>/fd`.
    pub fds: bool,
    /// `/proc/<pid>/ns/net`.
    pub network: bool,
}

impl Denied {
    /// The gaps these refusals make.
    pub fn gaps(self) -> impl Iterator<Item = Gap> {
        [(self.io, IO_DENIED), (self.fds, FDS_DENIED), (self.network, NETWORK_DENIED)]
            .into_iter()
            .filter_map(|(denied, gap)| denied.then_some(gap))
    }

    /// Both refusals together (for the sum of the processes beyond the bound).
    fn or(self, other: Denied) -> Denied {
        Denied {
            io: self.io || other.io,
            fds: self.fds || other.fds,
            network: self.network || other.network,
        }
    }
}

#[derive(Debug)]
struct ProcState {
    start_ticks: u64,
    last_ticks: u64,
    last_at: Instant,
    history: History,
}

/// The per-process state of one target: last CPU reading, the history and the open files.
#[derive(Debug)]
pub struct ProcessCollector {
    procs: BTreeMap<u32, ProcState>,
    files: HashMap<u32, ProcFiles>,
    page_size: u64,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self { procs: BTreeMap::new(), files: HashMap::new(), page_size: procfs::page_size() }
    }
}

/// The raw `/proc` reading of one process.
#[derive(Clone, Debug, Default)]
pub struct Raw {
    /// stat fields.
    pub stat: Option<procfs::PidStat>,
    /// VmRSS bytes.
    pub rss: u64,
    /// storage bytes.
    pub io: crate::cgroup::files::IoBytes,
    /// net/dev bytes.
    pub net: (u64, u64),
    /// fd count.
    pub fds: u64,
    /// What was refused.
    pub denied: Denied,
}

/// The files of one process, kept open between collections (see [`KeptFile`]). Only those the
/// profile's `collect` settings need are ever opened or read.
#[derive(Debug)]
struct ProcFiles {
    base: std::path::PathBuf,
    stat: KeptFile,
    statm: Option<KeptFile>,
    io: Option<KeptFile>,
    fd_dir: Option<KeptFile>,
    /// The inode of the process's network namespace (fixed for its life in practice), the key of
    /// the shared `net/dev` reading; looked up once, when network bytes are first collected;
    /// `Err(true)` when reading it was refused.
    netns: Option<Result<u64, bool>>,
}

impl ProcFiles {
    fn new(proc: &Path, pid: u32) -> Self {
        let base = proc.join(pid.to_string());
        let stat = KeptFile::one_record(base.join("stat"));
        Self { base, stat, statm: None, io: None, fd_dir: None, netns: None }
    }

    /// The kept file `name` of the process, created (not yet opened) on first use.
    fn file<'a>(
        slot: &'a mut Option<KeptFile>,
        base: &Path,
        name: &str,
        one_record: bool,
    ) -> &'a mut KeptFile {
        slot.get_or_insert_with(|| {
            let path = base.join(name);
            if one_record { KeptFile::one_record(path) } else { KeptFile::new(path) }
        })
    }
}

/// `/proc/<pid>/net/dev` per network namespace, read once per collection however many processes
/// (or pods, with host networking) share the namespace.
#[derive(Debug, Default)]
pub struct NetDevCache {
    files: HashMap<u64, (KeptFile, Option<(u64, u64)>)>,
}

impl NetDevCache {
    /// Forgets this collection's readings (call once per collection, before reading).
    pub fn new_cycle(&mut self) {
        self.files.values_mut().for_each(|(_, v)| *v = None);
    }

    /// Drops the namespaces nobody read in the last collection.
    pub fn forget_unread(&mut self) {
        self.files.retain(|_, (_, v)| v.is_some());
    }

    fn read(&mut self, proc: &Path, pid: u32, netns: u64) -> (u64, u64) {
        let (file, value) = self
            .files
            .entry(netns)
            .or_insert_with(|| (KeptFile::new(proc.join(format!("{pid}/net/dev"))), None));
        if let Some(v) = value {
            return *v;
        }
        let mut read = file.parse(procfs::parse_net_dev);
        if read.is_err() {
            // The process whose file was kept is gone: this one is in the same namespace.
            *file = KeptFile::new(proc.join(format!("{pid}/net/dev")));
            read = file.parse(procfs::parse_net_dev);
        }
        let v = read.unwrap_or_default();
        *value = Some(v);
        v
    }
}

impl ProcessCollector {
    /// Reads one process from `proc` (normally `/proc`); `None` when it exited meanwhile. Only the
    /// files `collect` needs are read: `stat` always (CPU, threads, uptime), `statm` for memory,
    /// `io` for disk bytes, `net/dev` for network bytes and the `fd` directory for descriptors;
    /// what is not collected reads as 0.
    pub fn read_raw(
        &mut self,
        proc: &Path,
        pid: u32,
        net: &mut NetDevCache,
        collect: &CollectSettings,
    ) -> Option<Raw> {
        use std::os::unix::fs::MetadataExt;
        let files = self.files.entry(pid).or_insert_with(|| ProcFiles::new(proc, pid));
        let Some(stat) = files.stat.parse(procfs::parse_pid_stat).ok().flatten() else {
            self.files.remove(&pid);
            return None;
        };
        let base = files.base.as_path();
        let mut raw = Raw { stat: Some(stat), ..Raw::default() };
        if collect.memory {
            let statm = ProcFiles::file(&mut files.statm, base, "statm", true);
            let rss = statm.parse(|t| procfs::parse_statm_rss(t, self.page_size));
            raw.rss = rss.ok().flatten().unwrap_or(0);
        }
        if collect.disk_io {
            let io = ProcFiles::file(&mut files.io, base, "io", true);
            raw.io = io.parse(procfs::parse_pid_io).unwrap_or_else(|e| {
                raw.denied.io = gaps::is_denied(&e);
                Default::default()
            });
        }
        if collect.network_io {
            let netns = *files.netns.get_or_insert_with(|| {
                std::fs::metadata(base.join("ns/net"))
                    .map(|m| m.ino())
                    .map_err(|e| gaps::is_denied(&e))
            });
            raw.denied.network = netns == Err(true);
            raw.net = netns.map(|ns| net.read(proc, pid, ns)).unwrap_or_default();
        }
        if collect.file_descriptors {
            let fd_dir = ProcFiles::file(&mut files.fd_dir, base, "fd", false);
            raw.fds = procfs::count_fds(fd_dir).unwrap_or_else(|e| {
                raw.denied.fds =
                    matches!(&e, crate::Error::Read { source, .. } if gaps::is_denied(source));
                0
            });
        }
        Some(raw)
    }
}

impl ProcessCollector {
    /// Records one reading per live process (`raws`), forgets processes that are gone, and returns
    /// the reports. `memory_base` is the byte count memory percent is relative to (`None`: no
    /// percent); `uptime` the node's seconds since boot.
    pub fn record(
        &mut self,
        raws: Vec<(u32, Raw)>,
        now: Instant,
        wall: SystemTime,
        uptime: f64,
        memory_base: Option<u64>,
        history_size: usize,
    ) -> Vec<ProcessReport> {
        let live: std::collections::HashSet<u32> = raws.iter().map(|(p, _)| *p).collect();
        self.procs.retain(|pid, _| live.contains(pid));
        self.files.retain(|pid, _| live.contains(pid));
        let mut out = Vec::with_capacity(raws.len());
        for (pid, raw) in raws {
            let Some(stat) = raw.stat else { continue };
            let state = self.procs.entry(pid).or_insert_with(|| ProcState {
                start_ticks: stat.start_ticks,
                last_ticks: stat.cpu_ticks,
                last_at: now,
                history: History::default(),
            });
            if state.start_ticks != stat.start_ticks {
                // The pid was reused by a new process: start over.
                *state = ProcState {
                    start_ticks: stat.start_ticks,
                    last_ticks: stat.cpu_ticks,
                    last_at: now,
                    history: History::default(),
                };
            }
            let dt = now.duration_since(state.last_at).as_secs_f64();
            let cpu = if dt > 0.0 {
                stat.cpu_ticks.saturating_sub(state.last_ticks) as f64 / USER_HZ / dt * 100.0
            } else {
                0.0
            };
            state.last_ticks = stat.cpu_ticks;
            state.last_at = now;
            let sample = ProcessMetrics {
                cpu_usage_percent: cpu,
                memory_usage_bytes: raw.rss,
                memory_usage_percent: memory_base
                    .filter(|b| *b > 0)
                    .map(|b| raw.rss as f64 / b as f64 * 100.0),
                disk_read_bytes: raw.io.read,
                disk_write_bytes: raw.io.write,
                network_rx_bytes: raw.net.0,
                network_tx_bytes: raw.net.1,
                uptime_seconds: (uptime - stat.start_ticks as f64 / USER_HZ).max(0.0) as u64,
                thread_count: stat.threads,
                file_descriptor_count: raw.fds,
                timestamp: wall,
            };
            record(&mut state.history, &sample, history_size);
            let aggregates = AggregatedMetrics::of(&state.history);
            out.push(ProcessReport {
                pid,
                comm: stat.comm,
                sample,
                aggregates,
                denied: raw.denied,
            });
        }
        out
    }
}

/// The `pid` and `process_name` of the series that sums the processes beyond the bound.
pub const OTHER: &str = "other";

/// The reports that keep series of their own: the `max` busiest processes (CPU, then memory,
/// then the lower pid), in pid order; and the sum of the rest, if any.
///
/// Per-process series are labelled by pid, so a container that forks many short-lived
/// processes would otherwise create series without bound. The sum adds CPU, memory, disk bytes,
/// threads and descriptors; network bytes are those of the shared network namespace, so it
/// takes their largest value instead of adding the same bytes up; uptime is the oldest's.
pub fn top(reports: &[ProcessReport], max: usize) -> (Vec<&ProcessReport>, Option<ProcessMetrics>) {
    if reports.len() <= max {
        return (reports.iter().collect(), None);
    }
    let mut ranked: Vec<&ProcessReport> = reports.iter().collect();
    ranked.sort_by(|a, b| {
        b.sample
            .cpu_usage_percent
            .total_cmp(&a.sample.cpu_usage_percent)
            .then(b.sample.memory_usage_bytes.cmp(&a.sample.memory_usage_bytes))
            .then(a.pid.cmp(&b.pid))
    });
    let rest = ranked.split_off(max);
    ranked.sort_by_key(|r| r.pid);
    let other = ProcessMetrics::sum(rest.iter().map(|r| &r.sample), rest[0].sample.timestamp);
    (ranked, Some(other))
}

/// The samples of the reports, as the profile's `collect` and `labels` settings ask: at most
/// `max_processes` processes with series of their own, the rest summed as `pid="other"` (see
/// [`top`]).
pub fn samples(
    target_labels: &Labels,
    reports: &[ProcessReport],
    profile: &MonitoringProfileSpec,
    max_processes: usize,
) -> Vec<Sample> {
    let c = &profile.collect;
    let (kept, other) = top(reports, max_processes);
    let denied = reports.iter().fold(Denied::default(), |d, r| d.or(r.denied));
    let other = other.map(|sample| ProcessReport {
        pid: 0,
        comm: OTHER.into(),
        sample,
        aggregates: None,
        denied,
    });
    let mut out = Vec::with_capacity((kept.len() + 1) * 18);
    for r in kept.into_iter().chain(other.as_ref()) {
        let mut l = target_labels.clone();
        if r.pid == 0 {
            l.push("pid", OTHER);
        } else {
            l.push("pid", &r.pid.to_string());
        }
        if profile.labels.process_name {
            l.push("process_name", &r.comm);
        }
        let s = &r.sample;
        let mut push = |on: bool, f, v: f64| {
            if on {
                out.push(Sample::new(f, l.clone(), v));
            }
        };
        push(c.cpu, PROCESS_CPU, s.cpu_usage_percent);
        push(c.memory, PROCESS_MEMORY, s.memory_usage_bytes as f64);
        if let Some(percent) = s.memory_usage_percent {
            push(c.memory, PROCESS_MEMORY_PERCENT, percent);
        }
        // What was refused is left out (and reported as a gap), never exported as 0.
        let d = r.denied;
        push(c.disk_io && !d.io, PROCESS_DISK_READ, s.disk_read_bytes as f64);
        push(c.disk_io && !d.io, PROCESS_DISK_WRITE, s.disk_write_bytes as f64);
        push(c.network_io && !d.network, PROCESS_NET_RX, s.network_rx_bytes as f64);
        push(c.network_io && !d.network, PROCESS_NET_TX, s.network_tx_bytes as f64);
        push(c.threads, PROCESS_THREADS, s.thread_count as f64);
        push(c.file_descriptors && !d.fds, PROCESS_FDS, s.file_descriptor_count as f64);
        push(true, PROCESS_UPTIME, s.uptime_seconds as f64);
        if let Some(a) = &r.aggregates {
            push(c.cpu, PROCESS_CPU_AVG, a.avg_cpu_usage);
            push(c.cpu, PROCESS_CPU_MAX, a.max_cpu_usage);
            push(c.memory, PROCESS_MEMORY_AVG, a.avg_memory_usage);
            push(c.memory, PROCESS_MEMORY_MAX, a.max_memory_usage as f64);
            push(true, PROCESS_HISTORY_SAMPLES, a.sample_count as f64);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use podtrace_api::presets::Preset;
    use std::time::Duration;

    fn raw(ticks: u64, rss: u64, read: u64) -> Raw {
        Raw {
            stat: Some(procfs::PidStat {
                comm: "app".into(),
                cpu_ticks: ticks,
                threads: 3,
                start_ticks: 500,
            }),
            rss,
            io: crate::cgroup::files::IoBytes { read, write: 0 },
            net: (10, 20),
            fds: 4,
            denied: Denied::default(),
        }
    }

    /// The `collect` settings decide which `/proc/<pid>` files are read, not only which series
    /// are kept. Ground truth: the kernel's count of this thread's read syscalls.
    #[test]
    fn only_the_files_the_collect_settings_need_are_read() {
        let syscr = || -> u64 {
            let text = std::fs::read_to_string("/proc/thread-self/io").unwrap();
            text.lines().find_map(|l| l.strip_prefix("syscr:")?.trim().parse().ok()).unwrap()
        };
        let own_cost = {
            let a = syscr();
            syscr() - a
        };
        let reads = |collect: &CollectSettings| -> (u64, Raw) {
            let (mut c, mut net) = (ProcessCollector::default(), NetDevCache::default());
            let (proc, pid) = (Path::new("/proc"), std::process::id());
            c.read_raw(proc, pid, &mut net, collect).unwrap(); // opens what it needs
            net.new_cycle();
            let before = syscr();
            let raw = c.read_raw(proc, pid, &mut net, collect).unwrap();
            (syscr() - before - own_cost, raw)
        };
        let c = |memory, disk_io, network_io, file_descriptors| CollectSettings {
            cpu: true,
            memory,
            disk_io,
            network_io,
            threads: true,
            file_descriptors,
        };
        // CPU, threads and uptime: stat alone.
        let (n, raw) = reads(&c(false, false, false, false));
        assert_eq!((n, raw.rss, raw.fds), (1, 0, 0));
        // The minimal preset (CPU and memory): stat and statm.
        let (n, raw) = reads(&Preset::Minimal.spec().collect);
        assert_eq!(n, 2);
        assert!(raw.rss > 0);
        // Everything: io and net/dev too (the fd count is an fstat, not a read).
        let (n, raw) = reads(&CollectSettings::all(true));
        assert!(n >= 4, "{n} reads");
        assert!(raw.fds > 0 && raw.stat.is_some());
    }

    #[test]
    fn cpu_percent_is_ticks_over_elapsed_and_history_is_bounded() {
        let mut c = ProcessCollector::default();
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let r = c.record(vec![(7, raw(100, 1000, 0))], t0, wall, 100.0, Some(4000), 2);
        assert_eq!(r[0].sample.cpu_usage_percent, 0.0);
        assert_eq!(r[0].sample.memory_usage_percent, Some(25.0));
        assert_eq!(r[0].sample.uptime_seconds, 95);
        // 50 ticks = 0.5 s of CPU in 2 s: 25 %.
        let r = c.record(
            vec![(7, raw(150, 3000, 100))],
            t0 + Duration::from_secs(2),
            wall,
            102.0,
            Some(4000),
            2,
        );
        assert!((r[0].sample.cpu_usage_percent - 25.0).abs() < 1e-9);
        let r = c.record(
            vec![(7, raw(150, 2000, 400))],
            t0 + Duration::from_secs(4),
            wall,
            104.0,
            Some(4000),
            2,
        );
        let a = r[0].aggregates.clone().unwrap();
        assert_eq!(a.sample_count, 2);
        assert_eq!(a.max_memory_usage, 3000);
        assert_eq!(a.avg_memory_usage, 2500.0);
        assert_eq!(a.max_cpu_usage, 25.0);
        assert_eq!(a.total_disk_read, 300);
    }

    #[test]
    fn exited_processes_are_forgotten_and_no_history_means_no_aggregates() {
        let mut c = ProcessCollector::default();
        let t0 = Instant::now();
        c.record(
            vec![(1, raw(1, 1, 0)), (2, raw(1, 1, 0))],
            t0,
            SystemTime::now(),
            10.0,
            Some(1),
            0,
        );
        let r = c.record(vec![(2, raw(1, 1, 0))], t0, SystemTime::now(), 10.0, Some(1), 0);
        assert_eq!(c.procs.len(), 1);
        assert_eq!(r[0].aggregates, None);
    }

    #[test]
    fn samples_follow_the_collect_settings() {
        let mut c = ProcessCollector::default();
        let r =
            c.record(vec![(9, raw(1, 1, 0))], Instant::now(), SystemTime::now(), 10.0, Some(1), 10);
        let mut profile = MonitoringProfileSpec::default();
        let labels = crate::metrics::TargetKey::new("n", "p", "c").labels();
        let all = samples(&labels, &r, &profile, 16);
        assert_eq!(all.len(), 15);
        assert!(all[0].labels.as_str().ends_with("pid=\"9\",process_name=\"app\""));
        profile.collect = podtrace_api::profile::CollectSettings::all(false);
        profile.labels.process_name = false;
        let few = samples(&labels, &r, &profile, 16);
        assert_eq!(
            few.iter().map(|s| s.family).collect::<Vec<_>>(),
            [PROCESS_UPTIME, PROCESS_HISTORY_SAMPLES]
        );
        assert!(!few[0].labels.as_str().contains("process_name"));
    }

    /// Without a container limit and without the node's memory (no meminfo) a percent would be
    /// made up: none is exported, the bytes still are.
    #[test]
    fn without_a_memory_base_no_percent_is_exported() {
        let mut c = ProcessCollector::default();
        let r =
            c.record(vec![(9, raw(1, 1000, 0))], Instant::now(), SystemTime::now(), 10.0, None, 0);
        assert_eq!(r[0].sample.memory_usage_percent, None);
        let labels = crate::metrics::TargetKey::new("n", "p", "c").labels();
        let s = samples(&labels, &r, &MonitoringProfileSpec::default(), 16);
        assert!(!s.iter().any(|x| x.family == PROCESS_MEMORY_PERCENT));
        assert!(s.iter().any(|x| x.family == PROCESS_MEMORY && x.value == 1000.0));
        let json = serde_json::to_value(&r[0].sample).unwrap();
        assert!(json.get("memory_usage_percent").is_none(), "{json}");
    }

    #[test]
    fn beyond_the_bound_the_quietest_processes_are_summed_as_other() {
        let report = |pid: u32, cpu: f64, mem: u64, net: u64| ProcessReport {
            pid,
            comm: format!("p{pid}"),
            sample: ProcessMetrics {
                cpu_usage_percent: cpu,
                memory_usage_bytes: mem,
                network_rx_bytes: net,
                thread_count: 2,
                uptime_seconds: u64::from(pid),
                ..Default::default()
            },
            aggregates: None,
            denied: Denied::default(),
        };
        let reports = vec![
            report(10, 5.0, 100, 7),
            report(11, 50.0, 100, 7),
            report(12, 0.0, 900, 7),
            report(13, 0.0, 100, 7),
            report(14, 1.0, 100, 7),
        ];
        let (kept, other) = top(&reports, 3);
        assert_eq!(kept.iter().map(|r| r.pid).collect::<Vec<_>>(), [10, 11, 14]);
        let other = other.unwrap();
        assert_eq!(other.cpu_usage_percent, 0.0);
        assert_eq!(other.memory_usage_bytes, 1000);
        assert_eq!(other.thread_count, 4);
        assert_eq!(other.network_rx_bytes, 7, "one namespace's bytes, not added up");
        assert_eq!(other.uptime_seconds, 13);
        // Memory breaks the tie between processes without CPU.
        let (kept, other) = top(&reports, 4);
        assert_eq!(kept.iter().map(|r| r.pid).collect::<Vec<_>>(), [10, 11, 12, 14]);
        assert_eq!(other.unwrap().memory_usage_bytes, 100);
        assert_eq!(top(&reports, 5).1, None);

        let labels = crate::metrics::TargetKey::new("n", "p", "c").labels();
        let s = samples(&labels, &reports, &MonitoringProfileSpec::default(), 3);
        let pids: std::collections::BTreeSet<&str> = s
            .iter()
            .filter_map(|x| x.labels.as_str().split("pid=\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(pids, ["10", "11", "14", "other"].into_iter().collect());
        assert!(s.iter().any(|x| x.family == PROCESS_MEMORY
            && x.labels.as_str().ends_with("pid=\"other\",process_name=\"other\"")
            && x.value == 1000.0));
    }
}
