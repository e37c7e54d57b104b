//! `podtrace-agent`: parses the command line, sets up logging and hands over to the library.

use clap::Parser;
use podtrace_agent::{
    app::{self, Mode},
    cli::{Cli, Command, Format, HealthCommand, read_token},
    health, standalone, top,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { log, command } = Cli::parse();
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
            app::run(mode, agent, exporters, handle, &log.log_level).await?;
        }
        Command::Standalone { config, agent, exporters } => {
            let handle = Box::new(log.init()?);
            app::run(Mode::Standalone(config), agent, exporters, handle, &log.log_level).await?;
        }
        Command::Health { check: HealthCommand::Live { endpoint, format, timeout } } => {
            let json = format == Format::Json;
            std::process::exit(health::live(&endpoint, json, timeout).await);
        }
        Command::Health { check: HealthCommand::Config { file } } => {
            std::process::exit(standalone::check(&file));
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
