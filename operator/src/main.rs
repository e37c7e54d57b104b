//! `podtrace-operator`: reconciles PodTrace and MonitoringProfile into one NodeTrace per node.

use clap::Parser;
use podtrace_runtime::logging::LogArgs;

/// podtrace operator: turns PodTraces and MonitoringProfiles into per-node agent configuration
/// (NodeTrace objects) and rolls the agents' results up into each PodTrace's status.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
}

fn main() -> anyhow::Result<()> {
    let Cli { log } = Cli::parse();
    log.init()?;
    anyhow::bail!("the reconcilers are not built yet (issue #3); only --help and --version work")
}
