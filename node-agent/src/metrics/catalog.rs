//! Every metric family the collectors produce: the shared catalog of `podtrace-api` (name,
//! help, type, labels, source, and the series a profile yields), which the operator's series
//! estimate reads too. `docs/metrics.md` is generated from it (`podtrace-agent metrics-doc`),
//! with the agent's own `podtrace_agent_*` metrics.

pub use podtrace_api::catalog::*;

#[cfg(test)]
mod tests {
    //! The catalog's counts are what the operator's series estimate adds up: check them against
    //! what the collectors really produce, so that the estimate cannot drift from `/metrics`.

    use super::*;
    use crate::{
        cgroup::files::{CpuQuota, IoBytes},
        collectors::{
            ebpf,
            process::{self, ProcessCollector, Raw},
            resource::{self, Reading},
        },
        metrics::{Sample, TargetKey},
        procfs::PidStat,
    };
    use podtrace_api::{MonitoringProfileSpec, presets::Preset, profile::Probe};
    use podtrace_ebpf::{CounterSample, Histogram, HistogramSample, Op, Series, Snapshot};
    use std::time::{Duration, Instant, SystemTime};

    /// Every line one container with one process yields with `profile`, resources at their
    /// limits and every probe of the profile with one sample per type.
    fn produced(profile: &MonitoringProfileSpec) -> Vec<Sample> {
        let labels = TargetKey::new("ns", "p", "c").labels();
        let quota = Some(CpuQuota { quota_us: 50_000, period_us: 100_000 });
        let reading = |n: u64| Reading {
            memory: profile.collect.memory.then_some((n << 20, Some(64 << 20))),
            cpu: profile.collect.cpu.then_some((n * 1000, quota)),
            io: profile.collect.disk_io.then_some((IoBytes { read: n, write: n }, Some(1 << 20))),
        };
        let (before, now) = (reading(1), reading(2));
        let mut out =
            resource::samples(&labels, &now, Some((&before, 1.0)), &profile.resource_limits);

        let raw = || Raw {
            stat: Some(PidStat { comm: "app".into(), cpu_ticks: 1, threads: 1, start_ticks: 1 }),
            ..Default::default()
        };
        let mut collector = ProcessCollector::default();
        let history = profile.history.size as usize;
        let t0 = Instant::now();
        let wall = SystemTime::now();
        collector.record(vec![(7, raw())], t0, wall, 10.0, Some(1 << 30), history);
        let reports = collector.record(
            vec![(7, raw())],
            t0 + Duration::from_secs(1),
            wall,
            11.0,
            Some(1 << 30),
            history,
        );
        out.extend(process::samples(&labels, &reports, profile, 16));

        let mut snap = Snapshot::default();
        for probe in profile.probes.active() {
            let kernel = ebpf::crd::to_kernel(probe);
            let series =
                |op| Series { cgroup_id: 1, probe: kernel, op, process_name: "app".into() };
            let h = |op| HistogramSample { series: series(op), histogram: Histogram::default() };
            let c = |op| CounterSample { series: series(op), bytes: 1, events: 1 };
            match probe {
                Probe::FsLatency => snap.histograms.extend([Op::Read, Op::Write, Op::Fsync].map(h)),
                Probe::FsBytes => snap.counters.extend([Op::Read, Op::Write].map(c)),
                Probe::NetworkBytes => snap.counters.extend([Op::Send, Op::Recv].map(c)),
                _ => snap.histograms.push(h(Op::None)),
            }
        }
        out.extend(ebpf::samples(&snap, 1, &labels, profile.labels.process_name));
        out
    }

    #[test]
    fn the_catalog_counts_what_the_collectors_produce_for_every_preset() {
        let mut profiles: Vec<MonitoringProfileSpec> =
            Preset::ALL.into_iter().map(Preset::spec).collect();
        let mut without_limits = Preset::Intensive.spec();
        without_limits.resource_limits.enabled = false;
        without_limits.history.size = 0;
        without_limits.labels.process_name = false;
        profiles.push(without_limits);
        for profile in &profiles {
            let lines = produced(profile);
            for (id, family) in FAMILIES.iter().enumerate() {
                let expected = match family.scope {
                    Scope::Node => 0,
                    Scope::Container | Scope::Process => {
                        (family.series)(profile) * family.lines_per_series()
                    }
                };
                let got = lines.iter().filter(|s| s.family == id).count();
                assert_eq!(got, expected as usize, "{} with {profile:?}", family.name);
            }
            assert_eq!(lines.len() as u64, series_per_container(profile, 1), "{profile:?}");
        }
    }

    #[test]
    fn histograms_have_the_kernels_buckets() {
        assert_eq!(HISTOGRAM_BUCKETS as usize, podtrace_ebpf::UPPER_BOUNDS_SECONDS.len());
    }
}
