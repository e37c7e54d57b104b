//! `podtrace-agent`: parses the command line, sets up logging and hands over to the library.

use clap::Parser;
use podtrace_agent::{
    app::{self, Mode},
    cli::{Cli, Command, Format, HealthCommand},
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
            let handle = log.init()?;
            app::run(
                Mode::Cluster {
                    kube_auth: metrics_kube_auth,
                    max_tracked_cgroups,
                    kubelet_cgroup_root,
                },
                agent,
                exporters,
                Box::new(handle),
                &log.log_level,
            )
            .await?;
        }
        Command::Standalone { config, agent, exporters } => {
            let handle = log.init()?;
            app::run(Mode::Standalone(config), agent, exporters, Box::new(handle), &log.log_level)
                .await?;
        }
        Command::Health { check: HealthCommand::Live { endpoint, format, timeout } } => {
            let report = health::level(&health::check(&endpoint, timeout).await);
            match format {
                Format::Text => print!("{}", health::render(&report)),
                Format::Json => println!("{}", serde_json::to_string(&report)?),
            }
            std::process::exit(report.level.exit_code());
        }
        Command::Health { check: HealthCommand::Config { file } } => {
            match standalone::load(&file) {
                Ok(c) => {
                    println!("{}: valid, {} PodTrace(s)", file.display(), c.traces.len());
                    for t in &c.traces {
                        println!(
                            "  {}/{}: profile {}, cgroups {:?}, process names {:?}, pids {:?}",
                            t.namespace, t.name, t.profile_name, t.cgroups, t.process_names, t.pids
                        );
                    }
                }
                Err(e) => {
                    eprintln!("invalid: {e}");
                    std::process::exit(1);
                }
            }
        }
        Command::Top { endpoint, token_file, ca_file, every, once } => {
            let token = token_file.as_deref().map(podtrace_agent::cli::read_token).transpose()?;
            top::run(&endpoint, token.as_deref(), ca_file.as_deref(), every, once).await?;
        }
    }
    Ok(())
}
