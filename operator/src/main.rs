//! `podtrace-operator`: reconciles PodTrace and MonitoringProfile into one NodeTrace per node.

use clap::Parser;
use podtrace_operator::cli::OperatorArgs;
use podtrace_runtime::logging::LogArgs;

// The allocator is jemalloc, from podtrace-runtime's alloc.rs (feature `jemalloc`, on by
// default).

/// podtrace operator: turns PodTraces and MonitoringProfiles into per-node agent configuration
/// (NodeTrace objects) and rolls the agents' results up into each PodTrace's status.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    operator: OperatorArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { log, operator } = Cli::parse();
    log.init()?;
    operator.run().await
}
