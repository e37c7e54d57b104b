//! `podtrace-agent`: parses the command line, sets up logging and hands over to the library.

use clap::Parser;
use podtrace_agent::{
    app::{self, Mode},
    cli::{Cli, Command, Format, HealthCommand, read_token},
    collectors::ebpf::tracefs,
    health, standalone, top,
};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Before the runtime starts its threads: only a single-threaded process can move into a
    // mount namespace of its own, where tracefs is mounted if the node has not.
    let tracefs = match &cli.command {
        Command::Run { agent, .. } | Command::Standalone { agent, .. } => {
            tracefs::prepare(agent.ebpf.enabled && agent.ebpf.mount_tracefs)
        }
        _ => tracefs::Tracefs::Off,
    };
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(cli, tracefs))
}

async fn run(cli: Cli, tracefs: tracefs::Tracefs) -> anyhow::Result<()> {
    let Cli { log, command } = cli;
    match command {
        Command::Run {
            agent,
            exporters,
            metrics_kube_auth,
            max_tracked_cgroups,
            kubelet_cgroup_root,
        } => {
            let mode = Mode::Cluster {
                kube_auth: metrics_kube_auth,
                max_tracked_cgroups,
                kubelet_cgroup_root,
            };
            let handle = Box::new(log.init()?);
            tracefs.log();
            app::run(mode, agent, exporters, handle, &log.log_level).await?;
        }
        Command::Standalone { config, allow_empty_config, config_settle, agent, exporters } => {
            let handle = Box::new(log.init()?);
            tracefs.log();
            let mode = Mode::Standalone {
                path: config,
                allow_empty: allow_empty_config,
                settle: config_settle,
            };
            app::run(mode, agent, exporters, handle, &log.log_level).await?;
        }
        Command::Health { format, check: HealthCommand::Live { endpoint, timeout } } => {
            let json = format == Format::Json;
            std::process::exit(health::live(&endpoint, json, timeout).await);
        }
        Command::Health { format, check: HealthCommand::Config { file, allow_empty } } => {
            std::process::exit(standalone::check(&file, allow_empty, format == Format::Json));
        }
        Command::Top { endpoint, token_file, ca_file, every, once } => {
            let endpoint = endpoint.unwrap_or_else(|| {
                let addr = std::env::var("PODTRACE_METRICS_ADDR").ok();
                let tls = std::env::var_os("PODTRACE_METRICS_TLS_CERT_FILE").is_some();
                podtrace_agent::cli::default_top_endpoint(addr.as_deref(), tls)
            });
            let token = token_file.as_deref().map(read_token).transpose()?;
            top::run(&endpoint, token.as_deref(), ca_file.as_deref(), every, once).await?;
        }
    }
    Ok(())
}
