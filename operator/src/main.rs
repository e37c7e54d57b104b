//! `podtrace-operator`: reconciles PodTrace and MonitoringProfile into one NodeTrace per node.

use clap::Parser;
use podtrace_operator::cli::OperatorArgs;
use podtrace_runtime::logging::LogArgs;

/// jemalloc returns freed memory to the system (after its decay time), where glibc's malloc kept
/// the peaks of list pages and NodeTrace bodies spread over its per-thread arenas.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
