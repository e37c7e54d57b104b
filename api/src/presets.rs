//! The six built-in profiles, with the values of the reference document
//! (`standard`, `minimal`, `intensive`, `batch`, `realtime-api`, `daemon`).
//!
//! The reference fixes interval, collectors, MQTT export and history. It predates the eBPF
//! probes, so their choice per preset is podtrace's: everything where the reference collects
//! everything, the I/O and scheduler probes for batch work, the network probes for API servers,
//! and the cheap counters for long-running daemons.

use crate::profile::{
    CollectSettings, ExportSettings, History, LabelSettings, MonitoringProfileSpec, Probe,
    ProbeSettings, ResourceLimits,
};

/// A built-in profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preset {
    /// General-purpose: everything every 10s, 100 samples of history.
    Standard,
    /// Least overhead: CPU and memory every 60s, no history, no probes, no MQTT.
    Minimal,
    /// Debugging: everything every second, 1000 samples of history.
    Intensive,
    /// Data processing: CPU, memory and disk every 30s, 200 samples.
    Batch,
    /// HTTP/API servers: CPU, memory, network, threads, fds every 5s, 500 samples.
    RealtimeApi,
    /// Long-running daemons: everything every 120s, 500 samples.
    Daemon,
}

impl Preset {
    /// All presets, in the order of the reference.
    pub const ALL: [Preset; 6] = [
        Preset::Standard,
        Preset::Minimal,
        Preset::Intensive,
        Preset::Batch,
        Preset::RealtimeApi,
        Preset::Daemon,
    ];

    /// The object name of the preset's MonitoringProfile.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Standard => "standard",
            Preset::Minimal => "minimal",
            Preset::Intensive => "intensive",
            Preset::Batch => "batch",
            Preset::RealtimeApi => "realtime-api",
            Preset::Daemon => "daemon",
        }
    }

    /// The preset called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// One line on what the preset is for (used as the object's description annotation).
    pub fn description(self) -> &'static str {
        match self {
            Preset::Standard => {
                "General-purpose monitoring: all collectors and probes every 10s, last 100 samples (~16 minutes)."
            }
            Preset::Minimal => {
                "Minimal overhead: CPU and memory every 60s, no history, no eBPF probes, no MQTT export."
            }
            Preset::Intensive => {
                "Debugging and profiling: all collectors and probes every second, last 1000 samples (~16 minutes)."
            }
            Preset::Batch => {
                "Batch and ETL jobs: CPU, memory and disk I/O every 30s, last 200 samples (~100 minutes)."
            }
            Preset::RealtimeApi => {
                "HTTP/API servers: CPU, memory, network, threads and file descriptors every 5s, last 500 samples (~41 minutes)."
            }
            Preset::Daemon => {
                "Long-running daemons: all collectors every 120s, last 500 samples (~16 hours)."
            }
        }
    }

    /// The preset's settings.
    pub fn spec(self) -> MonitoringProfileSpec {
        use Probe::*;
        let c = |cpu, memory, disk_io, network_io, threads, file_descriptors| CollectSettings {
            cpu,
            memory,
            disk_io,
            network_io,
            threads,
            file_descriptors,
        };
        let (interval, collect, probes, mqtt, history): (&str, _, Vec<Probe>, bool, i32) =
            match self {
                Preset::Standard => {
                    ("10s", CollectSettings::all(true), Probe::ALL.to_vec(), true, 100)
                }
                Preset::Minimal => {
                    ("1m", c(true, true, false, false, false, false), vec![], false, 0)
                }
                Preset::Intensive => {
                    ("1s", CollectSettings::all(true), Probe::ALL.to_vec(), true, 1000)
                }
                Preset::Batch => (
                    "30s",
                    c(true, true, true, false, false, false),
                    vec![FsLatency, FsBytes, CpuBlock],
                    true,
                    200,
                ),
                Preset::RealtimeApi => (
                    "5s",
                    c(true, true, false, true, true, true),
                    vec![TcpRtt, TcpConnect, Dns, CpuBlock, NetworkBytes],
                    true,
                    500,
                ),
                Preset::Daemon => (
                    "2m",
                    CollectSettings::all(true),
                    vec![TcpConnect, Dns, FsBytes, NetworkBytes],
                    true,
                    500,
                ),
            };
        MonitoringProfileSpec {
            interval: interval.into(),
            collect,
            probes: ProbeSettings { enabled: !probes.is_empty(), include: probes },
            resource_limits: ResourceLimits::default(),
            history: History { size: history },
            // The reference's export_to_mqtt decides every push exporter: an agent given a
            // broker URL (or an OTLP endpoint) pushes the pods of every preset but minimal.
            // OTLP follows the same switch: like NATS, MQTT and Influx it only runs when the
            // agent's operator gave it an endpoint, so the preset decides which pods go there.
            export: ExportSettings { prometheus: true, nats: mqtt, mqtt, influx: mqtt, otlp: mqtt },
            labels: LabelSettings::default(),
            max_series_per_pod: 2000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// (name, interval s, cpu, memory, disk, net, threads, fds, mqtt, history) from the reference.
    const REFERENCE: [(&str, u64, [bool; 6], bool, i32); 6] = [
        ("standard", 10, [true; 6], true, 100),
        ("minimal", 60, [true, true, false, false, false, false], false, 0),
        ("intensive", 1, [true; 6], true, 1000),
        ("batch", 30, [true, true, true, false, false, false], true, 200),
        ("realtime-api", 5, [true, true, false, true, true, true], true, 500),
        ("daemon", 120, [true; 6], true, 500),
    ];

    #[test]
    fn presets_match_the_reference_document() {
        for (name, secs, collect, mqtt, history) in REFERENCE {
            let spec = Preset::from_name(name).unwrap().spec();
            assert_eq!(spec.interval().unwrap(), Duration::from_secs(secs), "{name} interval");
            let c = &spec.collect;
            assert_eq!(
                [c.cpu, c.memory, c.disk_io, c.network_io, c.threads, c.file_descriptors],
                collect,
                "{name} collectors"
            );
            assert_eq!(spec.export.mqtt, mqtt, "{name} export_to_mqtt");
            let e = &spec.export;
            assert_eq!((e.nats, e.influx, e.otlp), (mqtt, mqtt, mqtt), "{name} push");
            assert_eq!(spec.history.size, history, "{name} history_size");
        }
    }

    #[test]
    fn standard_preset_equals_the_spec_defaults() {
        assert_eq!(Preset::Standard.spec(), MonitoringProfileSpec::default());
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_none() {
        for p in Preset::ALL {
            assert_eq!(Preset::from_name(p.name()), Some(p));
        }
        assert_eq!(Preset::from_name("Standard"), None);
    }

    #[test]
    fn every_preset_enables_probes_only_when_it_lists_some() {
        for p in Preset::ALL {
            let s = p.spec();
            assert_eq!(s.probes.enabled, !s.probes.include.is_empty(), "{}", p.name());
        }
    }
}
