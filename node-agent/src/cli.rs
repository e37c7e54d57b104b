//! The command line: `run` (cluster), `standalone`, `health live|config`, `top`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use podtrace_runtime::logging::LogArgs;
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::exporters::ExporterArgs;

/// podtrace node agent: measures the traced pods of its node (their cgroups, /proc and, with the
/// eBPF probes, the kernel) and serves the results on /metrics and to NATS, MQTT and Influx.
#[derive(Parser, Debug)]
#[command(name = "podtrace-agent", version, about)]
pub struct Cli {
    /// Logging flags.
    #[command(flatten)]
    pub log: LogArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Cluster mode: trace the pods of NodeTrace/$NODE_NAME and write its status.
    Run {
        /// Agent flags.
        #[command(flatten)]
        agent: AgentArgs,
        /// Push exporter flags (NODE_NAME names this node).
        #[command(flatten)]
        exporters: ExporterArgs,
        /// Authenticate /metrics callers with Kubernetes TokenReview + SubjectAccessReview
        /// (`get` on the non-resource URL /metrics), like kube-rbac-proxy.
        #[arg(long, env = "PODTRACE_METRICS_AUTH")]
        metrics_kube_auth: bool,
        /// Size of the eBPF programs' tracked-cgroup map: containers beyond it are reported
        /// Failed with reason TrackedMapFull.
        #[arg(long, env = "PODTRACE_MAX_TRACKED_CGROUPS", default_value_t = 16384)]
        max_tracked_cgroups: usize,
        /// The kubelet's `cgroupRoot` (its KubeletConfiguration), when it is not `/`: pods are
        /// then under `<root>/kubepods…` instead of `/kubepods…` (kind nodes use `/kubelet`).
        #[arg(long, env = "PODTRACE_KUBELET_CGROUP_ROOT", default_value = "/")]
        kubelet_cgroup_root: String,
    },
    /// Standalone mode: trace local cgroups and processes selected by a config file of
    /// MonitoringProfile and PodTrace documents (reloaded on change).
    Standalone {
        /// The config file.
        #[arg(long, env = "PODTRACE_CONFIG")]
        config: PathBuf,
        /// Accept a config file without any document (it traces nothing); without this flag
        /// such a file is an error and the previous configuration keeps running.
        #[arg(long, env = "PODTRACE_ALLOW_EMPTY_CONFIG")]
        allow_empty_config: bool,
        /// How long a changed config file must stay unchanged before it is applied, so that a
        /// file caught mid-write is never applied.
        #[arg(long, env = "PODTRACE_CONFIG_SETTLE", default_value = "2s", value_parser = podtrace_api::duration::parse)]
        config_settle: Duration,
        /// Agent flags.
        #[command(flatten)]
        agent: AgentArgs,
        /// Push exporter flags.
        #[command(flatten)]
        exporters: ExporterArgs,
    },
    /// Health checks (usable as exec probes).
    Health {
        /// Output format, before or after the check's name (`health --format json live`, the
        /// health-check reference's order, or `health live --format json`).
        #[arg(long, value_enum, default_value_t = Format::Text, global = true)]
        format: Format,
        /// Which check.
        #[command(subcommand)]
        check: HealthCommand,
    },
    /// A refreshing table per pod and container, read from the agent's /metrics: CPU, memory,
    /// alert level, network rates, processes and the eBPF latencies (connect, RTT, DNS, file
    /// system, off-CPU: p50/p99).
    Top {
        /// The agent's metrics endpoint. Default: the address this agent would serve on,
        /// `PODTRACE_METRICS_ADDR` (so `kubectl exec` into an agent pod needs no flag; https when
        /// `PODTRACE_METRICS_TLS_CERT_FILE` is set), else http://127.0.0.1:3000.
        #[arg(long, env = "PODTRACE_TOP_ENDPOINT")]
        endpoint: Option<String>,
        /// File holding the bearer token /metrics requires.
        #[arg(long, env = "PODTRACE_METRICS_TOKEN_FILE")]
        token_file: Option<PathBuf>,
        /// PEM CA bundle to trust for an https:// endpoint (the agent's --metrics-tls-cert-file
        /// issuer).
        #[arg(long, env = "PODTRACE_TOP_CA_FILE")]
        ca_file: Option<PathBuf>,
        /// Refresh period.
        #[arg(long, default_value = "2s", value_parser = podtrace_api::duration::parse)]
        every: Duration,
        /// Print the table once and exit.
        #[arg(long)]
        once: bool,
    },
}

/// The endpoint `top` reads when none is given: the agent's own metrics address from its
/// environment (`PODTRACE_METRICS_ADDR`, and https with `PODTRACE_METRICS_TLS_CERT_FILE`), else
/// `http://127.0.0.1:3000`.
pub fn default_top_endpoint(metrics_addr: Option<&str>, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    match metrics_addr.map(str::trim).filter(|a| !a.is_empty()) {
        Some(addr) => format!("{scheme}://{}", addr.replace("0.0.0.0", "127.0.0.1")),
        None => "http://127.0.0.1:3000".into(),
    }
}

/// `health` checks.
#[derive(Subcommand, Debug)]
pub enum HealthCommand {
    /// Ask a running agent's grpc.health.v1 services and print Optimal, Healthy, Degraded or
    /// Unhealthy with the reasons. Exit code: 0 Optimal or Healthy, 1 Degraded, 3 Unhealthy.
    Live {
        /// The agent's gRPC health address.
        #[arg(long, default_value = "127.0.0.1:50100")]
        endpoint: String,
        /// Give up after this long.
        #[arg(long, default_value = "3s", value_parser = podtrace_api::duration::parse)]
        timeout: Duration,
    },
    /// Validate a standalone config file: exit code 0 and a summary when valid, 1 and the error
    /// otherwise.
    Config {
        /// The file.
        file: PathBuf,
        /// Accept a file without any document (it traces nothing), as the agent's
        /// --allow-empty-config does.
        #[arg(long)]
        allow_empty: bool,
    },
}

/// Output format of `health`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Lines for people.
    Text,
    /// One JSON object.
    Json,
}

/// Flags of both agent modes.
#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// Address of /metrics, /livez and /readyz.
    #[arg(long, env = "PODTRACE_METRICS_ADDR", default_value = "127.0.0.1:3000")]
    pub metrics_addr: SocketAddr,
    /// Port of /metrics, replacing the port of --metrics-addr (the kernel-metrics reference's
    /// name for it; its address stays that of --metrics-addr).
    #[arg(long, env = "PROMETHEUS_PORT")]
    pub prometheus_port: Option<u16>,
    /// File holding a bearer token that /metrics requires.
    #[arg(long, env = "PODTRACE_METRICS_TOKEN_FILE")]
    pub metrics_token_file: Option<PathBuf>,
    /// TLS of /metrics, /livez and /readyz.
    #[command(flatten)]
    pub tls: podtrace_runtime::tls::TlsArgs,
    /// Address of the grpc.health.v1 server.
    #[arg(long, env = "PODTRACE_HEALTH_ADDR", default_value = "0.0.0.0:50100")]
    pub health_addr: SocketAddr,
    /// Address of the admin channel (log levels and metric sources at run time).
    #[arg(long, env = "PODTRACE_ADMIN_ADDR", default_value = "127.0.0.1:2323")]
    pub admin_addr: SocketAddr,
    /// File holding the admin channel's shared token (clients then send `T<token>` first).
    #[arg(long, env = "PODTRACE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Where the host's /proc is (the chart mounts it at /host/proc).
    #[arg(long, env = "PODTRACE_PROC_ROOT", default_value = "/proc")]
    pub proc_root: PathBuf,
    /// Where the host's cgroup tree is; mount points under /sys/fs/cgroup are read there.
    #[arg(long, env = "PODTRACE_CGROUP_ROOT", default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,
    /// Interval of the node's kernel metrics, in seconds or as a duration ("10", "30s").
    #[arg(long, env = "INTERVAL", default_value = "10", value_parser = parse_interval)]
    pub interval: Duration,
    /// Most processes per container with series of their own (the busiest by CPU, then memory);
    /// the rest are summed into pid="other".
    #[arg(long, env = "PODTRACE_MAX_PROCESSES", default_value_t = crate::engine::DEFAULT_MAX_PROCESSES, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_processes: u16,
    /// eBPF probe settings.
    #[command(flatten)]
    pub ebpf: EbpfArgs,
}

/// Flags of the eBPF probes.
#[derive(Args, Debug, Clone)]
pub struct EbpfArgs {
    /// Load the eBPF probes (false: only the cgroup and /proc collectors run).
    #[arg(long = "ebpf", env = "PODTRACE_EBPF", default_value_t = true, action = clap::ArgAction::Set)]
    pub enabled: bool,
    /// Most process names per pod and probe family with series of their own; later ones are
    /// counted as process_name="other".
    #[arg(long, env = "PODTRACE_MAX_PROCESS_NAMES", default_value_t = 16)]
    pub max_process_names: u32,
    /// UDP/TCP port whose traffic the DNS probe times (queries to it, answers from it).
    #[arg(long, env = "PODTRACE_DNS_PORT", default_value_t = 53)]
    pub dns_port: u16,
    /// How the eBPF programs tell the targets' tasks from the others: by cgroup v2 id
    /// (`cgroup`), by process from each target's cgroup.procs (`process`: for nodes without
    /// cgroup v2; no dns probe, payload-only network bytes, new processes seen at the next
    /// interval), or `auto` (cgroup when a cgroup v2 hierarchy is mounted, else process).
    #[arg(long, env = "PODTRACE_EBPF_FILTER", value_enum, default_value_t = EbpfFilter::Auto)]
    pub ebpf_filter: EbpfFilter,
    /// Most processes of all targets together that the process filter can track (its kernel
    /// map's size); a full map is logged and the rest are not measured.
    #[arg(long, env = "PODTRACE_EBPF_MAX_TRACKED_PROCESSES", default_value_t = 32768)]
    pub ebpf_max_tracked_processes: u32,
    /// Keep the kernel's bpf_stats on while the agent runs, for
    /// podtrace_agent_bpf_program_{runs,seconds}_total. It is node-wide: every eBPF program of
    /// the node, not only podtrace's, then reads the clock twice per run (bench/ebpf: 10% fewer
    /// requests/s of a loopback HTTP server with every probe on it). Off, the two counters move
    /// only while something else keeps kernel.bpf_stats_enabled on
    /// (podtrace_agent_bpf_stats_enabled says which).
    #[arg(long, env = "PODTRACE_BPF_STATS", default_value_t = false, action = clap::ArgAction::Set)]
    pub bpf_stats: bool,
    /// When tracefs is not mounted, mount it in a mount namespace of the agent's own (the
    /// node's mounts are untouched; needs CAP_SYS_ADMIN), so that the fs probes run on the
    /// per-syscall tracepoints of the eight file syscalls instead of on sys_enter/sys_exit,
    /// which run a program for every syscall of the node.
    #[arg(long, env = "PODTRACE_MOUNT_TRACEFS", default_value_t = true, action = clap::ArgAction::Set)]
    pub mount_tracefs: bool,
}

impl AgentArgs {
    /// Where /metrics listens: `--metrics-addr` with the port of `--prometheus-port`, if given.
    pub fn metrics_listen(&self) -> SocketAddr {
        let mut addr = self.metrics_addr;
        if let Some(port) = self.prometheus_port {
            addr.set_port(port);
        }
        addr
    }
}

/// `--ebpf-filter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EbpfFilter {
    /// `cgroup` when a cgroup v2 hierarchy is mounted, else `process`.
    Auto,
    /// By cgroup v2 id (needs cgroup v2).
    Cgroup,
    /// By process (tgid), kept from each target's cgroup.procs every interval.
    Process,
}

impl EbpfFilter {
    /// The filter to load with, given the node's cgroup v2 mount (if any).
    pub fn resolve(self, cgroup2: Option<&std::path::Path>) -> podtrace_ebpf::Filter {
        match self {
            EbpfFilter::Auto => podtrace_ebpf::Filter::for_node(cgroup2),
            EbpfFilter::Cgroup => podtrace_ebpf::Filter::Cgroup,
            EbpfFilter::Process => podtrace_ebpf::Filter::Process,
        }
    }
}

/// Seconds (the reference's `INTERVAL=10`) or a Go duration.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = match s.trim().parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => podtrace_api::duration::parse(s).map_err(|e| e.to_string())?,
    };
    if d < Duration::from_secs(1) {
        return Err("the interval must be at least 1s".into());
    }
    Ok(d)
}

/// Reads a token file (trimmed); an empty file is an error.
pub fn read_token(path: &std::path::Path) -> crate::Result<String> {
    let t = crate::procfs::read(path)?.trim().to_owned();
    if t.is_empty() {
        return Err(crate::Error::Config {
            path: path.to_owned(),
            message: "the token file is empty".into(),
        });
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_reads_the_agents_own_metrics_address_by_default() {
        assert_eq!(default_top_endpoint(Some("10.88.0.4:3000"), false), "http://10.88.0.4:3000");
        assert_eq!(default_top_endpoint(Some("10.88.0.4:3000"), true), "https://10.88.0.4:3000");
        assert_eq!(default_top_endpoint(Some("0.0.0.0:3000"), false), "http://127.0.0.1:3000");
        assert_eq!(default_top_endpoint(None, false), "http://127.0.0.1:3000");
        assert_eq!(default_top_endpoint(Some(""), true), "http://127.0.0.1:3000");
    }

    #[test]
    fn interval_accepts_seconds_and_durations() {
        assert_eq!(parse_interval("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_interval("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_interval("0").is_err());
        assert!(parse_interval("abc").is_err());
    }

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "podtrace-agent",
            "standalone",
            "--config",
            "x.yaml",
            "--interval",
            "5",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Standalone { .. }));
        let cli = Cli::try_parse_from([
            "podtrace-agent",
            "health",
            "live",
            "--endpoint",
            "127.0.0.1:1",
            "--format",
            "json",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Health { format: Format::Json, check: HealthCommand::Live { .. } }
        ));
    }

    /// The health-check reference writes `health --format json live`.
    #[test]
    fn health_takes_the_format_before_the_check_too() {
        let cli = Cli::try_parse_from([
            "podtrace-agent",
            "health",
            "--format",
            "json",
            "live",
            "--endpoint",
            "localhost:50100",
        ])
        .unwrap();
        let Command::Health { format, check: HealthCommand::Live { endpoint, .. } } = cli.command
        else {
            panic!("not health live: {:?}", cli.command)
        };
        assert_eq!((format, endpoint.as_str()), (Format::Json, "localhost:50100"));
    }

    /// The kernel-metrics reference's `--prometheus-port` (`PROMETHEUS_PORT`) sets the port of
    /// /metrics; the address stays that of `--metrics-addr`.
    #[test]
    fn prometheus_port_is_the_port_of_the_metrics_address() {
        let parse = |extra: &[&str]| {
            let args = ["podtrace-agent", "standalone", "--config", "x.yaml"];
            let cli = Cli::try_parse_from(args.iter().chain(extra)).unwrap();
            let Command::Standalone { agent, .. } = cli.command else { unreachable!() };
            agent.metrics_listen()
        };
        let addr = parse(&["--metrics-addr", "10.0.0.7:3000", "--prometheus-port", "8080"]);
        assert_eq!(addr, "10.0.0.7:8080".parse().unwrap());
        if std::env::var_os("PROMETHEUS_PORT").is_none() {
            assert_eq!(parse(&["--metrics-addr", "10.0.0.7:3000"]).port(), 3000);
        }
    }
}
